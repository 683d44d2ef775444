"""BatchRenormalization against an independent NumPy version of Ioffe 2017."""

import keras
import numpy as np
import pytest
from keras import ops

from normswap.layers import BatchRenormalization
from tests.layers._common import (
    assert_config_round_trip,
    assert_finite_gradients,
    assert_mixed_precision_close,
    assert_save_load_round_trip,
    assert_synchronized_only_on_tensorflow,
    assert_trainable_false_runs_in_inference_mode,
    named_weights,
    registered_as,
    run_jit_training_steps,
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
STATS = ["moving_mean", "moving_stddev"]


def _channels_last(x, axis):
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    return x, x.shape


def brn_training_reference(x, axis, gamma, beta, mu, sigma, r_max, d_max, eps):
    """Ioffe 2017, Algorithm 1 (training), float64. Returns y, μ_B, var_B, σ_B."""
    xl, shape = _channels_last(x, axis)
    flat = xl.reshape(-1, shape[-1])
    mean_b = flat.mean(axis=0)
    var_b = ((flat - mean_b) ** 2).mean(axis=0)
    sigma_b = np.sqrt(var_b + eps)
    r = np.clip(sigma_b / sigma, 1.0 / r_max, r_max)
    d = np.clip((mean_b - mu) / sigma, -d_max, d_max)
    y = ((xl - mean_b) / sigma_b * r + d) * gamma + beta
    return np.moveaxis(y, -1, axis), mean_b, var_b, sigma_b


def brn_inference_reference(x, axis, gamma, beta, mu, sigma):
    """Ioffe 2017, Algorithm 1 (inference): y = γ·(x − μ)/σ + β, float64."""
    xl, _ = _channels_last(x, axis)
    return np.moveaxis((xl - mu) / sigma * gamma + beta, -1, axis)


def clip_limits_reference(t, r_final, d_final, plain, r_steps, d_steps):
    """The schedule of r_max(t), d_max(t): 1 and 0 before step `plain`, then linear in t
    until the final value is reached at step `r_steps` / `d_steps` (at once if equal)."""
    def fraction(end):
        if end == plain:
            return float(t >= plain)
        return min(max((t - plain) / (end - plain), 0.0), 1.0)

    return 1 + (r_final - 1) * fraction(r_steps), d_final * fraction(d_steps)


def bn_inference_reference(x, axis, gamma, beta, mean, variance, eps):
    xl, _ = _channels_last(x, axis)
    return np.moveaxis((xl - mean) / np.sqrt(variance + eps) * gamma + beta, -1, axis)


def _input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape) + rng.normal(size=shape[1:]) + 0.5).astype("float32")


def _randomize(layer, seed=1):
    """Random γ, β and statistics (the std positive); `step` kept."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.name == "step":
            continue
        if w.name == "moving_stddev":
            value = rng.uniform(0.3, 3.0, size=w.shape)
        else:
            value = rng.normal(size=w.shape)
        w.assign(value.astype("float32"))


@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_numpy_reference_in_training_and_inference(shape, axis):
    # Seed defect: axis ≠ -1 raised; every case here runs, channels_first included.
    x = _input(shape)
    eps = 1e-3
    layer = BatchRenormalization(axis=axis, momentum=0.9, r_max=1.5, d_max=0.5,
                                 warmup_steps=0, epsilon=eps)
    layer.build(shape)
    _randomize(layer)
    w = named_weights(layer)

    expected = brn_inference_reference(x, axis, w["gamma"], w["beta"], w["moving_mean"],
                                       w["moving_stddev"])
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)

    expected, mean_b, var_b, sigma_b = brn_training_reference(
        x, axis, w["gamma"], w["beta"], w["moving_mean"], w["moving_stddev"], 1.5, 0.5, eps)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    after = named_weights(layer)
    # μ ← μ + α(μ_B − μ), σ ← σ + α(σ_B − σ), α = 1 − momentum
    for name, value in [("moving_mean", mean_b), ("moving_stddev", sigma_b)]:
        np.testing.assert_allclose(after[name], w[name] + 0.1 * (value - w[name]),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert after["step"] == 1


@pytest.mark.parametrize("batch", [2, 4, 32])
@pytest.mark.parametrize("sample_shape,axis", [((3,), -1), ((4, 4, 3), -1), ((3, 4, 4), 1)],
                         ids=["rank2", "rank4", "rank4-channels_first"])
def test_unclipped_training_output_equals_inference_output_before_the_update(
        batch, sample_shape, axis):
    # The paper's defining property: one set of statistics (μ, σ) serves r, d and
    # inference, so with r and d inside their limits the training output on a batch is
    # the inference output on it, at every batch size. A separate moving variance (or ε
    # added to σ² again) breaks it, worst at batch size 2.
    shape = (batch,) + sample_shape
    x = _input(shape, seed=batch)
    eps = 0.1  # large, so that any second ε would show
    layer = BatchRenormalization(axis=axis, epsilon=eps, r_max=1e4, d_max=1e4, warmup_steps=0)
    layer.build(shape)
    _randomize(layer, seed=3)
    w = named_weights(layer)
    expected = brn_inference_reference(x, axis, w["gamma"], w["beta"], w["moving_mean"],
                                       w["moving_stddev"])
    inference = to_numpy(layer(x, training=False))
    np.testing.assert_allclose(inference, expected, rtol=1e-5, atol=1e-5)
    # r and d (NumPy) are inside the limits, and far from the identity 1 and 0
    _, mean_b, _, sigma_b = brn_training_reference(
        x, axis, w["gamma"], w["beta"], w["moving_mean"], w["moving_stddev"], 1e4, 1e4, eps)
    r, d = sigma_b / w["moving_stddev"], (mean_b - w["moving_mean"]) / w["moving_stddev"]
    assert (1e-4 < r).all() and (r < 1e4).all() and (np.abs(d) < 1e4).all()
    assert np.abs(r - 1).max() > 0.3 and np.abs(d).max() > 0.3
    training = to_numpy(layer(x, training=True))
    np.testing.assert_allclose(training, inference, rtol=1e-5, atol=1e-5)
    assert not np.allclose(named_weights(layer)["moving_stddev"], w["moving_stddev"])


def test_training_clips_r_and_d():
    # With r_max = 1, d_max = 0 the output is plain batch normalization; with huge
    # limits it is the inference function of the renorm statistics.
    x = _input((3, 4, 4, 3))
    eps = 1e-3
    for r_max, d_max in [(1.0, 0.0), (1e6, 1e6), (2.0, 0.3)]:
        layer = BatchRenormalization(r_max=r_max, d_max=d_max, warmup_steps=0, epsilon=eps)
        layer.build(x.shape)
        _randomize(layer, seed=5)
        w = named_weights(layer)
        out = to_numpy(layer(x, training=True))
        expected, mean_b, var_b, _ = brn_training_reference(
            x, -1, w["gamma"], w["beta"], w["moving_mean"], w["moving_stddev"], r_max, d_max,
            eps)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        if r_max == 1.0:
            plain = bn_inference_reference(x, -1, w["gamma"], w["beta"], mean_b, var_b, eps)
            np.testing.assert_allclose(out, plain, rtol=1e-4, atol=1e-4)
        if r_max == 1e6:
            renorm = brn_inference_reference(x, -1, w["gamma"], w["beta"], w["moving_mean"],
                                             w["moving_stddev"])
            np.testing.assert_allclose(out, renorm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,plain,r_steps,d_steps", [
    (dict(warmup_steps=4), 0, 4, 4),  # the single linear warm-up
    (dict(warmup_steps=0), 0, 0, 0),  # full limits from the first step
    (dict(plain_steps=3, r_max_steps=9, d_max_steps=6), 3, 9, 6),  # the paper's shape
    (dict(plain_steps=2, warmup_steps=2), 2, 2, 2),  # plain BN, then a jump
    (dict(plain_steps=1, r_max_steps=5), 1, 5, 5000),  # d_max_steps from warmup_steps
])
def test_clip_limits_follow_the_schedule(kwargs, plain, r_steps, d_steps):
    layer = BatchRenormalization(r_max=3.0, d_max=5.0, **kwargs)
    for t in [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 100, 6000]:
        r_max, d_max = layer.clip_limits(float(t))
        expected = clip_limits_reference(t, 3.0, 5.0, plain, r_steps, d_steps)
        np.testing.assert_allclose([float(to_numpy(r_max)), float(to_numpy(d_max))],
                                   expected, rtol=1e-6, atol=1e-6, err_msg=f"step {t}")


def test_statistics_and_schedule_over_several_steps():
    # Training outputs follow the schedule's limits, step by step, and the statistics
    # their moving averages; plain BN (r = 1, d = 0) for the first 2 steps.
    shape, eps, momentum = (3, 4, 4, 3), 1e-3, 0.7
    r_final, d_final, plain, r_steps, d_steps = 3.0, 5.0, 2, 6, 4
    layer = BatchRenormalization(momentum=momentum, r_max=r_final, d_max=d_final,
                                 plain_steps=plain, r_max_steps=r_steps, d_max_steps=d_steps,
                                 epsilon=eps)
    layer.build(shape)
    ref = {"moving_mean": np.zeros(3), "moving_stddev": np.full(3, np.sqrt(1 + eps))}
    np.testing.assert_allclose(named_weights(layer)["moving_stddev"], ref["moving_stddev"],
                               rtol=1e-6)
    for t in range(8):
        x = _input(shape, seed=20 + t, scale=0.5 + t)  # growing scale: r gets clipped
        r_max, d_max = clip_limits_reference(t, r_final, d_final, plain, r_steps, d_steps)
        expected, mean_b, var_b, sigma_b = brn_training_reference(
            x, -1, 1.0, 0.0, ref["moving_mean"], ref["moving_stddev"], r_max, d_max, eps)
        np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                                   rtol=1e-4, atol=1e-4, err_msg=f"step {t}")
        ref["moving_mean"] = momentum * ref["moving_mean"] + (1 - momentum) * mean_b
        ref["moving_stddev"] = momentum * ref["moving_stddev"] + (1 - momentum) * sigma_b
        got = named_weights(layer)
        assert got["step"] == t + 1
        for name in STATS:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name} at step {t}")


def test_inference_uses_moving_statistics_not_the_batch():
    # Seed defect: training=False still returned the batch-statistics output.
    x = _input((3, 4, 4, 3))
    layer = BatchRenormalization()
    layer.build(x.shape)
    _randomize(layer)
    w = named_weights(layer)
    out = to_numpy(layer(x, training=False))
    expected = brn_inference_reference(x, -1, w["gamma"], w["beta"], w["moving_mean"],
                                       w["moving_stddev"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    batch = to_numpy(layer(x, training=True))
    assert np.abs(out - batch).max() > 0.1
    # inference leaves every statistic and the step alone
    layer2 = BatchRenormalization()
    layer2.build(x.shape)
    before = named_weights(layer2)
    layer2(x, training=False)
    for name, value in named_weights(layer2).items():
        np.testing.assert_array_equal(value, before[name])


def test_epsilon_is_added_once():
    # Seed defect: its moving variance held var + ε and inference added ε again. Here σ
    # holds √(var_B + ε) and inference divides by σ itself.
    x = _input((3, 4, 4, 3))
    eps = 0.5  # large, so that a double ε is visible
    layer = BatchRenormalization(momentum=0.0, epsilon=eps)
    layer(x, training=True)
    var_b = x.astype(np.float64).reshape(-1, 3).var(axis=0)
    np.testing.assert_allclose(to_numpy(layer.moving_stddev), np.sqrt(var_b + eps), rtol=1e-5)
    # With momentum 0 the stored statistics are this batch's: inference == BN training output.
    plain = bn_inference_reference(x, -1, 1.0, 0.0, x.reshape(-1, 3).mean(0), var_b, eps)
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), plain,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,axis", [((4, 3), -1), ((3, 3, 4, 4), 1), ((3, 4, 4, 3), -1)])
def test_carry_over_from_batch_normalization(shape, axis):
    x = _input(shape)
    eps = 1e-5
    bn = keras.layers.BatchNormalization(axis=axis, epsilon=eps)
    bn.build(shape)
    rng = np.random.default_rng(9)
    c = shape[axis]
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    # statistics close to this batch's, so that r and d stay inside a moderate clip
    flat = np.moveaxis(x, axis, -1).reshape(-1, c).astype(np.float64)
    mu = flat.mean(0) + 0.1 * rng.normal(size=c)
    v = flat.var(0) * rng.uniform(0.8, 1.25, size=c)
    bn.set_weights([a.astype("float32") for a in (gamma, beta, mu, v)])

    def carried(**kwargs):
        layer = BatchRenormalization(axis=axis, epsilon=eps, **kwargs)
        layer.build(shape)
        layer.gamma.assign(gamma.astype("float32"))
        layer.beta.assign(beta.astype("float32"))
        layer.set_statistics_from_bn(mu.astype("float32"), v.astype("float32"))
        return layer

    bn_inference = to_numpy(bn(x, training=False))
    layer = carried()
    np.testing.assert_allclose(named_weights(layer)["moving_stddev"], np.sqrt(v + eps),
                               rtol=1e-6)
    # inference: the same numbers as the BN
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), bn_inference,
                               rtol=1e-6, atol=1e-6)
    # training at step 0 of the warm-up: r = 1, d = 0, the BN's training output
    np.testing.assert_allclose(to_numpy(layer(x, training=True)),
                               to_numpy(bn(x, training=True)), rtol=1e-4, atol=1e-4)
    # training with r, d not clipped: the BN's inference output
    unclipped = carried(warmup_steps=0, r_max=10.0, d_max=10.0)
    np.testing.assert_allclose(to_numpy(unclipped(x, training=True)), bn_inference,
                               rtol=1e-4, atol=1e-4)


def test_set_statistics_from_bn_takes_an_epsilon_and_refuses_bad_values():
    layer = BatchRenormalization(epsilon=1e-3)
    with pytest.raises(ValueError, match="build the layer"):
        layer.set_statistics_from_bn(np.zeros(3), np.ones(3))
    layer.build((2, 3))
    layer.set_statistics_from_bn([0.5, -1.0, 2.0], [4.0, 0.0, 0.25], epsilon=0.5)
    np.testing.assert_allclose(named_weights(layer)["moving_mean"], [0.5, -1.0, 2.0])
    np.testing.assert_allclose(named_weights(layer)["moving_stddev"],
                               np.sqrt([4.5, 0.5, 0.75]), rtol=1e-6)
    for mean, variance, match in [(np.zeros(2), np.ones(3), "3 finite values"),
                                  (np.zeros(3), [1.0, -1.0, 1.0], "negative"),
                                  (np.zeros(3), [1.0, np.nan, 1.0], "finite")]:
        with pytest.raises(ValueError, match=match):
            layer.set_statistics_from_bn(mean, variance)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load_resumes_the_warmup_schedule(tmp_path, suffix):
    # Seed defect: the r_max/d_max schedule state was not saved and restarted on reload.
    inputs = keras.Input((4, 4, 3))
    h = BatchRenormalization(warmup_steps=10, momentum=0.5, plain_steps=1, r_max_steps=12,
                             name="brn_a")(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = BatchRenormalization(axis=1, warmup_steps=0, name="brn_b")(h)
    h = keras.layers.Flatten()(h)
    h = BatchRenormalization(name="brn_c")(h)
    model = keras.Model(inputs, h)
    for t in range(3):
        model(_input((3, 4, 4, 3), seed=t, scale=1.0 + 2 * t), training=True)
    assert float(model.get_layer("brn_a").step.numpy()) == 3
    x = _input((3, 4, 4, 3), seed=7, scale=6.0)
    path = tmp_path / f"brn{suffix}"
    loaded = assert_save_load_round_trip(model, x, path, training=False)
    layer = loaded.get_layer("brn_b")
    assert isinstance(layer, BatchRenormalization) and layer.axis == 1
    assert float(loaded.get_layer("brn_a").step.numpy()) == 3
    assert loaded.get_layer("brn_a").get_config() == model.get_layer("brn_a").get_config()
    # A restarted schedule (step 0: r = 1, d = 0) would give a different next step ...
    restarted = keras.models.load_model(path)
    restarted.get_layer("brn_a").step.assign(0.0)
    restarted_out = to_numpy(restarted(x, training=True))
    # ... the reloaded model's next training step is the original's next step.
    loaded_out = to_numpy(loaded(x, training=True))
    np.testing.assert_allclose(loaded_out, to_numpy(model(x, training=True)),
                               rtol=1e-5, atol=1e-5)
    assert np.abs(restarted_out - loaded_out).max() > 1e-2
    assert float(loaded.get_layer("brn_a").step.numpy()) == 4


class _EarlierBatchRenormalization(keras.layers.Layer):
    """BatchRenormalization as the previous version saved itself: weights gamma, beta,
    moving_mean, moving_variance, renorm_mean, moving_stddev, step; the config below.
    It inferred γ·(x − moving_mean)/√(moving_variance + ε) + β."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 r_max=3.0, d_max=5.0, warmup_steps=5000, renorm_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.center, self.scale = center, scale
        self.r_max, self.d_max, self.warmup_steps = r_max, d_max, warmup_steps
        self.renorm_momentum = renorm_momentum

    def build(self, input_shape):
        def weight(name, trainable=False, shape=(input_shape[self.axis],)):
            return self.add_weight(name=name, shape=shape, initializer="zeros",
                                   trainable=trainable)

        self.gamma = weight("gamma", trainable=True) if self.scale else None
        self.beta = weight("beta", trainable=True) if self.center else None
        for name in ("moving_mean", "moving_variance", "renorm_mean", "moving_stddev"):
            setattr(self, name, weight(name))
        self.step = weight("step", shape=())

    def call(self, inputs):
        return ops.batch_normalization(
            inputs, self.moving_mean, self.moving_variance, axis=self.axis % inputs.ndim,
            offset=self.beta, scale=self.gamma, epsilon=self.epsilon)

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
                "r_max": self.r_max, "d_max": self.d_max, "warmup_steps": self.warmup_steps,
                "renorm_momentum": self.renorm_momentum}


def _earlier_model(cls):
    inputs = keras.Input((4, 4, 3))
    h = cls(momentum=0.9, epsilon=0.05, warmup_steps=10, name="brn_a", **(
        {"renorm_momentum": 0.8} if cls is _EarlierBatchRenormalization else {}))(inputs)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = cls(axis=1, scale=False, epsilon=0.2, name="brn_b")(h)
    h = keras.layers.Flatten()(h)
    h = cls(center=False, name="brn_c")(h)
    return keras.Model(inputs, h)


def _earlier_weights(model):
    """Random old-layout values; variances and stds positive, steps 3, 5, 7."""
    rng = np.random.default_rng(11)
    for i, layer in enumerate(model.layers[1::2]):
        for w in layer.weights:
            if w.name == "step":
                w.assign(3.0 + 2 * i)
            elif w.name in ("moving_variance", "moving_stddev"):
                w.assign(rng.uniform(0.3, 3.0, size=w.shape).astype("float32"))
            else:
                w.assign(rng.normal(size=w.shape).astype("float32"))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_files_of_the_earlier_layout_load_as_the_function_they_inferred(tmp_path, suffix):
    old = _earlier_model(_EarlierBatchRenormalization)
    _earlier_weights(old)
    x = _input((3, 4, 4, 3), seed=4)
    expected = to_numpy(old(x))
    old_weights = {layer.name: named_weights(layer) for layer in old.layers[1::2]}
    path = tmp_path / f"earlier{suffix}"
    with registered_as(_EarlierBatchRenormalization, BatchRenormalization):
        old.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
    for name, eps in [("brn_a", 0.05), ("brn_b", 0.2), ("brn_c", 1e-3)]:
        layer, w = loaded.get_layer(name), old_weights[name]
        assert type(layer) is BatchRenormalization
        assert [v.name for v in layer.weights] == (
            [n for n in ("gamma", "beta") if n in w] + ["moving_mean", "moving_stddev", "step"])
        got = named_weights(layer)
        np.testing.assert_array_equal(got["moving_mean"], w["moving_mean"])
        np.testing.assert_allclose(got["moving_stddev"], np.sqrt(w["moving_variance"] + eps),
                                   rtol=1e-6)
        assert got["step"] == w["step"]
        assert "renorm_momentum" not in layer.get_config()
    assert loaded.get_layer("brn_a").momentum == 0.9  # the inference statistics' momentum
    assert loaded.get_layer("brn_a").warmup_steps == 10
    # The loaded model is in the current layout: it saves, loads and trains as such.
    again = assert_save_load_round_trip(loaded, x, tmp_path / f"again{suffix}",
                                        training=False)
    assert np.isfinite(to_numpy(again(x, training=True))).all()
    assert float(again.get_layer("brn_a").step.numpy()) == 4
    loaded.compile(optimizer="sgd", loss="mse", jit_compile=True)
    loaded.fit(x, np.zeros((3, 48), "float32"), batch_size=3, epochs=1, verbose=0)
    assert float(loaded.get_layer("brn_a").step.numpy()) == 4


def test_weights_of_the_earlier_layout_load_into_the_current_layout(tmp_path):
    # `load_weights` of an old .weights.h5 file into a model built by this version.
    old = _earlier_model(_EarlierBatchRenormalization)
    _earlier_weights(old)
    x = _input((3, 4, 4, 3), seed=4)
    path = tmp_path / "earlier.weights.h5"
    with registered_as(_EarlierBatchRenormalization, BatchRenormalization):
        old.save_weights(path)
    new = _earlier_model(BatchRenormalization)
    new.load_weights(path)
    np.testing.assert_allclose(to_numpy(new(x, training=False)), to_numpy(old(x)),
                               rtol=1e-5, atol=1e-5)
    assert float(new.get_layer("brn_c").step.numpy()) == 7


def test_trainable_false_runs_in_inference_mode():
    x = _input((3, 4, 4, 3))
    layer = BatchRenormalization()
    layer.build(x.shape)
    _randomize(layer)
    assert_trainable_false_runs_in_inference_mode(layer, x)
    assert float(layer.step.numpy()) == 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(r_max=0.5), "r_max=0.5"),
    (dict(d_max=-1.0), "d_max=-1.0"),
    (dict(warmup_steps=-1), "warmup_steps=-1"),
    (dict(warmup_steps=2.5), "warmup_steps=2.5"),
    (dict(renorm_momentum=2.0), "renorm_momentum=2.0"),
    (dict(renorm_momentum=0.9), "renorm_momentum=0.9, momentum=0.99"),
    (dict(plain_steps=-1), "plain_steps=-1"),
    (dict(r_max_steps=1.5), "r_max_steps=1.5"),
    (dict(plain_steps=10, r_max_steps=20, d_max_steps=5), "d_max_steps=5"),
    (dict(plain_steps=6000), "r_max_steps=None"),
    (dict(momentum=-0.1), "momentum=-0.1"),
    (dict(epsilon=-1e-3), "epsilon=-0.001"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchRenormalization(**kwargs)


def test_renorm_momentum_equal_to_momentum_is_accepted_and_not_in_the_config():
    layer = BatchRenormalization(momentum=0.9, renorm_momentum=0.9)
    assert layer.momentum == 0.9 and "renorm_momentum" not in layer.get_config()


@pytest.mark.parametrize("kwargs,shape", [(dict(axis=3), (2, 4, 4)), (dict(), (4,))])
def test_invalid_axis_or_rank_raises(kwargs, shape):
    with pytest.raises(ValueError, match="axis"):
        BatchRenormalization(**kwargs).build(shape)


def test_synchronized_only_on_tensorflow():
    assert_synchronized_only_on_tensorflow(BatchRenormalization)


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1)])
def test_mixed_precision_close_to_float32(shape, axis):
    x = _input(shape, scale=300.0)  # x² overflows float16: statistics must be float32
    ref = BatchRenormalization(axis=axis, warmup_steps=0)
    mixed = BatchRenormalization(axis=axis, warmup_steps=0, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    _randomize(ref)
    assert_mixed_precision_close(ref, mixed, x, training_modes=(True, False))
    for name in STATS:
        np.testing.assert_allclose(named_weights(mixed)[name], named_weights(ref)[name],
                                   rtol=1e-3)


def test_config_round_trip():
    layer = BatchRenormalization(axis=1, momentum=0.95, epsilon=1e-5, r_max=2.0, d_max=1.0,
                                 warmup_steps=7, plain_steps=2, d_max_steps=4, scale=False,
                                 beta_regularizer="l2", name="brn_cfg")
    x = _input((3, 3, 4, 4))
    layer.build(x.shape)
    _randomize(layer)
    clone = assert_config_round_trip(
        layer, x,
        dict(axis=1, momentum=0.95, epsilon=1e-5, r_max=2.0, d_max=1.0, warmup_steps=7,
             plain_steps=2, r_max_steps=None, d_max_steps=4, scale=False, center=True,
             synchronized=False),
        training=False)
    np.testing.assert_allclose(to_numpy(clone(x, training=True)),
                               to_numpy(layer(x, training=True)), rtol=1e-6)


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1),
                                        ((1, 1, 1, 3), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    layer = BatchRenormalization(axis=axis, warmup_steps=0)
    layer.build(shape)
    _randomize(layer)
    assert_finite_gradients(layer, _input(shape, scale=1.0), count=2, training=True)


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = small_conv_model(BatchRenormalization(warmup_steps=2, name="brn"), (5, 5, 2),
                             filters=4)
    after = run_jit_training_steps(model, rng.normal(size=(12, 5, 5, 2)).astype("float32"),
                                   rng.normal(size=(12, 1)).astype("float32"), layer="brn",
                                   may_stay=("step",))
    assert after["step"] == 3
