"""The fixers for Keras 2 nested models, BatchNormalization axes and mixed-precision
policies, on configs shaped as tf_keras writes them (the end-to-end tests on real tf_keras
files are in test_keras2_files.py), and the loader's use of fixers keyed on the config."""

import copy

import pytest

from normswap.saving import legacy


def fix(name):
    return [f for f in legacy.registered_fixes() if f.name == name]


def ref(name, node, tensor=0):
    return [name, node, tensor, {}]


def layer(class_name, name, inbound=(), **config):
    return {"class_name": class_name, "name": name, "config": {"name": name, **config},
            "inbound_nodes": [[list(r) for r in node] for node in inbound]}


def model(class_name, name, layers, inbound=(), outputs=None, inputs=None):
    entry = layer(class_name, name, inbound, layers=layers)
    if class_name != "Sequential":
        entry["config"]["input_layers"] = inputs or [["input", 0, 0]]
        entry["config"]["output_layers"] = outputs or [[layers[-1]["name"], 0, 0]]
    return entry


def inner_sequential(name="inner", inbound=()):
    return model("Sequential", name, [layer("InputLayer", f"{name}_in"),
                                      layer("Dense", f"{name}_dense", units=2)], inbound)


def outer(layers, outputs):
    return {"class_name": "Functional",
            "config": {"name": "outer", "layers": layers, "input_layers": [["input", 0, 0]],
                       "output_layers": outputs}}


def entries(config):
    return {entry["name"]: entry for entry in config["config"]["layers"]}


# --- nested-node-index ------------------------------------------------------------------------


def test_nested_calls_numbered_from_one_are_renumbered_from_zero():
    config = outer([
        layer("InputLayer", "input"),
        inner_sequential(inbound=[[ref("input", 0)]]),
        layer("Dense", "head", inbound=[[ref("inner", 1)]], units=1),
    ], outputs=[["head", 0, 0]])
    fixed, changes = legacy.apply_fixes(config, fix("nested-node-index"))
    assert entries(fixed)["head"]["inbound_nodes"] == [[ref("inner", 0)]]
    assert changes == [("nested-node-index", "outer")]
    assert entries(config)["head"]["inbound_nodes"] == [[ref("inner", 1)]]  # a copy


def test_a_shared_nested_model_keeps_its_calls_apart():
    config = outer([
        layer("InputLayer", "input"),
        inner_sequential(inbound=[[ref("input", 0)], [ref("input", 0)]]),
        layer("Concatenate", "merge", inbound=[[ref("inner", 1), ref("inner", 2)]]),
    ], outputs=[["merge", 0, 0]])
    fixed, _ = legacy.apply_fixes(config, fix("nested-node-index"))
    assert entries(fixed)["merge"]["inbound_nodes"] == [[ref("inner", 0), ref("inner", 1)]]


@pytest.mark.parametrize("class_name, expected", [("Sequential", 0), ("Functional", 1)])
def test_model_outputs_follow_keras3_numbering(class_name, expected):
    # Keras 3 reads output_layers from 1 for a Functional model, from 0 for a Sequential.
    nested = model(class_name, "head", [layer("InputLayer", "head_in"),
                                        layer("Dense", "head_dense", units=1)],
                   inbound=[[ref("input", 0)]], inputs=[["head_in", 0, 0]])
    config = outer([layer("InputLayer", "input"), nested], outputs=[["head", 1, 0]])
    fixed, _ = legacy.apply_fixes(config, fix("nested-node-index"))
    assert fixed["config"]["output_layers"] == [["head", expected, 0]]


def test_nested_calls_already_numbered_from_zero_are_left_alone():
    # Keras 2 numbered from 0 a Sequential built without an input: every call is node i.
    config = outer([
        layer("InputLayer", "input"),
        model("Sequential", "inner", [layer("Dense", "d", units=2)],
              inbound=[[ref("input", 0)], [ref("input", 0)]]),
        layer("Concatenate", "merge", inbound=[[ref("inner", 0), ref("inner", 1)]]),
    ], outputs=[["merge", 0, 0]])
    fixed, changes = legacy.apply_fixes(config, fix("nested-node-index"))
    assert fixed == config and changes == []


def test_keras3_nodes_are_left_alone():
    keras3_node = {"args": [{"class_name": "__keras_tensor__",
                             "config": {"keras_history": ["inner", 1, 0]}}], "kwargs": {}}
    head = layer("Dense", "head", units=1)
    head["inbound_nodes"] = [keras3_node]
    config = outer([layer("InputLayer", "input"), inner_sequential(inbound=[[ref("input", 0)]]),
                    head], outputs=[["head", 0, 0]])
    fixed, changes = legacy.apply_fixes(config, fix("nested-node-index"))
    assert fixed == config and changes == []


# --- nested-single-io -------------------------------------------------------------------------


def test_nested_models_get_single_inputs_and_outputs_the_outer_one_keeps_its_lists():
    backbone = model("Functional", "backbone", [layer("InputLayer", "bb_in"),
                                                layer("Conv2D", "bb_conv", filters=2)],
                     inputs=[["bb_in", 0, 0]], outputs=[["bb_conv", 0, 0]])
    two_outputs = model("Functional", "two", [layer("InputLayer", "t_in")],
                        inputs=[["t_in", 0, 0]], outputs=[["t_in", 0, 0], ["t_in", 0, 0]])
    config = {"class_name": "Sequential",
              "config": {"name": "outer", "layers": [backbone, two_outputs]}}
    config["config"]["output_layers"] = [["x", 0, 0]]  # not a nested model's: kept
    fixed, changes = legacy.apply_fixes(config, fix("nested-single-io"))
    nested = entries(fixed)
    assert nested["backbone"]["config"]["input_layers"] == ["bb_in", 0, 0]
    assert nested["backbone"]["config"]["output_layers"] == ["bb_conv", 0, 0]
    assert nested["two"]["config"]["output_layers"] == [["t_in", 0, 0], ["t_in", 0, 0]]
    assert nested["two"]["config"]["input_layers"] == ["t_in", 0, 0]
    assert fixed["config"]["output_layers"] == [["x", 0, 0]]
    assert changes == [("nested-single-io", "outer")]


def test_nested_single_io_is_keyed_on_the_config():
    (single,) = fix("nested-single-io")
    assert single.error is None
    assert single in legacy.config_fixes()
    assert single not in legacy.fixes_for("any error at all")


# --- bn-axis-list and dtype-policy ------------------------------------------------------------


@pytest.mark.parametrize("class_name, axis, expected", [
    ("BatchNormalization", [3], 3),
    ("BatchNormalization", [1], 1),
    ("BatchNormalization", [1, 2], [1, 2]),  # not one axis: left for Keras to refuse
    ("LayerNormalization", [3], [3]),  # Keras 3 takes a list there
])
def test_batchnorm_axis(class_name, axis, expected):
    obj = {"module": "keras.layers", "class_name": class_name,
           "config": {"name": "bn", "axis": axis}}
    fixed, _ = legacy.apply_fixes(obj, fix("bn-axis-list"))
    assert fixed["config"]["axis"] == expected


def test_mixed_precision_policy():
    policy = {"module": "keras.mixed_precision", "class_name": "Policy",
              "config": {"name": "mixed_float16"}, "registered_name": None}
    other = {"module": "my_package", "class_name": "Policy", "config": {"name": "x"}}
    config = outer([{"class_name": "Conv2D", "config": {"name": "conv", "dtype": policy}},
                    {"class_name": "Dense", "config": {"name": "dense", "dtype": other}}],
                   outputs=[["dense", 0, 0]])
    fixed, changes = legacy.apply_fixes(config, fix("dtype-policy"))
    conv, dense = fixed["config"]["layers"]
    assert conv["config"]["dtype"] == {"module": "keras", "class_name": "DTypePolicy",
                                       "config": {"name": "mixed_float16"},
                                       "registered_name": None}
    assert dense["config"]["dtype"] == other  # somebody else's class
    assert changes == [("dtype-policy", "conv")]


def test_the_documented_errors_select_their_fixes():
    for fix_ in legacy.registered_fixes():
        if fix_.error is not None:
            documented = fix_.fix.__doc__.split("Fixes: ")[1].splitlines()[0]
            assert [f.name for f in legacy.fixes_for(documented)] == [fix_.name]


def test_fixes_work_on_a_copy():
    config = outer([layer("InputLayer", "input"), inner_sequential(inbound=[[ref("input", 0)]]),
                    layer("Dense", "head", inbound=[[ref("inner", 1)]], units=1)],
                   outputs=[["head", 0, 0]])
    untouched = copy.deepcopy(config)
    legacy.apply_fixes(config)
    assert config == untouched
