"""BatchLayerNormalization against an independent NumPy version of Ziaee & Çano 2022."""

import itertools

import keras
import numpy as np
import pytest

from normswap.layers import BatchLayerNormalization
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
)

# The same few shapes recur below: JAX compiles its eager ops once per shape.
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
FLAGS = ["batch_moving_mean", "batch_moving_var", "feature_moving_mean", "feature_moving_var"]


def bln_reference(x, axis, gamma, beta, eps, weight=None, moving=None, flags=None):
    """y = γ·[w·x̂_feature + (1 − w)·x̂_batch] + β in float64.

    Batch statistics per channel over batch and spatial axes, feature statistics per
    sample over spatial and channel axes, w = 1/B unless given. `moving` holds
    (mean, var, feature_mean, feature_var); `flags` says which of them replace the
    input's own statistics. Returns y and the input's own statistics.
    """
    xl = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    n, c = xl.shape[0], xl.shape[-1]
    per_channel = xl.reshape(-1, c)
    mean_b, var_b = per_channel.mean(0), per_channel.var(0)
    per_sample = xl.reshape(n, -1)
    mean_f, var_f = per_sample.mean(1), per_sample.var(1)
    own = (mean_b, var_b, mean_f, var_f)
    stats = list(own)
    if flags is not None:
        stats = [m if f else o for m, f, o in zip(moving, flags, own)]
    bshape = (n,) + (1,) * (xl.ndim - 1)
    x_batch = (xl - stats[0]) / np.sqrt(stats[1] + eps)
    x_feature = ((xl - np.reshape(stats[2], bshape if np.ndim(stats[2]) else ()))
                 / np.sqrt(np.reshape(stats[3], bshape if np.ndim(stats[3]) else ()) + eps))
    w = 1.0 / n if weight is None else weight
    y = gamma * (w * x_feature + (1 - w) * x_batch) + beta
    return np.moveaxis(y, -1, axis), own


def _input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape) + rng.normal(size=shape[1:]) + 0.5).astype("float32")


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if "variance" in w.name:
            value = rng.uniform(0.3, 3.0, size=w.shape)
        elif w.name == "moving_inverse_batch_size":
            value = rng.uniform(0.1, 0.9)
        else:
            value = rng.normal(size=w.shape)
        w.assign(np.asarray(value, "float32"))


def _moving(w):
    return (w["moving_mean"], w["moving_variance"], w["moving_feature_mean"],
            w["moving_feature_variance"])


@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_numpy_reference_in_training_and_inference(shape, axis):
    x = _input(shape)
    eps, m = 1e-3, 0.9
    layer = BatchLayerNormalization(axis=axis, momentum=m, epsilon=eps)
    layer.build(shape)
    _randomize(layer)
    w = named_weights(layer)
    # inference, default flags: moving batch statistics, the sample's own feature ones,
    # and the moving inverse batch size as the mixing weight
    expected, _ = bln_reference(x, axis, w["gamma"], w["beta"], eps,
                                weight=w["moving_inverse_batch_size"], moving=_moving(w),
                                flags=(True, True, False, False))
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)

    expected, (mean_b, var_b, mean_f, var_f) = bln_reference(x, axis, w["gamma"], w["beta"],
                                                             eps)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    after = named_weights(layer)
    for name, value in [("moving_mean", mean_b), ("moving_variance", var_b),
                        ("moving_feature_mean", mean_f.mean()),
                        ("moving_feature_variance", var_f.mean()),
                        ("moving_inverse_batch_size", 1.0 / shape[0])]:
        np.testing.assert_allclose(after[name], m * w[name] + (1 - m) * value,
                                   rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=4)))
def test_every_flag_combination_at_inference(flags):
    shape, axis, eps = (3, 3, 4, 4), 1, 1e-3
    x = _input(shape)
    layer = BatchLayerNormalization(axis=axis, **dict(zip(FLAGS, flags)))
    layer.build(shape)
    _randomize(layer, seed=2)
    w = named_weights(layer)
    expected, _ = bln_reference(x, axis, w["gamma"], w["beta"], eps,
                                weight=w["moving_inverse_batch_size"], moving=_moving(w),
                                flags=flags)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)
    # the flags only matter at inference
    expected, _ = bln_reference(x, axis, w["gamma"], w["beta"], eps)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)


def test_moving_statistics_over_steps_with_changing_batch_size():
    # Seed defects: a fixed batch size was required; batch size 1 gave NaN.
    momentum = 0.7
    layer = BatchLayerNormalization(momentum=momentum)
    ref = {"moving_mean": np.zeros(3), "moving_variance": np.ones(3),
           "moving_feature_mean": 0.0, "moving_feature_variance": 1.0,
           "moving_inverse_batch_size": 0.0}
    for t, batch in enumerate([3, 2, 1, 3]):
        x = _input((batch, 4, 4, 3), seed=30 + t, scale=1.0 + t)
        expected, (mean_b, var_b, mean_f, var_f) = bln_reference(x, -1, 1.0, 0.0, 1e-3)
        out = np.asarray(layer(x, training=True))
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        for name, value in [("moving_mean", mean_b), ("moving_variance", var_b),
                            ("moving_feature_mean", mean_f.mean()),
                            ("moving_feature_variance", var_f.mean()),
                            ("moving_inverse_batch_size", 1.0 / batch)]:
            ref[name] = momentum * ref[name] + (1 - momentum) * value
    for name, value in named_weights(layer).items():
        if name in ref:
            np.testing.assert_allclose(value, ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape,axis", [((1, 3), -1), ((1, 4, 4, 3), -1), ((1, 3, 4, 4), 1)])
def test_batch_size_one_is_feature_normalization(shape, axis):
    x = _input(shape)
    out = np.asarray(BatchLayerNormalization(axis=axis)(x, training=True))
    xd = x.astype(np.float64)
    layer_norm = (xd - xd.mean()) / np.sqrt(xd.var() + 1e-3)
    np.testing.assert_allclose(out, layer_norm, rtol=1e-4, atol=1e-4)


def test_statistics_are_per_channel_and_not_divided_by_sqrt_channels():
    # Seed defects: batch statistics per position (1, H, W, C) and output / √C.
    # With the inverse batch size at its initial 0, inference equals a BatchNormalization.
    shape = (3, 4, 4, 8)
    x = _input(shape)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build(shape)
    rng = np.random.default_rng(3)
    values = [rng.normal(size=8), rng.normal(size=8), rng.normal(size=8),
              rng.uniform(0.5, 2.0, size=8)]
    bn.set_weights([v.astype("float32") for v in values])
    layer = BatchLayerNormalization(epsilon=1e-3)
    layer.build(shape)
    for name, value in zip(["gamma", "beta", "moving_mean", "moving_variance"], values):
        getattr(layer, name).assign(value.astype("float32"))
    assert float(layer.moving_inverse_batch_size.numpy()) == 0.0
    np.testing.assert_allclose(np.asarray(layer(x, training=False)),
                               np.asarray(bn(x, training=False)), rtol=1e-5, atol=1e-5)
    # Training on a large batch is close to BN's training output (weight 1/B on the rest).
    big = _input((64, 2, 2, 8), seed=5)
    bn_out = np.asarray(bn(big, training=True))
    bln_out = np.asarray(layer(big, training=True))
    assert np.abs(bln_out - bn_out).mean() < 0.1 * np.abs(bn_out).mean()
    # per channel: a channel's batch statistic pools all positions
    np.testing.assert_allclose(np.asarray(layer.moving_mean),
                               0.99 * values[2] + 0.01 * big.reshape(-1, 8).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_inference_does_not_depend_on_the_inference_batch():
    x = _input((3, 4, 4, 3))
    layer = BatchLayerNormalization()
    layer.build(x.shape)
    _randomize(layer)
    assert_inference_ignores_the_batch(layer, x)


def test_trainable_false_runs_in_inference_mode():
    x = _input((3, 4, 4, 3))
    layer = BatchLayerNormalization()
    layer.build(x.shape)
    _randomize(layer)
    assert_trainable_false_runs_in_inference_mode(layer, x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_moving_mean="yes"), "batch_moving_mean='yes'"),
    (dict(feature_moving_var=None), "feature_moving_var=None"),
    (dict(momentum=1.5), "momentum=1.5"),
    (dict(epsilon=0), "epsilon=0"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchLayerNormalization(**kwargs)


@pytest.mark.parametrize("kwargs,shape", [(dict(axis=-4), (2, 4, 4)), (dict(), (4,))])
def test_invalid_axis_or_rank_raises(kwargs, shape):
    with pytest.raises(ValueError, match="axis"):
        BatchLayerNormalization(**kwargs).build(shape)


def test_synchronized_only_on_tensorflow():
    assert_synchronized_only_on_tensorflow(BatchLayerNormalization)


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1)])
def test_mixed_precision_close_to_float32(shape, axis):
    x = _input(shape, scale=300.0)  # x² overflows float16: statistics must be float32
    ref = BatchLayerNormalization(axis=axis, feature_moving_var=True)
    mixed = BatchLayerNormalization(axis=axis, feature_moving_var=True, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    _randomize(ref)
    assert_mixed_precision_close(ref, mixed, x, training_modes=(True, False))
    for name, value in named_weights(ref).items():
        np.testing.assert_allclose(named_weights(mixed)[name], value, rtol=1e-3, err_msg=name)


def test_config_round_trip():
    layer = BatchLayerNormalization(axis=1, momentum=0.9, epsilon=1e-5,
                                    batch_moving_var=False, feature_moving_mean=True,
                                    center=False, gamma_constraint="non_neg", name="bln_cfg")
    x = _input((3, 3, 4, 4))
    layer.build(x.shape)
    _randomize(layer)
    assert_config_round_trip(
        layer, x,
        dict(axis=1, momentum=0.9, epsilon=1e-5, batch_moving_mean=True,
             batch_moving_var=False, feature_moving_mean=True, feature_moving_var=False,
             center=False, synchronized=False),
        training=False)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 3))
    h = BatchLayerNormalization(name="bln_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = BatchLayerNormalization(axis=1, feature_moving_mean=True, name="bln_b")(h)
    h = keras.layers.Flatten()(h)
    h = BatchLayerNormalization(batch_moving_mean=False, name="bln_c")(h)
    model = keras.Model(inputs, h)
    for t in range(2):
        model(_input((3, 4, 4, 3), seed=t), training=True)
    loaded = assert_save_load_round_trip(model, _input((3, 4, 4, 3)),
                                         tmp_path / f"bln{suffix}", training=False)
    assert isinstance(loaded.get_layer("bln_b"), BatchLayerNormalization)
    assert loaded.get_layer("bln_b").feature_moving_mean
    assert not loaded.get_layer("bln_c").batch_moving_mean


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1),
                                        ((1, 1, 1, 3), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    layer = BatchLayerNormalization(axis=axis)
    layer.build(shape)
    _randomize(layer)
    assert_finite_gradients(layer, _input(shape, scale=1.0), count=2, training=True)


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = small_conv_model(BatchLayerNormalization(momentum=0.5, name="bln"), (5, 5, 2),
                             filters=4)
    # 10 samples at batch size 4: the last batch has 2, a different size in the same run
    after = run_jit_training_steps(model, rng.normal(size=(10, 5, 5, 2)).astype("float32"),
                                   rng.normal(size=(10, 1)).astype("float32"), layer="bln")
    # moving 1/B after batches of 4, 4, 2 with momentum 0.5
    expected = ((0.0 * 0.5 + 0.25 * 0.5) * 0.5 + 0.25 * 0.5) * 0.5 + 0.5 * 0.5
    np.testing.assert_allclose(after["moving_inverse_batch_size"], expected, rtol=1e-6)
