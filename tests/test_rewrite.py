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


def test_clones_start_from_the_original_values_without_running_initializers(monkeypatch):
    """The rebuild creates each clone's variables from copies of the original's values: no
    random initializer runs, every weight is bit-identical, and none shares state with the
    original (an update to either leaves the other as it was)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 3, bias_initializer="random_normal", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(2, bias_initializer="random_normal", name="head")(
        keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    draws = []
    for cls in (keras.initializers.GlorotUniform, keras.initializers.RandomNormal):
        real = cls.__call__
        monkeypatch.setattr(cls, "__call__", lambda self, *a, _real=real, **k:
                            draws.append(type(self).__name__) or _real(self, *a, **k))
    new, _ = rebuild(model, {})
    assert draws == []
    before = [w.copy() for w in model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, new.get_weights()))
    kernel = new.get_layer("conv").kernel
    kernel.assign(kernel + 1.0)
    assert np.array_equal(model.get_layer("conv").kernel.numpy(), before[0])
    original_bias = model.get_layer("head").bias
    original_bias.assign(original_bias * 0.0)
    assert np.array_equal(new.get_layer("head").bias.numpy(), before[-1])


def test_a_layer_that_cannot_be_built_from_values_is_cloned_the_usual_way():
    """A layer that makes a variable outside `build` still gets every weight copied."""

    class MadeInInit(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.offset = self.add_weight(shape=(3,), initializer="zeros", name="offset")

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(3,), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale + self.offset

    inputs = keras.Input((3,))
    layer = MadeInInit(name="made")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.array([1.0, -2.0, 3.0]), np.array([0.5, 1.5, -1.0])])
    new, _ = rebuild(model, {})
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(new(x), model(x))
    assert new.get_layer("made") is not layer
