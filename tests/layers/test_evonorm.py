"""EvoNormS0 against an independent NumPy version of the paper's formula."""

import keras
import numpy as np
import pytest

from normswap.layers import EvoNormS0
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

# (input shape, channel axis, requested groups): ranks 2 to 5, both layouts, divisible
# and non-divisible group counts.
CASES = [
    ((4, 8), -1, 4),
    ((4, 12), 1, 32),
    ((3, 7, 6), -1, 3),
    ((3, 6, 7), 1, 4),
    ((2, 5, 4, 8), -1, 32),
    ((2, 8, 5, 4), 1, 2),
    ((2, 3, 4, 2, 6), -1, 3),
    ((2, 6, 3, 4, 2), 1, 4),
]


def expected_groups(channels, groups, rank):
    """Largest divisor of C not above `groups`; at rank 2 groups keep ≥ 2 channels."""
    limit = groups if rank > 2 else min(groups, channels // 2)
    return max(d for d in range(1, channels + 1) if channels % d == 0 and d <= limit)


def evonorm_reference(x, axis, groups, v, gamma, beta, epsilon):
    """Liu et al. 2020, EvoNorm-S0: x·σ(v·x) / √(var_group(x) + ε) · γ + β, float64."""
    x = np.asarray(x, np.float64)
    last = np.moveaxis(x, axis % x.ndim, -1)  # (N, ..., C)
    n, c = last.shape[0], last.shape[-1]
    grouped = last.reshape(n, -1, groups, c // groups)
    std = np.sqrt(grouped.var(axis=(1, 3), keepdims=True) + epsilon)
    std = np.broadcast_to(std, grouped.shape).reshape(last.shape)
    y = last * (1.0 / (1.0 + np.exp(-v * last))) / std * gamma + beta
    return np.moveaxis(y, -1, axis % x.ndim)


def _random_input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape) + 0.5).astype("float32")


@pytest.mark.parametrize("shape,axis,groups", CASES)
def test_matches_numpy_reference_in_training_and_inference(shape, axis, groups):
    x = _random_input(shape)
    layer = EvoNormS0(axis=axis, groups=groups)
    layer.build(shape)
    channels = shape[axis]
    assert layer.groups_used == expected_groups(channels, groups, len(shape))
    randomize_weights(layer, mean=0.5)
    w = named_weights(layer)
    expected = evonorm_reference(x, axis, layer.groups_used, w["v"], w["gamma"], w["beta"], 1e-5)
    for training in (True, False):
        np.testing.assert_allclose(to_numpy(layer(x, training=training)), expected,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "channels,groups,rank",
    [(24, 32, 4), (72, 32, 4), (144, 32, 4), (64, 32, 4), (7, 32, 4), (7, 3, 3),
     (32, 32, 2), (6, 32, 2), (2, 32, 2), (9, 4, 5)],
)
def test_groups_used_is_the_largest_valid_divisor(channels, groups, rank):
    shape = (2,) + (3,) * (rank - 2) + (channels,)
    layer = EvoNormS0(groups=groups)
    layer.build(shape)
    assert layer.groups_used == expected_groups(channels, groups, rank)
    assert channels % layer.groups_used == 0
    assert layer.get_config()["groups"] == groups  # the config keeps the request


def test_center_and_scale_off():
    x = _random_input((2, 4, 4, 6))
    layer = EvoNormS0(groups=3, center=False, scale=False)
    layer.build(x.shape)
    assert [w.name for w in layer.weights] == ["v"]
    layer.v.assign(np.linspace(-1.0, 2.0, 6).astype("float32"))
    expected = evonorm_reference(x, -1, 3, np.linspace(-1.0, 2.0, 6), 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_weights_and_their_initial_values():
    layer = EvoNormS0(groups=2)
    layer.build((2, 3, 3, 4))
    w = named_weights(layer)
    assert sorted(w) == ["beta", "gamma", "v"]
    np.testing.assert_array_equal(w["v"], np.ones(4))
    np.testing.assert_array_equal(w["gamma"], np.ones(4))
    np.testing.assert_array_equal(w["beta"], np.zeros(4))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(groups=0), None),
        (dict(groups=-1), None),
        (dict(groups=2.5), None),
        (dict(epsilon=0.0), None),
        (dict(axis=(1, 2)), None),
        (dict(axis=0), (2, 3, 3, 4)),
        (dict(), (5,)),
        (dict(), (4, 1)),  # rank 2, one channel: a group would be a single number
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, shape):
    with pytest.raises(ValueError, match="Received|axis|channel"):
        EvoNormS0(**kwargs)(np.ones(shape, "float32"))


@pytest.mark.parametrize("shape,axis", [((2, 5, 5, 8), -1), ((2, 8, 5, 5), 1), ((3, 8), -1)])
def test_mixed_precision_statistics_in_float32(shape, axis):
    # |x| up to ~1000: squared deviations overflow float16, float32 statistics do not.
    x = _random_input(shape, scale=300.0)
    ref = EvoNormS0(axis=axis, groups=2)
    mixed = EvoNormS0(axis=axis, groups=2, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    randomize_weights(ref, mean=0.5)
    assert_mixed_precision_close(ref, mixed, x)


def test_config_round_trip():
    layer = EvoNormS0(axis=1, groups=5, epsilon=1e-3, center=False,
                      v_initializer="random_normal", gamma_regularizer="l2",
                      name="evo_cfg")
    x = _random_input((2, 6, 4, 4))
    clone = assert_config_round_trip(
        layer, x, dict(axis=1, groups=5, epsilon=1e-3, center=False, scale=True))
    assert layer.groups_used == 3
    assert clone.groups_used == 3


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 6))
    h = EvoNormS0(groups=4, name="evo_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = EvoNormS0(axis=1, groups=3, scale=False, name="evo_b")(h)
    model = keras.Model(inputs, h)
    for layer in model.layers:
        if isinstance(layer, EvoNormS0):
            randomize_weights(layer, seed=len(layer.name), mean=0.5)
    loaded = assert_save_load_round_trip(model, _random_input((2, 4, 4, 6)),
                                         tmp_path / f"evonorm{suffix}")
    assert isinstance(loaded.get_layer("evo_a"), EvoNormS0)
    assert loaded.get_layer("evo_a").groups_used == 3
    assert loaded.get_layer("evo_b").gamma is None


@pytest.mark.parametrize("shape,axis", [((2, 4, 4, 6), -1), ((2, 6, 4, 4), 1), ((3, 8), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    layer = EvoNormS0(axis=axis, groups=2)
    layer.build(shape)
    assert_finite_gradients(layer, _random_input(shape, scale=1.0), count=3, training=True)


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = small_conv_model(EvoNormS0(groups=4, name="evo"), (6, 6, 2), filters=6)
    after = run_jit_training_steps(model, rng.normal(size=(8, 6, 6, 2)).astype("float32"),
                                   rng.normal(size=(8, 1)).astype("float32"), layer="evo")
    assert sorted(after) == ["beta", "gamma", "v"]
