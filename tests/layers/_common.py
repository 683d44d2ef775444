"""Checks every bundled layer must pass, written once for all the layer test files.

Plain functions, each asserting one property of a layer (config round trip, save/load
round trip, finite gradients, jit-compiled training, mixed precision, ...). They hold no
math of any normalization: each test file keeps its own, independent NumPy reference of
its layer's formula. Each helper returns what a test may want to check further.
"""

import contextlib

import keras
import numpy as np
import pytest
from keras import ops


def to_numpy(value, dtype=None):
    """A backend tensor or variable as a NumPy array (a copy)."""
    return np.array(ops.convert_to_numpy(value), dtype)


def named_weights(layer):
    """{weight name: value} of a layer's weights, as NumPy copies."""
    return {w.name: to_numpy(w) for w in layer.weights}


def randomize_weights(layer, seed=1, mean=0.0):
    """Give every weight of a built layer values drawn from N(mean, 1), float32."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(mean, 1.0, size=w.shape).astype("float32")
                       for w in layer.get_weights()])


def assert_config_round_trip(layer, x, expected=None, **call_kwargs):
    """`from_config(get_config())` gives the same config and, with the same weights, the
    same output on `x` (called with `call_kwargs`). `expected` lists config entries that
    must hold given values. Returns the clone (built, with the layer's weights)."""
    out = to_numpy(layer(x, **call_kwargs))
    config = layer.get_config()
    for key, value in (expected or {}).items():
        assert config[key] == value, key
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(clone(x, **call_kwargs)), out, rtol=1e-6)
    return clone


def assert_save_load_round_trip(model, x, path, rtol=1e-6, atol=0.0, **call_kwargs):
    """`model.save(path)` (a ".keras" or legacy ".h5" path) and `load_model(path)` give the
    same weights, bit for bit, and the same output on `x`. Returns the loaded model."""
    expected = to_numpy(model(x, **call_kwargs))
    model.save(path)
    loaded = keras.models.load_model(path)
    weights, loaded_weights = model.get_weights(), loaded.get_weights()
    assert len(loaded_weights) == len(weights)
    for a, b in zip(weights, loaded_weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(to_numpy(loaded(x, **call_kwargs)), expected,
                               rtol=rtol, atol=atol)
    return loaded


def gradients(layer, x, **call_kwargs):
    """d(Σ y·r)/dw for every trainable weight w of a built layer, y = layer(x, **call_kwargs)
    and r a fixed random array, on whichever backend is active (TensorFlow or JAX)."""
    r = np.random.default_rng(7).normal(size=layer.compute_output_shape(x.shape))
    r = r.astype("float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.sum(layer(x, **call_kwargs) * r)
        return [to_numpy(g) for g in tape.gradient(loss, layer.trainable_variables)]
    if keras.backend.backend() == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable):
            y, _ = layer.stateless_call(trainable, non_trainable, x, **call_kwargs)
            return (y * r).sum()

        grad = jax.jit(jax.grad(loss))
        return [to_numpy(g) for g in grad([v.value for v in layer.trainable_variables])]
    pytest.skip(f"gradient helper not written for backend {keras.backend.backend()}")


def assert_finite_gradients(layer, x, count=None, **call_kwargs):
    """Every trainable weight (`count` of them, when given) gets a gradient of its shape,
    finite and not all zero. Returns the gradients, in `trainable_variables` order."""
    grads = gradients(layer, x, **call_kwargs)
    assert len(grads) == len(layer.trainable_variables) >= 1
    if count is not None:
        assert len(grads) == count
    for var, grad in zip(layer.trainable_variables, grads):
        assert grad.shape == tuple(var.shape)
        assert np.isfinite(grad).all(), var.name
        assert np.abs(grad).max() > 0, var.name
    return grads


def small_conv_model(layer, input_shape, filters):
    """Input → Conv2D(filters, 3, "same") → `layer` → global average pooling → Dense(1)."""
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(filters, 3, padding="same"),
        layer,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1),
    ])


def run_jit_training_steps(model, x, y, layer=None, batch_size=4, may_stay=()):
    """Compile `model` with jit_compile=True (SGD, MSE) and fit one epoch on (x, y).

    The loss stays finite, and so does every watched weight: those of the layer named
    `layer`, or of the whole model. Every watched weight changes, except those named in
    `may_stay`. Returns {name: value after training} of the watched weights (keyed by
    weight name for one layer, by path for the whole model).
    """
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=True)
    if layer is None:
        watched = {w.path: w for w in model.weights}
    else:
        watched = {w.name: w for w in model.get_layer(layer).weights}
    assert watched
    before = {key: to_numpy(w) for key, w in watched.items()}
    history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = {key: to_numpy(w) for key, w in watched.items()}
    for key, value in after.items():
        assert np.isfinite(value).all(), key
        if key not in may_stay:
            assert not np.array_equal(value, before[key]), f"{key} did not change"
    return after


def assert_mixed_precision_close(ref, mixed, x, training_modes=(None,)):
    """A layer under dtype="mixed_float16", given the weights of its float32 twin `ref`
    (both built), keeps float32 weights, returns float16, and on the float16 input gives
    finite outputs within 1e-2 of `ref` on the same (rounded) input in float32, for each
    `training` value of `training_modes` (None: not passed)."""
    mixed.set_weights(ref.get_weights())
    assert mixed.weights and all(w.dtype == "float32" for w in mixed.weights)
    x16 = ops.cast(x, "float16")
    x32 = to_numpy(ops.cast(x16, "float32"))
    for training in training_modes:
        kwargs = {} if training is None else {"training": training}
        out = mixed(x16, **kwargs)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        out = to_numpy(ops.cast(out, "float32"))
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, to_numpy(ref(x32, **kwargs)), rtol=1e-2, atol=1e-2)


def assert_trainable_false_runs_in_inference_mode(layer, x):
    """With `trainable=False`, `training=True` gives the inference output and leaves
    every weight (moving statistics included) as it was (Keras BN's frozen convention)."""
    expected = to_numpy(layer(x, training=False))
    before = named_weights(layer)
    layer.trainable = False
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected, rtol=1e-6)
    for name, value in named_weights(layer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def assert_inference_ignores_the_batch(layer, x):
    """At inference, each sample's output is the same alone as within the batch `x`."""
    whole = to_numpy(layer(x, training=False))
    alone = np.concatenate([to_numpy(layer(x[i:i + 1], training=False))
                            for i in range(len(x))])
    np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-5)


def assert_synchronized_only_on_tensorflow(cls):
    """`synchronized=True` is accepted on TensorFlow and refused, clearly, elsewhere."""
    if keras.backend.backend() == "tensorflow":
        assert cls(synchronized=True).synchronized
    else:
        with pytest.raises(ValueError, match="TensorFlow backend"):
            cls(synchronized=True)


@contextlib.contextmanager
def registered_as(stand_in, real):
    """Within the block, `stand_in` serializes under `real`'s registered name (so a model
    holding it saves as if it held `real`); afterwards the name loads `real` again.

    For writing files in an earlier layout of a layer: a stand-in class with the earlier
    weights and config keys is saved, and loading the file then exercises `real`."""
    name = keras.saving.get_registered_name(real)
    package, class_name = name.split(">")
    keras.saving.register_keras_serializable(package=package, name=class_name)(stand_in)
    # .keras files also name each layer's stored variables after its class name.
    own_name = stand_in.__name__
    stand_in.__name__ = real.__name__
    try:
        yield
    finally:
        stand_in.__name__ = own_name
        keras.saving.get_custom_objects()[name] = real


def skip_keras_layer_norm_on_a_leading_axis(applies, axis, rank):
    """Keras's own LayerNormalization (a reference some tests compare with) normalizes only
    the last axis on the PyTorch backend: skip the comparison there for another axis."""
    last = axis in (-1, rank - 1)
    if applies and not last and keras.backend.backend() == "torch":
        pytest.skip("keras.layers.LayerNormalization supports only the last axis on torch")
