"""ChannelAffine against NumPy: y = x·scale + offset per channel, what a BN infers."""

import keras
import numpy as np
import pytest

from normswap.layers import ChannelAffine
from tests.layers._common import (
    assert_config_round_trip,
    assert_mixed_precision_close,
    assert_save_load_round_trip,
    randomize_weights,
    to_numpy,
)

CASES = [((4, 3), -1), ((4, 3), 1), ((3, 5, 3), -1), ((2, 3, 4, 4), 1), ((2, 2, 3, 2, 3), -1)]


def affine_reference(x, axis, scale, offset):
    xl = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    return np.moveaxis(xl * scale + (0.0 if offset is None else offset), -1, axis)


def _input(shape, seed=0, scale=2.0):
    return (scale * np.random.default_rng(seed).normal(size=shape) + 0.5).astype("float32")


@pytest.mark.parametrize("use_offset", [True, False])
@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_numpy_reference(shape, axis, use_offset):
    x = _input(shape)
    layer = ChannelAffine(axis=axis, use_offset=use_offset)
    layer.build(shape)
    randomize_weights(layer)
    weights = layer.get_weights()
    expected = affine_reference(x, axis, weights[0], weights[1] if use_offset else None)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-6, atol=1e-6)


def test_equals_batch_normalization_at_inference():
    x = _input((3, 4, 4, 5))
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build(x.shape)
    rng = np.random.default_rng(1)
    gamma, beta, mean = (rng.normal(size=5) for _ in range(3))
    variance = rng.uniform(0.5, 2.0, size=5)
    bn.set_weights([v.astype("float32") for v in (gamma, beta, mean, variance)])
    scale = gamma / np.sqrt(variance + 1e-3)
    layer = ChannelAffine()
    layer.build(x.shape)
    layer.set_weights([scale.astype("float32"), (beta - mean * scale).astype("float32")])
    np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(bn(x, training=False)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(axis="channels_last"), "axis='channels_last'"),
    (dict(use_offset="yes"), "use_offset='yes'"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChannelAffine(**kwargs)


def test_unknown_channel_count_raises():
    with pytest.raises(ValueError, match="known channel count"):
        ChannelAffine().build((None, 4, None))


def test_config_round_trip_and_mixed_precision():
    x = _input((2, 3, 4, 4))
    layer = ChannelAffine(axis=1, use_offset=False, scale_initializer="random_normal",
                          name="affine_cfg")
    layer.build(x.shape)
    assert_config_round_trip(layer, x, dict(axis=1, use_offset=False))
    mixed = ChannelAffine(axis=1, use_offset=False, dtype="mixed_float16")
    mixed.build(x.shape)
    assert_mixed_precision_close(layer, mixed, x)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 3))
    h = ChannelAffine(name="affine_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = ChannelAffine(axis=1, use_offset=False, name="affine_b")(h)
    model = keras.Model(inputs, h)
    for layer in model.layers[1::2]:
        randomize_weights(layer, seed=len(layer.name))
    loaded = assert_save_load_round_trip(model, _input((2, 4, 4, 3)),
                                         tmp_path / f"affine{suffix}")
    assert loaded.get_layer("affine_b").offset is None
