"""normswap.saving.legacy: fixers for Keras 2 configs that Keras 3 rejects, and the loader
using them."""

import copy
import hashlib
import json
import logging
import shutil

import h5py
import keras
import numpy as np
import pytest

from normswap import saving as nsio
from normswap.errors import UsageError
from normswap.saving import legacy

MOBILENET = "mlperftiny_vww01_mobilenetv1_025_96.h5"


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def h5_weights_by_layer(path):
    """{layer name: [arrays in the file's weight_names order]} read straight from the file."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        out = {}
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = group[layer].attrs.get("weight_names", [])
            arrays = [group[layer][n.decode() if isinstance(n, bytes) else n][()] for n in names]
            if arrays:
                out[layer] = arrays
    return out


# --- the real MobileNetV1 that Keras 3 rejects ----------------------------------------------


@pytest.fixture(scope="module")
def mobilenet(real_model):
    return real_model(MOBILENET)


def test_plain_keras_rejects_the_mobilenet_file(realmodels):
    # The reason the fixer exists; if a future Keras accepts the file, the fixer is moot.
    with pytest.raises(Exception, match=r"DepthwiseConv2D: \{'groups': 1\}"):
        keras.models.load_model(realmodels / MOBILENET, compile=False)


def test_mobilenet_loads_through_the_groups_fixer(mobilenet, realmodels):
    model = mobilenet
    with h5py.File(realmodels / MOBILENET, "r") as f:
        config = json.loads(f.attrs["model_config"])
    groups = [fix for fix in legacy.registered_fixes() if fix.name == "conv-groups"]
    _, changes = legacy.apply_fixes(config, groups)
    assert len(changes) == 13 and {fix for fix, _ in changes} == {"conv-groups"}
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == 13
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 27
    # Keras 2 configs list their inputs/outputs, so Keras 3 gives lists of one here.
    assert [tuple(t.shape) for t in model.inputs] == [(None, 96, 96, 3)]
    assert [tuple(t.shape) for t in model.outputs] == [(None, 2)]


def test_mobilenet_weights_are_exactly_the_files(mobilenet, realmodels):
    model = mobilenet
    stored = h5_weights_by_layer(realmodels / MOBILENET)
    assert sum(a.size for arrays in stored.values() for a in arrays) == model.count_params()
    with_weights = {layer.name for layer in model.layers if layer.weights}
    assert with_weights == set(stored)
    for name, arrays in stored.items():
        weights = model.get_layer(name).weights
        assert len(weights) == len(arrays), name
        for variable, array in zip(weights, arrays):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), array,
                                          err_msg=f"{name}/{variable.name}")


def test_mobilenet_predicts_probabilities(mobilenet):
    model = mobilenet
    images = np.random.default_rng(0).uniform(0, 1, size=(4, 96, 96, 3)).astype("float32")
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (4, 2)
    assert np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.ptp(probabilities[:, 0]) > 0  # depends on the input


def test_mobilenet_file_is_untouched(mobilenet, realmodels):
    sums = dict(line.split()[::-1] for line in (realmodels / "SHA256SUMS").read_text().splitlines()
                if line.strip())
    assert sha256(realmodels / MOBILENET) == sums[MOBILENET]


# --- the fixers on a synthetic config --------------------------------------------------------


def layer(class_name, name, **config):
    return {"class_name": class_name, "name": name, "config": {"name": name, **config},
            "inbound_nodes": []}


def synthetic_config():
    inner = {"class_name": "Functional", "config": {"name": "inner", "layers": [
        layer("SeparableConv2D", "inner_sep", filters=4, groups=1),
        layer("Conv2DTranspose", "inner_up", filters=4, groups=1),
    ]}}
    inner["name"] = "inner"
    return {"class_name": "Functional", "config": {"name": "outer", "layers": [
        layer("InputLayer", "input", batch_input_shape=[None, 8, 8, 3]),
        layer("DepthwiseConv2D", "dw", kernel_size=[3, 3], groups=1),
        layer("DepthwiseConv2D", "dw_grouped", kernel_size=[3, 3], groups=2),
        layer("Conv2D", "conv", filters=8, groups=1),
        inner,
        layer("Bidirectional", "bi", merge_mode="concat",
              layer={"class_name": "LSTM", "config": {"name": "lstm", "units": 3,
                                                       "time_major": False}}),
        layer("GRU", "gru_time_major", units=3, time_major=True),
    ]}}


def by_name(config):
    return {obj["config"]["name"]: obj["config"] for obj in legacy._serialized_objects(config)}


def test_apply_fixes_drops_only_neutral_legacy_arguments():
    original = synthetic_config()
    untouched = copy.deepcopy(original)
    fixed, changes = legacy.apply_fixes(original)
    assert original == untouched  # works on a copy
    layers = by_name(fixed)
    for name in ("dw", "inner_sep", "inner_up"):
        assert "groups" not in layers[name], name
    assert layers["dw_grouped"]["groups"] == 2  # not neutral: left for Keras to reject
    assert layers["conv"]["groups"] == 1  # Conv2D takes groups in Keras 3
    assert "time_major" not in layers["lstm"]
    assert layers["gru_time_major"]["time_major"] is True
    assert sorted(changes) == [("conv-groups", "dw"), ("conv-groups", "inner_sep"),
                               ("conv-groups", "inner_up"), ("rnn-time-major", "lstm")]
    # Everything else is as it was.
    assert layers["dw"] == {k: v for k, v in by_name(untouched)["dw"].items() if k != "groups"}


def test_apply_only_the_given_fixes():
    time_major = [f for f in legacy.registered_fixes() if f.name == "rnn-time-major"]
    fixed, changes = legacy.apply_fixes(synthetic_config(), time_major)
    assert changes == [("rnn-time-major", "lstm")]
    assert by_name(fixed)["dw"]["groups"] == 1


@pytest.mark.parametrize("message, expected", [
    ("Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}",
     ["conv-groups"]),
    ("Error when deserializing class 'SeparableConv2D' ... Exception encountered: Unrecognized "
     "keyword arguments passed to SeparableConv2D: {'groups': 1}", ["conv-groups"]),
    ("Unrecognized keyword arguments passed to GRU: {'time_major': False}", ["rnn-time-major"]),
    ("Unrecognized keyword arguments passed to LSTM: {'foo': 1, 'time_major': False}",
     ["rnn-time-major"]),
    ("Unknown layer: 'MyLayer'", []),
    ("Unrecognized keyword arguments passed to Dense: {'foo': 1}", []),
])
def test_fixes_for_matches_the_errors_they_cure(message, expected):
    assert [f.name for f in legacy.fixes_for(message)] == expected


def test_every_fix_documents_the_error_it_fixes():
    fixes = legacy.registered_fixes()
    assert {f.name for f in fixes} >= {"conv-groups", "rnn-time-major"}
    for fix in fixes:
        assert fix.doc, fix.name
        assert "Fixes: " in fix.fix.__doc__, fix.name
        documented_error = fix.fix.__doc__.split("Fixes: ")[1].splitlines()[0]
        if fix.error is None:  # keyed on the config: tried on any error
            assert fix in legacy.config_fixes() and fix not in legacy.fixes_for(documented_error)
        else:
            assert fix in legacy.fixes_for(documented_error), fix.name


def test_a_second_fix_with_the_same_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        legacy.legacy_fix("conv-groups", "x")(lambda obj: False)


# --- end to end: a Keras 3 h5 file made to look like a Keras 2 one ---------------------------


@pytest.fixture(scope="module")
def legacy_like_h5(tmp_path_factory):
    """A model with depthwise/separable convs and a wrapped LSTM, saved as .h5, whose config
    then gets the Keras 2 extras (groups: 1, time_major: False) Keras 3 rejects."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    x = keras.layers.Reshape((36, 4))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3, name="lstm"), name="bi")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.array([0.1, -0.2, 0.3], "float32"))
    bn.moving_variance.assign(np.array([0.5, 1.5, 2.0], "float32"))

    path = tmp_path_factory.mktemp("legacy") / "legacy_like.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for obj in legacy._serialized_objects(config):
            if obj["class_name"] in ("DepthwiseConv2D", "SeparableConv2D"):
                obj["config"]["groups"] = 1
            if obj["class_name"] == "LSTM":
                obj["config"]["time_major"] = False
        f.attrs["model_config"] = json.dumps(config)
    return model, path


def test_legacy_like_file_needs_both_fixes_and_loads_exactly(legacy_like_h5, caplog):
    original, path = legacy_like_h5
    with pytest.raises(Exception, match="Unrecognized keyword arguments"):
        keras.models.load_model(path, compile=False)
    before = sha256(path)
    with caplog.at_level(logging.INFO, logger="normswap"):
        loaded = nsio.load_model(path)
    # Keras reports one error at a time: the loader fixed, retried, and fixed again.
    assert any("conv-groups, rnn-time-major" in r.getMessage() for r in caplog.records)
    assert sha256(path) == before
    assert len(loaded.weights) == len(original.weights)
    for a, b in zip(original.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), original.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_non_neutral_legacy_argument_is_reported_not_dropped(legacy_like_h5, tmp_path):
    _, source = legacy_like_h5
    path = tmp_path / "grouped.h5"
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for obj in legacy._serialized_objects(config):
            if obj["class_name"] == "DepthwiseConv2D":
                obj["config"]["groups"] = 3
        f.attrs["model_config"] = json.dumps(config)
    before = sha256(path)
    with pytest.raises(UsageError, match=r"could not load .*grouped\.h5.*'groups': 3"):
        nsio.load_model(path)
    assert sha256(path) == before
