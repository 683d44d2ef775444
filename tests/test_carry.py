"""The carry math: BN numbers into the layers that replace or absorb it."""

import types

import keras
import numpy as np
import pytest

import normswap
from normswap.carry import (
    bn_numbers,
    carry_affine,
    carry_statistics,
    fold_weights,
    foldable_reason,
    inference_affine,
    scale_output_channels,
    set_population_statistics,
    site_affine,
)
from normswap.layers import BatchRenormalization, Keras2InstanceNormalization, SwitchNormalization
from normswap.verify import probe_batch
from tests.checks import relative_gap
from tests.models import randomize_biases, randomize_bn, shared_bn_model


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


def test_the_carry_math_is_float64_whatever_the_inputs_dtype():
    """BN numbers arrive as float32; the affine and the fold are rounded once, at the end."""
    rng = np.random.default_rng(6)
    gamma, beta, mean = rng.normal(size=(3, 5)).astype("float32")
    variance = rng.uniform(0.1, 2.0, 5).astype("float32")
    scale, offset = inference_affine(gamma, beta, mean, variance, 1e-3)
    exact = gamma.astype(np.float64) / np.sqrt(variance.astype(np.float64) + 1e-3)
    assert scale.dtype == offset.dtype == np.float64
    np.testing.assert_allclose(scale, exact, rtol=1e-14)
    np.testing.assert_allclose(offset, beta - mean.astype(np.float64) * exact, rtol=1e-14)
    kernel = rng.normal(size=(3, 4, 5)).astype("float32")
    bias = rng.normal(size=5).astype("float32")
    scale32, offset32 = scale.astype("float32"), offset.astype("float32")
    new_kernel, new_bias = fold_weights(kernel, bias, scale32, offset32)
    assert new_kernel.dtype == new_bias.dtype == np.float64
    np.testing.assert_allclose(
        new_bias, bias.astype(np.float64) * scale32.astype(np.float64) + offset32, rtol=1e-14)
    assert scale_output_channels(kernel, scale32).dtype == np.float64


def test_an_unknown_kernel_layout_is_refused():
    with pytest.raises(ValueError, match="unknown kernel layout 'Standard'"):
        scale_output_channels(np.ones((3, 2)), np.ones(2), "Standard")


@pytest.mark.parametrize("affine", [True, False])
def test_bn_numbers_are_float64_with_one_and_zero_for_a_missing_scale_or_center(affine):
    inputs = keras.Input((4, 3))
    bn = keras.layers.BatchNormalization(center=affine, scale=affine)
    randomize_bn(keras.Model(inputs, bn(inputs)), seed=7)
    numbers = bn_numbers(bn)
    assert [a.dtype for a in numbers] == [np.dtype(np.float64)] * 4
    expected = ([bn.gamma.numpy(), bn.beta.numpy()] if affine else [np.ones(3), np.zeros(3)])
    for value, wanted in zip(numbers, expected + [bn.moving_mean.numpy(),
                                                  bn.moving_variance.numpy()]):
        assert value.shape == (3,)
        np.testing.assert_array_equal(value, wanted)
    assert not np.allclose(numbers[2], 0)


class _Holder:
    """A layer-like object with only the variables given."""

    def __init__(self, **values):
        for name, value in values.items():
            setattr(self, name, keras.Variable(np.asarray(value, "float32")))


def _compat_site(layer, channels=3, scale=True, center=True):
    return types.SimpleNamespace(is_batchnorm=False, layer=layer, channels=channels,
                                 scale=scale, center=center)


def test_site_affine_of_a_layer_without_gamma_or_beta_is_one_and_zero():
    gamma, beta = site_affine(_compat_site(_Holder(beta=[0.25, -0.5, 0.75])))
    assert gamma.dtype == beta.dtype == np.float64
    np.testing.assert_array_equal(gamma, np.ones(3))
    np.testing.assert_array_equal(beta, [0.25, -0.5, 0.75])
    gamma, beta = site_affine(_compat_site(_Holder(gamma=[1.5])))  # a scalar, broadcast
    np.testing.assert_array_equal(gamma, np.full(3, 1.5))
    np.testing.assert_array_equal(beta, np.zeros(3))


def test_carry_affine_copies_only_what_the_bn_has_into_what_the_layer_has():
    site = _compat_site(_Holder(gamma=[2.0, 3.0, 4.0], beta=[0.5, 0.6, 0.7]), scale=False)
    target = _Holder(gamma=[9.0, 9.0, 9.0], beta=[0.0, 0.0, 0.0])
    assert carry_affine(site, target) == ["beta"]
    np.testing.assert_array_equal(target.gamma.numpy(), [9.0, 9.0, 9.0])  # left alone
    np.testing.assert_allclose(target.beta.numpy(), [0.5, 0.6, 0.7])
    site = _compat_site(_Holder(gamma=[2.0, 3.0, 4.0], beta=[0.5, 0.6, 0.7]))
    only_beta = _Holder(beta=[0.0, 0.0, 0.0])
    assert carry_affine(site, only_beta) == ["beta"]


def test_population_statistics_take_the_bns_epsilon():
    """Batch Renorm keeps σ = √(v + ε): the ε must be the BN's, not the new layer's."""
    layer = BatchRenormalization(epsilon=1e-3)
    layer.build((None, 3))
    mean, variance = np.array([0.1, -0.2, 0.3]), np.array([0.5, 1.0, 2.0])
    set_population_statistics(layer, mean, variance, 0.25)
    np.testing.assert_allclose(layer.moving_stddev.numpy(), np.sqrt(variance + 0.25), rtol=1e-6)
    site = normswap.find_sites(_bn_after(lambda name: keras.layers.Dense(3, name=name), (5,)))[0]
    layer = BatchRenormalization(epsilon=0.5)
    layer.build((None, 3))
    carry_statistics(site, layer)
    np.testing.assert_allclose(layer.moving_stddev.numpy(), np.sqrt(
        site.layer.moving_variance.numpy() + site.layer.epsilon), rtol=1e-6)
    switch = SwitchNormalization()
    switch.build((None, 4, 4, 3))
    set_population_statistics(switch, mean, variance, 0.25)
    np.testing.assert_allclose(switch.moving_mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(switch.moving_variance.numpy(), variance, rtol=1e-6)


def _bn_after(make_producer, shape, axis=-1):
    """A model of a BN after `make_producer()`'s layer, or on the input itself (None)."""
    inputs = keras.Input(shape)
    x = inputs if make_producer is None else make_producer(name="producer")(inputs)
    x = keras.layers.BatchNormalization(axis=axis, name="bn")(x)
    return randomize_biases(randomize_bn(keras.Model(inputs, x), seed=8), seed=9)


UNFOLDABLE = {
    "reads an input": (lambda: _bn_after(None, (5, 4)),
                       "no layer feeds the BN directly (it reads a model input)"),
    "activation": (lambda: _bn_after(
        lambda name: keras.layers.Dense(4, activation="relu", name=name), (5,)),
        "'producer' applies an activation before the BN"),
    "another axis": (lambda: _bn_after(
        lambda name: keras.layers.Conv1D(4, 1, name=name), (4, 3), axis=1),
        "the BN's axis is not the output-channel axis of 'producer'"),
    "shared": (shared_bn_model, "the BN is shared by 2 call sites"),
}


@pytest.mark.parametrize("case", sorted(UNFOLDABLE))
def test_every_reason_not_to_fold_is_said_and_the_fallback_is_exact(case):
    make, reason = UNFOLDABLE[case]
    model = make()
    sites = normswap.find_sites(model)
    assert foldable_reason(sites[0]) == reason
    result = normswap.convert(model, "fold")
    assert reason in result.report.sites[0].reason
    assert relative_gap(model, result.model, probe_batch(model)) <= 1e-5


def test_a_compatibility_layer_is_not_folded_and_says_what_it_is():
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, Keras2InstanceNormalization(axis=-1)(x))
    reason = foldable_reason(normswap.find_sites(model)[0])
    assert reason.startswith("it is a Keras2InstanceNormalization (a Keras-2 library's layer), "
                             "not a BatchNormalization")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the misplaced bias is a bug of Keras's TensorFlow backend")
@pytest.mark.parametrize("shape, folds", [((4, 4), False), ((3, 6, 4), False),
                                          ((3, 4, 6), True), ((3, 5, 5), True)])
def test_channels_first_folds_unless_the_last_axis_has_as_many_entries_as_channels(shape, folds):
    """Keras's TensorFlow backend adds a channels_first bias along the last axis when that
    axis has C entries: folding there would misplace the bias, so the BN is not folded."""
    conv = {2: keras.layers.Conv1D, 3: keras.layers.Conv2D}[len(shape)]
    model = _bn_after(lambda name: conv(4, 1, data_format="channels_first", name=name),
                      shape, axis=1)
    reason = foldable_reason(normswap.find_sites(model)[0])
    assert (reason is None) == folds, reason
    if not folds:
        assert reason.endswith("(a Keras bug): a folded bias would land there")
    result = normswap.convert(model, "fold")
    assert relative_gap(model, result.model, probe_batch(model)) <= 1e-5


@pytest.mark.parametrize("target", ["fold", "frn"])
def test_folding_says_how_the_producers_regularization_penalty_changed(target):
    """The regularizers stay at their coefficients but weigh the folded weights: the note
    gives both penalties, computed here from the BN's numbers in NumPy."""
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv", kernel_regularizer=keras.regularizers.L2(0.1),
                               bias_regularizer=keras.regularizers.L1(0.2))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(conv(inputs)))
    model = randomize_biases(randomize_bn(keras.Model(inputs, x), seed=4), seed=4)
    gamma, beta, mean, variance = (w.astype(np.float64) for w in
                                   model.get_layer("bn").get_weights())
    scale = gamma / np.sqrt(variance + 1e-3)
    kernel, bias = (w.astype(np.float64) for w in conv.get_weights())
    before = 0.1 * np.sum(kernel ** 2) + 0.2 * np.sum(np.abs(bias))
    after = (0.1 * np.sum((kernel * scale) ** 2)
             + 0.2 * np.sum(np.abs((bias - mean) * scale + beta)))
    assert abs(after - before) > 0.01 * before
    [row] = normswap.convert(model, target).report.swapped
    [note] = [n for n in row.notes if n.startswith("regularization penalty")]
    assert note == (f"regularization penalty of 'conv' {before:.3g} → {after:.3g} "
                    "(same coefficients, folded weights)")
    plain = randomize_bn(keras.Model(inputs, keras.layers.BatchNormalization()(
        keras.layers.Conv2D(4, 3)(inputs))), seed=4)
    [row] = normswap.convert(plain, target).report.swapped
    assert not [n for n in row.notes if n.startswith("regularization")]


def test_activity_regularizers_and_added_losses_are_not_weight_penalties():
    """A layer's `losses` also hold its last call's activity terms (symbolic after
    `predict` on TensorFlow): only the weights' regularizers are compared."""
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv", activity_regularizer="l2")
    model = randomize_bn(keras.Model(inputs, keras.layers.BatchNormalization()(conv(inputs))))
    model.predict(np.ones((2, 6, 6, 3), "float32"), verbose=0)
    conv(np.ones((1, 6, 6, 3), "float32"))  # an eager call: a numeric activity loss
    assert conv.losses
    [row] = normswap.convert(model, "fold").report.swapped
    assert not [n for n in row.notes if n.startswith("regularization")]
