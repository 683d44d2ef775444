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
    registered_as,
    run_jit_training_steps,
    skip_keras_layer_norm_on_a_leading_axis,
    small_conv_model,
    to_numpy,
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


def bln_reference(x, axis, gamma, beta, eps, weight=None, moving=None, flags=None,
                  feature="sample"):
    """y = γ·[w·x̂_feature + (1 − w)·x̂_batch] + β in float64.

    Batch statistics per channel over batch and spatial axes; feature statistics per
    sample over spatial and channel axes (`feature="sample"`) or per sample and position
    over the channel axis (`feature="position"`); w = 1/B unless given. `moving` holds
    (mean, var, feature_mean, feature_var); `flags` says which of them replace the
    input's own statistics. Returns y and the input's own statistics.
    """
    xl = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    n, c = xl.shape[0], xl.shape[-1]
    per_channel = xl.reshape(-1, c)
    mean_b, var_b = per_channel.mean(0), per_channel.var(0)
    if feature == "sample":
        per_sample = xl.reshape(n, -1)
        bshape = (n,) + (1,) * (xl.ndim - 1)
        mean_f = per_sample.mean(1).reshape(bshape)
        var_f = per_sample.var(1).reshape(bshape)
    else:
        mean_f, var_f = xl.mean(-1, keepdims=True), xl.var(-1, keepdims=True)
    own = (mean_b, var_b, mean_f, var_f)
    stats = list(own)
    if flags is not None:
        stats = [m if f else o for m, f, o in zip(moving, flags, own)]
    x_batch = (xl - stats[0]) / np.sqrt(stats[1] + eps)
    x_feature = (xl - stats[2]) / np.sqrt(stats[3] + eps)
    w = 1.0 / n if weight is None else weight
    y = gamma * (w * x_feature + (1 - w) * x_batch) + beta
    return np.moveaxis(y, -1, axis), own


def corrected_weight_reference(batch_sizes, momentum):
    """The inference mixing weight after training at `batch_sizes`: the moving average
    of 1/B from 0, divided by 1 − momentumᵗ (Adam's bias correction); 0 before any step."""
    average = 0.0
    for b in batch_sizes:
        average = momentum * average + (1 - momentum) / b
    t = len(batch_sizes)
    return average / (1 - momentum**t) if t else average


def _input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape) + rng.normal(size=shape[1:]) + 0.5).astype("float32")


def _randomize(layer, seed=1):
    """Random γ, β and statistics (variances positive); `step` kept (at 0, the mixing
    weight at inference is then moving_inverse_batch_size itself)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.name == "step":
            continue
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
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)

    expected, (mean_b, var_b, mean_f, var_f) = bln_reference(x, axis, w["gamma"], w["beta"],
                                                             eps)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    after = named_weights(layer)
    for name, value in [("moving_mean", mean_b), ("moving_variance", var_b),
                        ("moving_feature_mean", mean_f.mean()),
                        ("moving_feature_variance", var_f.mean()),
                        ("moving_inverse_batch_size", 1.0 / shape[0])]:
        np.testing.assert_allclose(after[name], m * w[name] + (1 - m) * value,
                                   rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape,axis", CASES)
def test_per_position_feature_statistics_match_numpy_reference(shape, axis):
    # feature_statistics="position": per sample and position, over the channels only.
    x = _input(shape)
    eps, m = 1e-3, 0.9
    layer = BatchLayerNormalization(axis=axis, momentum=m, epsilon=eps,
                                    feature_statistics="position")
    layer.build(shape)
    _randomize(layer)
    w = named_weights(layer)
    expected, _ = bln_reference(x, axis, w["gamma"], w["beta"], eps,
                                weight=w["moving_inverse_batch_size"], moving=_moving(w),
                                flags=(True, True, False, False), feature="position")
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)
    expected, (_, _, mean_f, var_f) = bln_reference(x, axis, w["gamma"], w["beta"], eps,
                                                    feature="position")
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    after = named_weights(layer)
    # the scalar feature statistics average over the samples and the positions
    for name, value in [("moving_feature_mean", mean_f.mean()),
                        ("moving_feature_variance", var_f.mean())]:
        np.testing.assert_allclose(after[name], m * w[name] + (1 - m) * value,
                                   rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape,axis", [((1, 5, 3), -1), ((1, 3, 4, 4), 1)])
def test_per_position_at_batch_size_one_is_keras_layer_normalization(shape, axis):
    skip_keras_layer_norm_on_a_leading_axis(True, axis, len(shape))
    x = _input(shape)
    layer = BatchLayerNormalization(axis=axis, feature_statistics="position")
    layer_norm = keras.layers.LayerNormalization(axis=axis, epsilon=1e-3)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), to_numpy(layer_norm(x)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("feature", ["position", "sample"])
def test_a_step_of_a_recurrent_model_ignores_later_steps_per_position(feature):
    # (N, T, F) from an RNN: per position, step t's output at inference depends on steps
    # ≤ t only (later steps, padding included, change nothing before them); over the
    # whole sample it depends on every step, which the same check detects.
    inputs = keras.Input((6, 3))
    h = keras.layers.SimpleRNN(5, return_sequences=True, seed=1)(inputs)
    h = BatchLayerNormalization(feature_statistics=feature, name="bln")(h)
    model = keras.Model(inputs, h)
    _randomize(model.get_layer("bln"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    changed = x.copy()
    changed[:, 4:] = rng.normal(3.0, 2.0, size=(2, 2, 3))  # later steps (or padding)
    before, after = to_numpy(model(x, training=False)), to_numpy(model(changed, training=False))
    assert np.abs(before[:, 4:] - after[:, 4:]).max() > 1e-2
    if feature == "position":
        np.testing.assert_allclose(after[:, :4], before[:, :4], rtol=1e-6, atol=1e-6)
    else:
        assert np.abs(after[:, :4] - before[:, :4]).max() > 1e-2


def test_inference_weight_after_training_is_the_weight_trained_with():
    # Uncorrected, the moving average of 1/B started at 0 lags: 0.046 after 20 steps at
    # batch size 4, against the 0.25 used in training. Corrected: 0.25.
    shape = (4, 2, 2, 3)
    layer = BatchLayerNormalization()
    layer.build(shape)
    assert float(to_numpy(layer.inference_feature_weight())) == 0.0  # counter 0
    for t in range(20):
        layer(_input(shape, seed=t), training=True)
    w = named_weights(layer)
    assert w["step"] == 20
    np.testing.assert_allclose(w["moving_inverse_batch_size"], 0.25 * (1 - 0.99**20),
                               rtol=1e-5)
    assert abs(float(to_numpy(layer.inference_feature_weight())) - 0.25) <= 1e-6
    x = _input(shape, seed=99)
    expected, _ = bln_reference(x, -1, w["gamma"], w["beta"], 1e-3, weight=0.25,
                                moving=_moving(w), flags=(True, True, False, False))
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)


def test_inference_weight_with_changing_batch_sizes_and_momenta():
    batches = [3, 2, 1, 3, 4]
    for momentum in (0.7, 0.0, 1.0):
        layer = BatchLayerNormalization(momentum=momentum)
        for t, batch in enumerate(batches):
            layer(_input((batch, 2, 2, 3), seed=t), training=True)
        weight = float(to_numpy(layer.inference_feature_weight()))
        assert np.isfinite(weight)
        expected = 0.0 if momentum == 1.0 else corrected_weight_reference(batches, momentum)
        np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"momentum {momentum}")


def test_at_counter_zero_the_inference_weight_is_the_stored_one():
    # A converted layer (or one loaded from the earlier layout) has step 0: its stored
    # weight is used as it is, so 0 keeps the layer an exact BatchNormalization.
    layer = BatchLayerNormalization()
    layer.build((3, 4))
    for value in (0.0, 0.3):
        layer.moving_inverse_batch_size.assign(value)
        np.testing.assert_allclose(float(to_numpy(layer.inference_feature_weight())), value,
                                   rtol=1e-7)


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
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)
    # the flags only matter at inference
    expected, _ = bln_reference(x, axis, w["gamma"], w["beta"], eps)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
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
        out = to_numpy(layer(x, training=True))
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
    out = to_numpy(BatchLayerNormalization(axis=axis)(x, training=True))
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
    np.testing.assert_allclose(to_numpy(layer(x, training=False)),
                               to_numpy(bn(x, training=False)), rtol=1e-5, atol=1e-5)
    # Training on a large batch is close to BN's training output (weight 1/B on the rest).
    big = _input((64, 2, 2, 8), seed=5)
    bn_out = to_numpy(bn(big, training=True))
    bln_out = to_numpy(layer(big, training=True))
    assert np.abs(bln_out - bn_out).mean() < 0.1 * np.abs(bn_out).mean()
    # per channel: a channel's batch statistic pools all positions
    np.testing.assert_allclose(to_numpy(layer.moving_mean),
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
    (dict(feature_statistics="time"), "feature_statistics='time'"),
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
                                    feature_statistics="position",
                                    batch_moving_var=False, feature_moving_mean=True,
                                    center=False, gamma_constraint="non_neg", name="bln_cfg")
    x = _input((3, 3, 4, 4))
    layer.build(x.shape)
    _randomize(layer)
    assert_config_round_trip(
        layer, x,
        dict(axis=1, momentum=0.9, epsilon=1e-5, feature_statistics="position",
             batch_moving_mean=True, batch_moving_var=False, feature_moving_mean=True,
             feature_moving_var=False,
             center=False, synchronized=False),
        training=False)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 3))
    h = BatchLayerNormalization(name="bln_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = BatchLayerNormalization(axis=1, feature_moving_mean=True, name="bln_b")(h)
    h = keras.layers.Flatten()(h)
    h = BatchLayerNormalization(batch_moving_mean=False, feature_statistics="position",
                                name="bln_c")(h)
    model = keras.Model(inputs, h)
    for t in range(2):
        model(_input((3, 4, 4, 3), seed=t), training=True)
    loaded = assert_save_load_round_trip(model, _input((3, 4, 4, 3)),
                                         tmp_path / f"bln{suffix}", training=False)
    assert isinstance(loaded.get_layer("bln_b"), BatchLayerNormalization)
    assert loaded.get_layer("bln_b").feature_moving_mean
    assert not loaded.get_layer("bln_c").batch_moving_mean
    assert loaded.get_layer("bln_c").feature_statistics == "position"
    assert float(loaded.get_layer("bln_a").step.numpy()) == 2


class _EarlierBatchLayerNormalization(keras.layers.Layer):
    """BatchLayerNormalization as the previous version saved itself: weights gamma, beta,
    moving_mean, moving_variance, moving_feature_mean, moving_feature_variance,
    moving_inverse_batch_size (no step); config without feature_statistics. It inferred
    with w = moving_inverse_batch_size itself. Only saved here, never evaluated: the
    expected outputs come from the NumPy reference."""

    FLAGS = dict(batch_moving_mean=True, batch_moving_var=True, feature_moving_mean=False,
                 feature_moving_var=False)

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 **kwargs):
        flags = {k: kwargs.pop(k, v) for k, v in self.FLAGS.items()}
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.center, self.scale, self.flags = center, scale, flags

    def build(self, input_shape):
        c = input_shape[self.axis]
        for name, trainable, shape in [("gamma", True, (c,)), ("beta", True, (c,)),
                                       ("moving_mean", False, (c,)),
                                       ("moving_variance", False, (c,)),
                                       ("moving_feature_mean", False, ()),
                                       ("moving_feature_variance", False, ()),
                                       ("moving_inverse_batch_size", False, ())]:
            if (name == "gamma" and not self.scale) or (name == "beta" and not self.center):
                continue
            setattr(self, name, self.add_weight(name=name, shape=shape, trainable=trainable,
                                                initializer="zeros"))

    def call(self, inputs):
        return inputs

    def get_config(self):
        initializer = keras.initializers.serialize
        return {**super().get_config(),
                "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": initializer(keras.initializers.get("zeros")),
                "gamma_initializer": initializer(keras.initializers.get("ones")),
                "moving_mean_initializer": initializer(keras.initializers.get("zeros")),
                "moving_variance_initializer": initializer(keras.initializers.get("ones")),
                "beta_regularizer": None, "gamma_regularizer": None,
                "beta_constraint": None, "gamma_constraint": None, "synchronized": False,
                **self.flags}


def _earlier_model(cls):
    inputs = keras.Input((4, 4, 3))
    h = cls(momentum=0.9, name="bln_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = cls(axis=1, scale=False, feature_moving_mean=True, name="bln_b")(h)
    return keras.Model(inputs, h)


def _expected_earlier_output(model, x):
    """The earlier layout's inference, layer by layer, from the NumPy reference."""
    a, b = (named_weights(model.get_layer(name)) for name in ("bln_a", "bln_b"))
    y, _ = bln_reference(x, -1, a["gamma"], a["beta"], 1e-3,
                         weight=a["moving_inverse_batch_size"], moving=_moving(a),
                         flags=(True, True, False, False))
    y = np.transpose(y, (0, 3, 1, 2))
    y, _ = bln_reference(y, 1, 1.0, b["beta"], 1e-3, weight=b["moving_inverse_batch_size"],
                         moving=_moving(b), flags=(True, True, True, False))
    return y


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".weights.h5"])
def test_files_of_the_earlier_layout_load_as_the_function_they_inferred(tmp_path, suffix):
    old = _earlier_model(_EarlierBatchLayerNormalization)
    for i, layer in enumerate(old.layers[1::2]):
        _randomize(layer, seed=20 + i)
    x = _input((3, 4, 4, 3), seed=4)
    expected = _expected_earlier_output(old, x)
    assert np.abs(expected).max() > 0.1
    path = tmp_path / f"earlier{suffix}"
    with registered_as(_EarlierBatchLayerNormalization, BatchLayerNormalization):
        old.save_weights(path) if suffix == ".weights.h5" else old.save(path)
    if suffix == ".weights.h5":  # old weights into a model built by this version
        loaded = _earlier_model(BatchLayerNormalization)
        loaded.load_weights(path)
    else:
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)
    for name in ("bln_a", "bln_b"):
        layer = loaded.get_layer(name)
        assert type(layer) is BatchLayerNormalization
        assert [w.name for w in layer.weights][-2:] == ["moving_inverse_batch_size", "step"]
        assert float(layer.step.numpy()) == 0
        old_weights, new_weights = named_weights(old.get_layer(name)), named_weights(layer)
        for key, value in old_weights.items():
            np.testing.assert_array_equal(new_weights[key], value, err_msg=key)
    if suffix != ".weights.h5":  # in the current layout now: saves, loads, trains
        again = assert_save_load_round_trip(loaded, x, tmp_path / f"again{suffix}",
                                            training=False)
        again(x, training=True)
        assert float(again.get_layer("bln_a").step.numpy()) == 1
    loaded.compile(optimizer="sgd", loss="mse", jit_compile=True)
    loaded.fit(x, np.zeros((3, 3, 4, 4), "float32"), batch_size=3, epochs=1, verbose=0)
    assert float(loaded.get_layer("bln_b").step.numpy()) == 1


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
