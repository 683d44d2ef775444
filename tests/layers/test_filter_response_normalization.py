"""FilterResponseNormalization against an independent NumPy version of the paper's formula."""

import keras
import numpy as np
import pytest
from keras import ops

from normswap.layers import FRN, FilterResponseNormalization
from normswap.layers.filter_response_normalization import inv_instance_rms

# (input shape, channel axis): ranks 2 to 5, channels_last and channels_first.
CASES = [
    ((4, 6), -1),
    ((4, 6), 1),
    ((3, 7, 5), -1),
    ((3, 5, 7), 1),
    ((2, 5, 4, 6), -1),
    ((2, 6, 5, 4), 1),
    ((2, 3, 4, 2, 5), -1),
    ((2, 5, 3, 4, 2), 1),
]


def _np(value, dtype=None):
    return np.asarray(ops.convert_to_numpy(value), dtype)


def frn_reference(x, axis, gamma, beta, tau, epsilon):
    """Singh & Krishnan 2019, eq. (1)-(2), in float64 NumPy."""
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    spatial = tuple(a for a in range(1, x.ndim) if a != axis)
    nu2 = (x**2).mean(axis=spatial, keepdims=True) if spatial else x**2
    shape = [1] * x.ndim
    shape[axis] = -1
    z = gamma.reshape(shape) * x / np.sqrt(nu2 + abs(epsilon)) + beta.reshape(shape)
    if tau is not None:
        z = np.maximum(z, tau.reshape(shape))
    return z


def _random_input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    # a per-channel offset so that the missing mean subtraction is visible
    return (scale * rng.normal(size=shape) + 0.5).astype("float32")


def _randomize(layer, seed=1):
    """Give every weight a random value (γ of either sign, β and τ non-zero)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([
        rng.normal(0.0, 1.0, size=w.shape).astype("float32") for w in layer.get_weights()
    ])


def _named(layer):
    return {w.name: _np(w) for w in layer.weights}


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("use_tlu", [True, False])
def test_matches_numpy_reference_in_training_and_inference(shape, axis, use_tlu):
    x = _random_input(shape)
    layer = FilterResponseNormalization(axis=axis, use_tlu=use_tlu)
    layer.build(shape)
    _randomize(layer)
    w = _named(layer)
    expected = frn_reference(x, axis, w["gamma"], w["beta"], w.get("tau"), 1e-6)
    for training in (True, False):
        got = _np(layer(x, training=training))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_tlu_is_a_relu_at_initialisation_and_no_centring():
    x = _random_input((2, 4, 4, 3), scale=1.0)
    out = _np(FRN()(x))
    assert (out >= 0).all() and (out == 0).any()
    # inputs with a common offset are not centred: a constant map comes out as γ·sign = 1
    const = np.full((1, 3, 3, 2), 5.0, "float32")
    np.testing.assert_allclose(_np(FRN(use_tlu=False)(const)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((2, 1, 1, 4), -1), ((2, 4, 3, 3), 1)])
def test_learned_epsilon_adds_its_absolute_value(shape, axis):
    x = _random_input(shape, scale=0.3)
    layer = FRN(axis=axis, learned_epsilon=True, use_tlu=False)
    layer.build(shape)
    assert [w.name for w in layer.trainable_weights] == ["gamma", "beta", "epsilon_l"]
    np.testing.assert_allclose(float(layer.epsilon_l.numpy()), 1e-4, rtol=1e-6)
    layer.epsilon_l.assign(-0.05)  # |ε_l| is used, so a negative value still adds 0.05
    expected = frn_reference(x, axis, np.ones(shape[axis]), np.zeros(shape[axis]), None,
                             1e-6 + 0.05)
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_rank2_is_defined_and_approaches_sign():
    # Documented behaviour: no spatial axis, so ν² = x² and x̂ = x/√(x²+ε) ≈ sign(x).
    x = np.array([[3.0, -0.5, 0.02, -40.0]], "float32")
    out = _np(FRN(use_tlu=False)(x))
    np.testing.assert_allclose(out, x / np.sqrt(x**2 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(out, np.sign(x), atol=2e-3)


def test_inv_instance_rms_matches_numpy():
    x = _random_input((2, 3, 4, 5))
    got = _np(inv_instance_rms(x, axis=-1, epsilon=1e-3))
    expected = 1.0 / np.sqrt((x.astype(np.float64) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-3)
    assert got.shape == (2, 1, 1, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    got_cf = _np(inv_instance_rms(np.moveaxis(x, -1, 1), axis=1, epsilon=1e-3))
    np.testing.assert_allclose(got_cf, np.moveaxis(expected, -1, 1), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(epsilon=-1.0), None),
        (dict(epsilon=0.0), None),
        (dict(axis=[1, 2]), None),
        (dict(axis="channels_last"), None),
        (dict(axis=0), (2, 3, 3, 4)),
        (dict(axis=4), (2, 3, 3, 4)),
        (dict(), (5,)),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, shape):
    with pytest.raises(ValueError, match="Received|axis|channel"):
        layer = FRN(**kwargs)
        layer(np.ones(shape, "float32"))


def test_epsilon_zero_allowed_with_learned_epsilon():
    out = FRN(epsilon=0.0, learned_epsilon=True)(np.zeros((2, 3, 3, 2), "float32"))
    assert np.isfinite(_np(out)).all()


@pytest.mark.parametrize("shape,axis", [((2, 5, 5, 3), -1), ((2, 3, 5, 5), 1), ((3, 4), -1)])
def test_mixed_precision_statistics_in_float32(shape, axis):
    # |x| up to ~1000: x² overflows float16 (max 65504), so float16 statistics would fail.
    x = _random_input(shape, scale=300.0)
    ref = FRN(axis=axis, learned_epsilon=True)
    mixed = FRN(axis=axis, learned_epsilon=True, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    _randomize(ref)
    mixed.set_weights(ref.get_weights())
    assert all(w.dtype == "float32" for w in mixed.weights)
    x16 = ops.cast(x, "float16")
    out = mixed(x16)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    out = _np(ops.cast(out, "float32"))
    expected = _np(ref(_np(ops.cast(x16, "float32"))))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, rtol=1e-2, atol=1e-2)


def test_config_round_trip():
    layer = FRN(axis=1, epsilon=1e-5, learned_epsilon=True, use_tlu=False,
                gamma_initializer="random_normal", gamma_regularizer="l2",
                beta_constraint="non_neg", name="frn_cfg")
    x = _random_input((2, 3, 4, 4))
    out = _np(layer(x))
    config = layer.get_config()
    for key, value in dict(axis=1, epsilon=1e-5, learned_epsilon=True, use_tlu=False).items():
        assert config[key] == value
    clone = FilterResponseNormalization.from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(clone(x)), out, rtol=1e-6)
    assert FRN is FilterResponseNormalization


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 3))
    h = FRN(learned_epsilon=True, name="frn_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = FRN(axis=1, use_tlu=False, name="frn_b")(h)
    model = keras.Model(inputs, h)
    for layer in model.layers:
        if isinstance(layer, FRN):
            _randomize(layer, seed=len(layer.name))
    x = _random_input((2, 4, 4, 3))
    expected = _np(model(x))
    path = tmp_path / f"frn{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("frn_a"), FilterResponseNormalization)
    assert loaded.get_layer("frn_a").learned_epsilon
    assert loaded.get_layer("frn_b").tau is None
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(_np(loaded(x)), expected, rtol=1e-6)


def _trainable_gradients(layer, x):
    """d(Σ y·r)/dw for every trainable weight, on whichever backend is active."""
    r = np.random.default_rng(7).normal(size=x.shape).astype("float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.sum(layer(x, training=True) * r)
        return [_np(g) for g in tape.gradient(loss, layer.trainable_variables)]
    if keras.backend.backend() == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable):
            y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return (y * r).sum()

        return [_np(g) for g in
                jax.grad(loss)([v.value for v in layer.trainable_variables])]
    pytest.skip(f"gradient helper not written for backend {keras.backend.backend()}")


@pytest.mark.parametrize("shape,axis", [((2, 4, 4, 3), -1), ((2, 3, 4, 4), 1), ((3, 5), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    x = _random_input(shape, scale=1.0)
    layer = FRN(axis=axis, learned_epsilon=True)
    layer.build(shape)
    grads = _trainable_gradients(layer, x)
    assert len(grads) == 4
    for var, grad in zip(layer.trainable_variables, grads):
        assert grad.shape == tuple(var.shape)
        assert np.isfinite(grad).all(), var.name
        assert np.abs(grad).max() > 0, var.name


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, padding="same"),
        FRN(learned_epsilon=True, name="frn"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=True)
    before = [np.array(w) for w in model.get_layer("frn").get_weights()]
    history = model.fit(rng.normal(size=(8, 6, 6, 2)).astype("float32"),
                        rng.normal(size=(8, 1)).astype("float32"),
                        batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = model.get_layer("frn").get_weights()
    assert all(np.isfinite(w).all() for w in after)
    for name, b, a in zip(["gamma", "beta", "tau", "epsilon_l"], before, after):
        assert not np.array_equal(a, b), f"{name} did not train"
