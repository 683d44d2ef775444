"""FilterResponseNormalization against an independent NumPy version of the paper's formula."""

import keras
import numpy as np
import pytest

from normswap.layers import FRN, FilterResponseNormalization
from normswap.layers.filter_response_normalization import inv_instance_rms
from tests.layers._common import (
    assert_config_round_trip,
    assert_finite_gradients,
    assert_mixed_precision_close,
    assert_save_load_round_trip,
    named_weights,
    randomize_weights,
    run_jit_training_steps,
    small_conv_model,
    to_numpy,
)

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


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("use_tlu", [True, False])
def test_matches_numpy_reference_in_training_and_inference(shape, axis, use_tlu):
    x = _random_input(shape)
    layer = FilterResponseNormalization(axis=axis, use_tlu=use_tlu)
    layer.build(shape)
    randomize_weights(layer)  # γ of either sign, β and τ non-zero
    w = named_weights(layer)
    expected = frn_reference(x, axis, w["gamma"], w["beta"], w.get("tau"), 1e-6)
    for training in (True, False):
        got = to_numpy(layer(x, training=training))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_tlu_is_a_relu_at_initialisation_and_no_centring():
    x = _random_input((2, 4, 4, 3), scale=1.0)
    out = to_numpy(FRN()(x))
    assert (out >= 0).all() and (out == 0).any()
    # inputs with a common offset are not centred: a constant map comes out as γ·sign = 1
    const = np.full((1, 3, 3, 2), 5.0, "float32")
    np.testing.assert_allclose(to_numpy(FRN(use_tlu=False)(const)), 1.0, rtol=1e-5)


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
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_rank2_is_defined_and_approaches_sign():
    # Documented behaviour: no spatial axis, so ν² = x² and x̂ = x/√(x²+ε) ≈ sign(x).
    x = np.array([[3.0, -0.5, 0.02, -40.0]], "float32")
    out = to_numpy(FRN(use_tlu=False)(x))
    np.testing.assert_allclose(out, x / np.sqrt(x**2 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(out, np.sign(x), atol=2e-3)


def test_inv_instance_rms_matches_numpy():
    x = _random_input((2, 3, 4, 5))
    got = to_numpy(inv_instance_rms(x, axis=-1, epsilon=1e-3))
    expected = 1.0 / np.sqrt((x.astype(np.float64) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-3)
    assert got.shape == (2, 1, 1, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    got_cf = to_numpy(inv_instance_rms(np.moveaxis(x, -1, 1), axis=1, epsilon=1e-3))
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
    assert np.isfinite(to_numpy(out)).all()


@pytest.mark.parametrize("shape,axis", [((2, 5, 5, 3), -1), ((2, 3, 5, 5), 1), ((3, 4), -1)])
def test_mixed_precision_statistics_in_float32(shape, axis):
    # |x| up to ~1000: x² overflows float16 (max 65504), so float16 statistics would fail.
    x = _random_input(shape, scale=300.0)
    ref = FRN(axis=axis, learned_epsilon=True)
    mixed = FRN(axis=axis, learned_epsilon=True, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    randomize_weights(ref)
    assert_mixed_precision_close(ref, mixed, x)


def test_config_round_trip():
    layer = FRN(axis=1, epsilon=1e-5, learned_epsilon=True, use_tlu=False,
                gamma_initializer="random_normal", gamma_regularizer="l2",
                beta_constraint="non_neg", name="frn_cfg")
    clone = assert_config_round_trip(
        layer, _random_input((2, 3, 4, 4)),
        dict(axis=1, epsilon=1e-5, learned_epsilon=True, use_tlu=False))
    assert type(clone) is FilterResponseNormalization
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
            randomize_weights(layer, seed=len(layer.name))
    loaded = assert_save_load_round_trip(model, _random_input((2, 4, 4, 3)),
                                         tmp_path / f"frn{suffix}")
    assert isinstance(loaded.get_layer("frn_a"), FilterResponseNormalization)
    assert loaded.get_layer("frn_a").learned_epsilon
    assert loaded.get_layer("frn_b").tau is None


@pytest.mark.parametrize("shape,axis", [((2, 4, 4, 3), -1), ((2, 3, 4, 4), 1), ((3, 5), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    layer = FRN(axis=axis, learned_epsilon=True)
    layer.build(shape)
    assert_finite_gradients(layer, _random_input(shape, scale=1.0), count=4, training=True)


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = small_conv_model(FRN(learned_epsilon=True, name="frn"), (6, 6, 2), filters=4)
    after = run_jit_training_steps(model, rng.normal(size=(8, 6, 6, 2)).astype("float32"),
                                   rng.normal(size=(8, 1)).astype("float32"), layer="frn")
    assert sorted(after) == ["beta", "epsilon_l", "gamma", "tau"]


def test_inv_instance_rms_default_epsilon_is_the_papers():
    x = np.full((1, 2, 2, 1), 1e-3, "float32")  # ν² = 1e-6: ε = 1e-6 doubles it
    np.testing.assert_allclose(to_numpy(inv_instance_rms(x)), 1.0 / np.sqrt(2e-6), rtol=1e-4)


@pytest.mark.parametrize("axis,built,called", [(-1, (2, 3, 3, 4), (2, 3, 3, 5)),
                                               (1, (2, 4, 3, 3), (2, 5, 3, 3))])
def test_a_built_layer_refuses_another_channel_count(axis, built, called):
    layer = FRN(axis=axis)
    layer.build(built)
    with pytest.raises(ValueError, match="axis"):
        layer(np.zeros(called, "float32"))
