"""The rebuild: a new model replaying the original's graph with some layers replaced."""

import keras
import numpy as np

from normswap.replay import IDENTITY, model_nodes
from normswap.rewrite import rebuild
from normswap.verify import outputs_of, probe_batch
from tests.models import nested_model, raw_ops_model, shared_bn_model


def raw_operations(model):
    return [n.operation for n in model_nodes(model)
            if not isinstance(n.operation, keras.layers.Layer)]


def test_raw_operations_are_replayed_not_cloned_as_layers():
    model = raw_ops_model()
    new, layer_map = rebuild(model, {})
    batch = probe_batch(model)
    np.testing.assert_array_equal(outputs_of(model, batch)[0], outputs_of(new, batch)[0])
    # The same stateless operations are called again: nothing was cloned or given weights.
    assert {id(op) for op in raw_operations(new)} == {id(op) for op in raw_operations(model)}
    assert all(id(op) not in layer_map for op in raw_operations(model))
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert all(layer_map[id(layer)] is not layer for layer in layers)


def test_identity_drops_a_call_in_functional_and_sequential_models():
    model = raw_ops_model()
    relu = model.get_layer("relu")
    new, layer_map = rebuild(model, {id(relu): IDENTITY})
    assert "relu" not in {layer.name for layer in new.layers} and layer_map[id(relu)] is IDENTITY
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"),
                                   keras.layers.ReLU(name="r"), keras.layers.Dense(2, name="b")])
    new, _ = rebuild(sequential, {id(sequential.get_layer("r")): IDENTITY})
    assert isinstance(new, keras.Sequential)
    assert [layer.name for layer in new.layers] == ["a", "b"]


def test_shared_layers_and_nested_models_stay_shared():
    model = shared_bn_model()
    new, layer_map = rebuild(model, {})
    clone = layer_map[id(model.get_layer("shared_bn"))]
    assert len(clone._inbound_nodes) == 2
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4)(inner_in), name="inner")
    inputs = keras.Input((4,))
    twice = keras.Model(inputs, inner(inner(inputs)))
    new, layer_map = rebuild(twice, {})
    assert len([layer for layer in new.layers if layer.name == "inner"]) == 1
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(new(x), twice(x), rtol=1e-6)


def test_replacements_get_only_the_call_arguments_they_take_and_originals_are_untouched():
    inputs = keras.Input((4, 4, 2))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(inputs, training=False) * 2.0)
    before = [w.copy() for w in model.get_weights()]
    norm = keras.layers.GroupNormalization(groups=1, name="bn")
    new, layer_map = rebuild(model, {id(bn): norm})
    assert new.get_layer("bn") is norm and layer_map[id(bn)] is norm
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    nested = nested_model()
    new, _ = rebuild(nested, {})
    assert isinstance(new, keras.Sequential) and new.layers[0] is not nested.layers[0]


def test_a_live_model_with_a_lambda_layer_rebuilds():
    """Keras's safe mode guards files; a Lambda already in memory is cloned as it is."""
    inputs = keras.Input((3,))
    x = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    new, _ = rebuild(model, {})
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(new(x), model(x), rtol=1e-6)
