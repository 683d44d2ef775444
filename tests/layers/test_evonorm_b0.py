"""EvoNormB0 against an independent NumPy version of Liu et al. 2020's EvoNorm-B0."""

import keras
import numpy as np
import pytest

import normswap.layers
from normswap.layers import EvoNormB0
from tests.layers._common import (
    assert_config_round_trip,
    assert_finite_gradients,
    assert_inference_ignores_the_batch,
    assert_mixed_precision_close,
    assert_save_load_round_trip,
    assert_synchronized_only_on_tensorflow,
    assert_trainable_false_runs_in_inference_mode,
    named_weights,
    run_jit_training_steps,
    small_conv_model,
    to_numpy,
)

# (input shape, channel axis): ranks 2 to 5, channels_last and channels_first.
CASES = [
    ((4, 3), -1),
    ((4, 3), 1),
    ((3, 5, 3), -1),
    ((3, 3, 5), 1),
    ((3, 4, 4, 3), -1),
    ((3, 3, 4, 4), 1),
    ((2, 3, 2, 2, 3), -1),
    ((2, 3, 3, 2, 2), 1),
]


def evonorm_b0_reference(x, axis, v, gamma, beta, eps, batch_variance=None):
    """x / max(√(s²_B + ε), v·x + √(s²_I + ε)) · γ + β in float64 (Liu et al. 2020).

    s²_B: per channel, biased, over the batch and spatial axes (given at inference);
    s²_I: per sample and channel, biased, over the spatial axes (0 without any).
    Returns y, the batch's own s²_B and the fraction of entries where the second term
    of the max is the larger one.
    """
    xl = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    c = xl.shape[-1]
    own = xl.reshape(-1, c).var(axis=0)
    s2_b = own if batch_variance is None else batch_variance
    spatial = tuple(range(1, xl.ndim - 1))
    s2_i = xl.var(axis=spatial, keepdims=True) if spatial else np.zeros_like(xl)
    left = np.sqrt(s2_b + eps)
    right = v * xl + np.sqrt(s2_i + eps)
    y = xl / np.maximum(left, right) * gamma + beta
    return np.moveaxis(y, -1, axis), own, float((right > left).mean())


def _input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape) + rng.normal(size=shape[1:]) + 0.5).astype("float32")


def _randomize(layer, seed=1):
    """γ, β, v from N(0.5, 1) (v of either sign), the moving variance in [0.3, 3]."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.name == "moving_variance":
            w.assign(rng.uniform(0.3, 3.0, size=w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0.5, 1.0, size=w.shape).astype("float32"))


def test_registered_and_exported():
    assert keras.saving.get_registered_name(EvoNormB0) == "normswap>EvoNormB0"
    assert "EvoNormB0" in normswap.layers.__all__


@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_numpy_reference_in_training_and_inference(shape, axis):
    x = _input(shape)
    eps, m = 1e-3, 0.9
    layer = EvoNormB0(axis=axis, momentum=m, epsilon=eps)
    layer.build(shape)
    assert [w.name for w in layer.weights] == ["gamma", "beta", "v", "moving_variance"]
    _randomize(layer)
    w = named_weights(layer)
    args = (x, axis, w["v"], w["gamma"], w["beta"], eps)
    expected, _, _ = evonorm_b0_reference(*args, batch_variance=w["moving_variance"])
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)
    expected, s2_b, share = evonorm_b0_reference(*args)
    assert 0.05 < share < 0.95  # both terms of the max are exercised
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(named_weights(layer)["moving_variance"],
                               m * w["moving_variance"] + (1 - m) * s2_b, rtol=1e-5, atol=1e-6)


def test_moving_variance_is_the_biased_batch_variance_over_steps():
    # Updated like Keras BatchNormalization's: biased. (timm stores n/(n − 1) times it;
    # with n = 2·2·2 = 8 values per channel that is 14 % more, which this would catch.)
    shape, momentum = (2, 2, 2, 3), 0.8
    layer = EvoNormB0(momentum=momentum)
    layer.build(shape)
    expected = np.ones(3)
    for t in range(4):
        x = _input(shape, seed=10 + t, scale=1.0 + t)
        layer(x, training=True)
        expected = momentum * expected + (1 - momentum) * x.astype(np.float64).reshape(
            -1, 3).var(axis=0)
    np.testing.assert_allclose(to_numpy(layer.moving_variance), expected, rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((5, 4), -1), ((5, 1, 1, 4), -1)])
def test_without_spatial_extent_the_instance_variance_is_zero(shape, axis):
    # Rank 2 (or 1×1 maps): s²_I = 0, the second term is v·x + √ε; finite throughout.
    x = _input(shape)
    eps = 1e-3
    layer = EvoNormB0(axis=axis, epsilon=eps)
    layer.build(shape)
    _randomize(layer, seed=4)
    w = named_weights(layer)
    xl = x.astype(np.float64).reshape(shape[0], -1)
    s2_b = xl.var(axis=0)
    expected = (xl / np.maximum(np.sqrt(s2_b + eps), w["v"] * xl + np.sqrt(eps))
                * w["gamma"] + w["beta"]).reshape(shape)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    assert_finite_gradients(layer, x, count=3, training=True)


def test_inference_ignores_the_batch_and_training_does_not():
    x = _input((4, 4, 4, 3))
    layer = EvoNormB0()
    layer.build(x.shape)
    _randomize(layer)
    assert_inference_ignores_the_batch(layer, x)
    whole = to_numpy(layer(x, training=True))
    halves = np.concatenate([to_numpy(layer(x[:2], training=True)),
                             to_numpy(layer(x[2:], training=True))])
    assert np.abs(whole - halves).max() > 1e-2


def test_trainable_false_runs_in_inference_mode():
    x = _input((3, 4, 4, 3))
    layer = EvoNormB0()
    layer.build(x.shape)
    _randomize(layer)
    assert_trainable_false_runs_in_inference_mode(layer, x)


def test_center_and_scale_off():
    x = _input((3, 4, 4, 3))
    layer = EvoNormB0(center=False, scale=False)
    layer.build(x.shape)
    assert [w.name for w in layer.weights] == ["v", "moving_variance"]
    _randomize(layer)
    w = named_weights(layer)
    expected, _, _ = evonorm_b0_reference(x, -1, w["v"], 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(momentum=1.5), "momentum=1.5"),
    (dict(epsilon=0.0), "epsilon=0.0"),
    (dict(axis="x"), "axis='x'"),
    (dict(synchronized="yes"), "synchronized='yes'"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvoNormB0(**kwargs)


@pytest.mark.parametrize("kwargs,shape", [(dict(axis=3), (2, 4, 4)), (dict(), (4,))])
def test_invalid_axis_or_rank_raises(kwargs, shape):
    with pytest.raises(ValueError, match="axis"):
        EvoNormB0(**kwargs).build(shape)


def test_synchronized_only_on_tensorflow():
    assert_synchronized_only_on_tensorflow(EvoNormB0)


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1)])
def test_mixed_precision_statistics_in_float32(shape, axis):
    x = _input(shape, scale=300.0)  # x² overflows float16: statistics must be float32
    ref = EvoNormB0(axis=axis)
    mixed = EvoNormB0(axis=axis, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    _randomize(ref)
    assert_mixed_precision_close(ref, mixed, x, training_modes=(True, False))
    np.testing.assert_allclose(to_numpy(mixed.moving_variance),
                               to_numpy(ref.moving_variance), rtol=1e-3)


def test_config_round_trip():
    layer = EvoNormB0(axis=1, momentum=0.9, epsilon=1e-3, center=False,
                      v_initializer="random_normal", v_regularizer="l2",
                      gamma_constraint="non_neg", moving_variance_initializer="zeros",
                      name="b0_cfg")
    x = _input((3, 3, 4, 4))
    layer.build(x.shape)
    _randomize(layer)
    clone = assert_config_round_trip(
        layer, x, dict(axis=1, momentum=0.9, epsilon=1e-3, center=False, scale=True,
                       synchronized=False), training=False)
    assert isinstance(clone.v_regularizer, keras.regularizers.L2)
    assert isinstance(clone.gamma.constraint, keras.constraints.NonNeg)
    fresh = EvoNormB0.from_config(layer.get_config())
    fresh.build(x.shape)
    np.testing.assert_array_equal(to_numpy(fresh.moving_variance), np.zeros(3))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 3))
    h = EvoNormB0(name="b0_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = EvoNormB0(axis=1, scale=False, name="b0_b")(h)
    model = keras.Model(inputs, h)
    model(_input((3, 4, 4, 3), seed=2), training=True)  # move the moving variance
    for i, layer in enumerate(model.layers[1::2]):
        _randomize(layer, seed=i)
    loaded = assert_save_load_round_trip(model, _input((3, 4, 4, 3)),
                                         tmp_path / f"b0{suffix}", training=False)
    assert isinstance(loaded.get_layer("b0_b"), EvoNormB0)
    assert loaded.get_layer("b0_b").gamma is None


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    layer = EvoNormB0(axis=axis)
    layer.build(shape)
    _randomize(layer)
    assert_finite_gradients(layer, _input(shape, scale=1.0), count=3, training=True)


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = small_conv_model(EvoNormB0(momentum=0.5, name="b0"), (5, 5, 2), filters=4)
    after = run_jit_training_steps(model, rng.normal(size=(8, 5, 5, 2)).astype("float32"),
                                   rng.normal(size=(8, 1)).astype("float32"), layer="b0")
    assert sorted(after) == ["beta", "gamma", "moving_variance", "v"]
