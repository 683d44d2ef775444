"""BatchRenormalization against an independent NumPy version of Ioffe 2017."""

import keras
import numpy as np
import pytest

from normswap.layers import BatchRenormalization
from tests.layers._common import (
    assert_config_round_trip,
    assert_finite_gradients,
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
STATS = ["moving_mean", "moving_variance", "renorm_mean", "moving_stddev"]


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


def bn_inference_reference(x, axis, gamma, beta, mean, variance, eps):
    xl, _ = _channels_last(x, axis)
    return np.moveaxis((xl - mean) / np.sqrt(variance + eps) * gamma + beta, -1, axis)


def _input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape) + rng.normal(size=shape[1:]) + 0.5).astype("float32")


def _randomize(layer, seed=1):
    """Random γ, β and statistics (variances and std positive); `step` kept."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.name == "step":
            continue
        if w.name in ("moving_variance", "moving_stddev"):
            value = rng.uniform(0.3, 3.0, size=w.shape)
        else:
            value = rng.normal(size=w.shape)
        w.assign(value.astype("float32"))


@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_numpy_reference_in_training_and_inference(shape, axis):
    # Seed defect: axis ≠ -1 raised; every case here runs, channels_first included.
    x = _input(shape)
    eps = 1e-3
    layer = BatchRenormalization(axis=axis, momentum=0.9, renorm_momentum=0.8,
                                 r_max=1.5, d_max=0.5, warmup_steps=0, epsilon=eps)
    layer.build(shape)
    _randomize(layer)
    w = named_weights(layer)

    expected = bn_inference_reference(x, axis, w["gamma"], w["beta"], w["moving_mean"],
                                      w["moving_variance"], eps)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)

    expected, mean_b, var_b, sigma_b = brn_training_reference(
        x, axis, w["gamma"], w["beta"], w["renorm_mean"], w["moving_stddev"], 1.5, 0.5, eps)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    after = named_weights(layer)
    for name, value, m in [("moving_mean", mean_b, 0.9), ("moving_variance", var_b, 0.9),
                           ("renorm_mean", mean_b, 0.8), ("moving_stddev", sigma_b, 0.8)]:
        np.testing.assert_allclose(after[name], m * w[name] + (1 - m) * value,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert after["step"] == 1


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
        out = np.asarray(layer(x, training=True))
        expected, mean_b, var_b, _ = brn_training_reference(
            x, -1, w["gamma"], w["beta"], w["renorm_mean"], w["moving_stddev"], r_max, d_max,
            eps)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        if r_max == 1.0:
            plain = bn_inference_reference(x, -1, w["gamma"], w["beta"], mean_b, var_b, eps)
            np.testing.assert_allclose(out, plain, rtol=1e-4, atol=1e-4)
        if r_max == 1e6:
            renorm = bn_inference_reference(x, -1, w["gamma"], w["beta"], w["renorm_mean"],
                                            w["moving_stddev"] ** 2 - eps, eps)
            np.testing.assert_allclose(out, renorm, rtol=1e-4, atol=1e-4)


def test_statistics_and_warmup_schedule_over_several_steps():
    shape, eps, warmup = (3, 4, 4, 3), 1e-3, 4
    r_final, d_final, momentum, renorm_momentum = 3.0, 5.0, 0.7, 0.6
    layer = BatchRenormalization(momentum=momentum, renorm_momentum=renorm_momentum,
                                 r_max=r_final, d_max=d_final, warmup_steps=warmup,
                                 epsilon=eps)
    layer.build(shape)
    ref = {"moving_mean": np.zeros(3), "moving_variance": np.ones(3),
           "renorm_mean": np.zeros(3), "moving_stddev": np.full(3, np.sqrt(1 + eps))}
    np.testing.assert_allclose(named_weights(layer)["moving_stddev"], ref["moving_stddev"],
                               rtol=1e-6)
    for t in range(6):
        x = _input(shape, seed=20 + t, scale=0.5 + t)  # growing scale: r gets clipped
        frac = min(t / warmup, 1.0)
        r_max, d_max = 1 + (r_final - 1) * frac, d_final * frac
        expected, mean_b, var_b, sigma_b = brn_training_reference(
            x, -1, 1.0, 0.0, ref["renorm_mean"], ref["moving_stddev"], r_max, d_max, eps)
        np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected,
                                   rtol=1e-4, atol=1e-4, err_msg=f"step {t}")
        ref["moving_mean"] = momentum * ref["moving_mean"] + (1 - momentum) * mean_b
        ref["moving_variance"] = momentum * ref["moving_variance"] + (1 - momentum) * var_b
        ref["renorm_mean"] = (renorm_momentum * ref["renorm_mean"]
                              + (1 - renorm_momentum) * mean_b)
        ref["moving_stddev"] = (renorm_momentum * ref["moving_stddev"]
                                + (1 - renorm_momentum) * sigma_b)
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
    out = np.asarray(layer(x, training=False))
    expected = bn_inference_reference(x, -1, w["gamma"], w["beta"], w["moving_mean"],
                                      w["moving_variance"], 1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    batch = np.asarray(layer(x, training=True))
    assert np.abs(out - batch).max() > 0.1
    # inference leaves every statistic and the step alone
    layer2 = BatchRenormalization()
    layer2.build(x.shape)
    before = named_weights(layer2)
    layer2(x, training=False)
    for name, value in named_weights(layer2).items():
        np.testing.assert_array_equal(value, before[name])


def test_moving_variance_adds_epsilon_once():
    # Seed defect: its moving variance held var + ε and inference added ε again.
    x = _input((3, 4, 4, 3))
    eps = 0.5  # large, so that a double ε is visible
    layer = BatchRenormalization(momentum=0.0, renorm_momentum=0.0, epsilon=eps)
    layer(x, training=True)
    var_b = x.astype(np.float64).reshape(-1, 3).var(axis=0)
    np.testing.assert_allclose(np.asarray(layer.moving_variance), var_b, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.moving_stddev), np.sqrt(var_b + eps), rtol=1e-5)
    # With momentum 0 the stored statistics are this batch's: inference == BN training output.
    plain = bn_inference_reference(x, -1, 1.0, 0.0, x.reshape(-1, 3).mean(0), var_b, eps)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), plain,
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
        values = dict(gamma=gamma, beta=beta, moving_mean=mu, moving_variance=v,
                      renorm_mean=mu, moving_stddev=np.sqrt(v + eps))
        for name, value in values.items():
            getattr(layer, name).assign(value.astype("float32"))
        return layer

    bn_inference = np.asarray(bn(x, training=False))
    layer = carried()
    # inference: the same op as the BN, same numbers
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), bn_inference,
                               rtol=1e-6, atol=1e-6)
    # training at step 0 of the warm-up: r = 1, d = 0, the BN's training output
    np.testing.assert_allclose(np.asarray(layer(x, training=True)),
                               np.asarray(bn(x, training=True)), rtol=1e-4, atol=1e-4)
    # training with r, d not clipped: the BN's inference output
    unclipped = carried(warmup_steps=0, r_max=10.0, d_max=10.0)
    np.testing.assert_allclose(np.asarray(unclipped(x, training=True)), bn_inference,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load_resumes_the_warmup_schedule(tmp_path, suffix):
    # Seed defect: the r_max/d_max schedule state was not saved and restarted on reload.
    inputs = keras.Input((4, 4, 3))
    h = BatchRenormalization(warmup_steps=10, momentum=0.5, renorm_momentum=0.5,
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
    # A restarted schedule (step 0: r = 1, d = 0) would give a different next step ...
    restarted = keras.models.load_model(path)
    restarted.get_layer("brn_a").step.assign(0.0)
    restarted_out = np.asarray(restarted(x, training=True))
    # ... the reloaded model's next training step is the original's next step.
    loaded_out = np.asarray(loaded(x, training=True))
    np.testing.assert_allclose(loaded_out, np.asarray(model(x, training=True)),
                               rtol=1e-5, atol=1e-5)
    assert np.abs(restarted_out - loaded_out).max() > 1e-2
    assert float(loaded.get_layer("brn_a").step.numpy()) == 4


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
    (dict(momentum=-0.1), "momentum=-0.1"),
    (dict(epsilon=-1e-3), "epsilon=-0.001"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchRenormalization(**kwargs)


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
                                 warmup_steps=7, renorm_momentum=0.9, scale=False,
                                 beta_regularizer="l2", name="brn_cfg")
    x = _input((3, 3, 4, 4))
    layer.build(x.shape)
    _randomize(layer)
    clone = assert_config_round_trip(
        layer, x,
        dict(axis=1, momentum=0.95, epsilon=1e-5, r_max=2.0, d_max=1.0, warmup_steps=7,
             renorm_momentum=0.9, scale=False, center=True, synchronized=False),
        training=False)
    np.testing.assert_allclose(np.asarray(clone(x, training=True)),
                               np.asarray(layer(x, training=True)), rtol=1e-6)


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
