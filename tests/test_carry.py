"""The carry math: BN numbers into the layers that replace or absorb it."""

import keras
import numpy as np
import pytest

import normswap
from normswap.carry import fold_weights, inference_affine, scale_output_channels
from tests.checks import relative_gap
from tests.models import randomize_biases, randomize_bn


def test_inference_affine_is_the_bn_formula():
    rng = np.random.default_rng(0)
    gamma, beta, mean = rng.normal(size=(3, 5))
    variance = rng.uniform(0.1, 2.0, 5)
    scale, offset = inference_affine(gamma, beta, mean, variance, 1e-3)
    x = rng.normal(size=(7, 5))
    np.testing.assert_allclose(x * scale + offset,
                               gamma * (x - mean) / np.sqrt(variance + 1e-3) + beta)


def test_fold_weights_scales_output_channels_and_the_bias():
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(3, 3, 4, 6)), rng.normal(size=6)
    scale, offset = rng.uniform(0.5, 2.0, 6), rng.normal(size=6)
    new_kernel, new_bias = fold_weights(kernel, bias, scale, offset)
    np.testing.assert_allclose(new_kernel[..., 2], kernel[..., 2] * scale[2])
    np.testing.assert_allclose(new_bias, bias * scale + offset)
    _, no_bias = fold_weights(kernel, None, scale, offset)
    np.testing.assert_allclose(no_bias, offset)
    transposed = rng.normal(size=(3, 3, 6, 4))  # (..., out, in)
    np.testing.assert_allclose(scale_output_channels(transposed, scale, "transposed")[:, :, 2],
                               transposed[:, :, 2] * scale[2])
    depthwise = rng.normal(size=(3, 3, 3, 2))  # in 3, multiplier 2: output 2·in + m
    folded = scale_output_channels(depthwise, scale, "depthwise")
    np.testing.assert_allclose(folded[:, :, 1, 0], depthwise[:, :, 1, 0] * scale[2])


PRODUCERS = {
    "Dense": ((5,), lambda: keras.layers.Dense(6)),
    "Conv1D": ((7, 3), lambda: keras.layers.Conv1D(6, 3)),
    "Conv2D": ((7, 7, 3), lambda: keras.layers.Conv2D(6, 3)),
    "Conv3D": ((5, 5, 5, 2), lambda: keras.layers.Conv3D(6, 3)),
    "Conv2DTranspose": ((5, 5, 3), lambda: keras.layers.Conv2DTranspose(6, 3, strides=2)),
    "Conv1DTranspose": ((5, 3), lambda: keras.layers.Conv1DTranspose(6, 3)),
    "SeparableConv2D": ((7, 7, 3), lambda: keras.layers.SeparableConv2D(6, 3)),
    "DepthwiseConv2D": ((7, 7, 3), lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2)),
    "DepthwiseConv1D": ((7, 3), lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2)),
    "channels_first": ((3, 7, 7), lambda: keras.layers.Conv2D(6, 3,
                                                              data_format="channels_first")),
}


@pytest.mark.parametrize("kind", sorted(PRODUCERS))
def test_fold_into_every_producer_kind_is_exact(kind):
    shape, make = PRODUCERS[kind]
    inputs = keras.Input(shape)
    producer = make()
    axis = 1 if kind == "channels_first" else -1
    x = keras.layers.BatchNormalization(axis=axis, name="bn")(producer(inputs))
    model = randomize_biases(randomize_bn(keras.Model(inputs, x), seed=3), seed=4)
    assert not np.allclose(producer.bias.numpy(), 0)
    result = normswap.convert(model, "fold")
    assert result.report.sites[0].action == "swap", result.report.sites[0].reason
    batch = [np.random.default_rng(5).normal(size=(3,) + shape).astype("float32")]
    assert relative_gap(model, result.model, batch) <= 1e-5
