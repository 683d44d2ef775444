"""SwitchNormalization against an independent NumPy version of Luo et al. 2018."""

import keras
import numpy as np
import pytest
from keras import ops

from normswap.layers import SwitchNormalization
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


def _softmax(v):
    e = np.exp(v - np.max(v))
    return e / e.sum()


def sn_reference(x, axis, gamma, beta, mean_logits, var_logits, eps, moving=None,
                 using_bn=True):
    """The paper's formulas, float64, statistics from E[x²] − E[x]² clamped at 0.

    Returns the output and the BN-branch batch (mean, variance), each (C,).
    `moving` = (moving_mean, moving_variance) replaces the BN branch (inference).
    `using_bn=False`: the official code's IN + LN mix (2 logits), LN alone at rank 2.
    """
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    shape = x.shape
    n, c = shape[0], shape[-1]
    flat = x.reshape(n, -1, c)
    if x.ndim > 2:
        mu_in = flat.mean(axis=1)
        var_in = np.maximum((flat**2).mean(axis=1) - mu_in**2, 0.0)
    else:
        mu_in = flat[:, 0, :]
        var_in = np.zeros_like(mu_in)
    mu_ln = mu_in.mean(axis=1, keepdims=True)
    var_ln = np.maximum((var_in + mu_in**2).mean(axis=1, keepdims=True) - mu_ln**2, 0.0)
    mu_bn = mu_in.mean(axis=0, keepdims=True)
    var_bn = np.maximum((var_in + mu_in**2).mean(axis=0, keepdims=True) - mu_bn**2, 0.0)
    batch_stats = (mu_bn[0], var_bn[0])
    if moving is not None:
        mu_bn, var_bn = moving[0][None, :], moving[1][None, :]
    if not using_bn:
        if x.ndim > 2:
            w, wv = _softmax(mean_logits), _softmax(var_logits)
            mean = w[0] * mu_in + w[1] * mu_ln
            var = wv[0] * var_in + wv[1] * var_ln
        else:  # no IN (degenerate), no BN: LayerNorm
            mean, var = mu_ln, var_ln
    elif x.ndim > 2:
        w, wv = _softmax(mean_logits), _softmax(var_logits)
        mean = w[0] * mu_in + w[1] * mu_ln + w[2] * mu_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    else:  # the official 1-D variant: LN and BN only
        w, wv = _softmax(mean_logits[1:]), _softmax(var_logits[1:])
        mean = w[0] * mu_ln + w[1] * mu_bn
        var = wv[0] * var_ln + wv[1] * var_bn
    y = (flat - mean[:, None, :]) / np.sqrt(var[:, None, :] + eps) * gamma + beta
    return np.moveaxis(y.reshape(shape), -1, axis), batch_stats


def _input(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    c_offset = rng.normal(size=shape[1:]) * 1.5  # per-position offsets: centring matters
    return (scale * rng.normal(size=shape) + c_offset + 0.5).astype("float32")


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    values = []
    for w in layer.weights:
        if "variance" in w.name and "weights" not in w.name:
            values.append(rng.uniform(0.5, 2.0, size=w.shape))
        else:
            values.append(rng.normal(size=w.shape))
    layer.set_weights([v.astype("float32") for v in values])


@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_numpy_reference_in_training_and_inference(shape, axis):
    x = _input(shape)
    layer = SwitchNormalization(axis=axis, momentum=0.9, epsilon=1e-3)
    layer.build(shape)
    _randomize(layer)
    w = named_weights(layer)
    args = (x, axis, w["gamma"], w["beta"], w["mean_weights"], w["variance_weights"], 1e-3)

    # Inference: IN and LN from the sample, BN from the moving statistics.
    expected, _ = sn_reference(*args, moving=(w["moving_mean"], w["moving_variance"]))
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4)

    expected, (batch_mean, batch_var) = sn_reference(*args)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    after = named_weights(layer)
    np.testing.assert_allclose(after["moving_mean"],
                               0.9 * w["moving_mean"] + 0.1 * batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["moving_variance"],
                               0.9 * w["moving_variance"] + 0.1 * batch_var,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,axis", CASES)
def test_without_bn_branch_matches_numpy_reference(shape, axis):
    # using_bn=False: IN and LN only; no batch statistic used, stored or updated, so
    # training and inference compute the same per-sample function.
    x = _input(shape)
    layer = SwitchNormalization(axis=axis, using_bn=False, epsilon=1e-3)
    layer.build(shape)
    assert [w.name for w in layer.weights] == ["gamma", "beta", "mean_weights",
                                               "variance_weights"]
    assert layer.mean_weights.shape == (2,) and layer.variance_weights.shape == (2,)
    _randomize(layer)
    w = named_weights(layer)
    expected, _ = sn_reference(x, axis, w["gamma"], w["beta"], w["mean_weights"],
                               w["variance_weights"], 1e-3, using_bn=False)
    for training in (True, False):
        np.testing.assert_allclose(to_numpy(layer(x, training=training)), expected,
                                   rtol=1e-4, atol=1e-4)
    assert_inference_ignores_the_batch(layer, x)


@pytest.mark.parametrize("axis", [-1, 1])
def test_rank2_without_bn_branch_is_layer_normalization(axis):
    x = _input((4, 5))
    layer = SwitchNormalization(axis=axis, using_bn=False)
    layer_norm = keras.layers.LayerNormalization(axis=axis, epsilon=1e-3)
    for training in (True, False):
        np.testing.assert_allclose(to_numpy(layer(x, training=training)),
                                   to_numpy(layer_norm(x)), rtol=1e-4, atol=1e-4)


def test_switch_weights_take_regularizers_and_constraints():
    layer = SwitchNormalization(
        mean_weights_regularizer=keras.regularizers.L2(0.1),
        variance_weights_regularizer=keras.regularizers.L1(0.2),
        mean_weights_constraint=keras.constraints.NonNeg(),
        variance_weights_constraint=keras.constraints.MaxNorm(0.5, axis=0),
        mean_weights_initializer=keras.initializers.Constant(-1.0),
        variance_weights_initializer=keras.initializers.Constant(2.0))
    model = small_conv_model(layer, (4, 4, 2), filters=3)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=3).astype("float32"), rng.normal(size=3).astype("float32")
    layer.mean_weights.assign(logits[0])
    layer.variance_weights.assign(logits[1])
    losses = sorted(float(to_numpy(v)) for v in layer.losses)
    expected = sorted([0.1 * float((logits[0].astype(np.float64) ** 2).sum()),
                       0.2 * float(np.abs(logits[1].astype(np.float64)).sum())])
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(rng.normal(size=(4, 4, 4, 2)).astype("float32"), np.zeros((4, 1), "float32"),
              batch_size=4, epochs=1, verbose=0)
    assert (to_numpy(layer.mean_weights) >= 0).all()  # NonNeg applied after the step
    assert np.linalg.norm(to_numpy(layer.variance_weights)) <= 0.5 + 1e-6  # MaxNorm


def test_moving_statistics_over_several_steps():
    shape, axis, momentum = (3, 4, 4, 3), -1, 0.8
    layer = SwitchNormalization(axis=axis, momentum=momentum)
    layer.build(shape)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(4):
        x = _input(shape, seed=10 + step, scale=1.0 + step)
        layer(x, training=True)
        flat = x.astype(np.float64).reshape(-1, 3)
        mean = momentum * mean + (1 - momentum) * flat.mean(axis=0)
        var = momentum * var + (1 - momentum) * flat.var(axis=0)  # biased, like Keras BN
    np.testing.assert_allclose(to_numpy(layer.moving_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.moving_variance), var, rtol=1e-5)


def test_initial_weights_and_names():
    # Seed defect: the moving mean and variance initialisers were swapped.
    layer = SwitchNormalization()
    layer.build((2, 4, 4, 3))
    w = named_weights(layer)
    assert set(w) == {"gamma", "beta", "moving_mean", "moving_variance",
                      "mean_weights", "variance_weights"}
    np.testing.assert_array_equal(w["moving_mean"], np.zeros(3))
    np.testing.assert_array_equal(w["moving_variance"], np.ones(3))
    assert w["mean_weights"].shape == (3,) and w["variance_weights"].shape == (3,)
    assert {v.name for v in layer.trainable_weights} == {
        "gamma", "beta", "mean_weights", "variance_weights"}
    assert layer.momentum == 0.99
    bare = SwitchNormalization(center=False, scale=False)
    bare.build((2, 3))
    assert {v.name for v in bare.weights} == {
        "moving_mean", "moving_variance", "mean_weights", "variance_weights"}


@pytest.mark.parametrize("shape,axis", [((1, 3), -1), ((4, 3), 1), ((1, 1, 1, 3), -1),
                                        ((3, 3, 1, 1), 1), ((3, 1, 3), -1)])
def test_degenerate_inputs_are_finite_in_training_and_inference(shape, axis):
    # Seed defect: the H·W variance correction gave NaN at inference for rank-2/1×1 inputs.
    x = _input(shape, scale=1.0)
    layer = SwitchNormalization(axis=axis, momentum=0.5)
    for _ in range(2):
        assert np.isfinite(to_numpy(layer(x, training=True))).all()
    assert np.isfinite(to_numpy(layer(x, training=False))).all()
    assert np.isfinite(to_numpy(layer.moving_variance)).all()
    assert (to_numpy(layer.moving_variance) >= 0).all()


def test_rank2_mixes_only_layer_and_batch_statistics():
    x = _input((4, 3))
    outs = []
    for in_logit in (-30.0, 0.0, 30.0):
        layer = SwitchNormalization()
        layer.build(x.shape)
        layer.mean_weights.assign([in_logit, 0.3, -0.2])
        layer.variance_weights.assign([in_logit, -0.4, 0.1])
        outs.append(to_numpy(layer(x, training=True)))
    # The IN logit has no effect at rank 2 ...
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outs[2], outs[1], rtol=1e-6, atol=1e-6)
    # ... and the LN/BN weights are the softmax over the last two logits.
    layer = SwitchNormalization()
    layer.build(x.shape)
    layer.mean_weights.assign([0.0, 30.0, -30.0])  # LN mean
    layer.variance_weights.assign([0.0, 30.0, -30.0])  # LN variance
    xd = x.astype(np.float64)
    ln = (xd - xd.mean(1, keepdims=True)) / np.sqrt(xd.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), ln, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,axis", [((4, 3), -1), ((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1)])
def test_bn_logits_reproduce_batch_normalization(shape, axis):
    x = _input(shape)
    bn = keras.layers.BatchNormalization(axis=axis, epsilon=1e-5, momentum=0.9)
    bn.build(shape)
    rng = np.random.default_rng(4)
    c = shape[axis]
    bn.set_weights([rng.normal(size=c), rng.normal(size=c), rng.normal(size=c),
                    rng.uniform(0.5, 2.0, size=c)])
    sn = SwitchNormalization(axis=axis, epsilon=1e-5, momentum=0.9)
    sn.build(shape)
    for name, value in zip(["gamma", "beta", "moving_mean", "moving_variance"],
                           bn.get_weights()):
        getattr(sn, name).assign(value)
    sn.mean_weights.assign([0.0, 0.0, 20.0])
    sn.variance_weights.assign([0.0, 0.0, 20.0])
    # a gap of 20 rounds the BN weight to exactly 1 in float32 (documented: gap ≥ ~18)
    assert to_numpy(ops.softmax(ops.convert_to_tensor([0.0, 0.0, 20.0])))[2] == 1.0
    np.testing.assert_allclose(to_numpy(sn(x, training=False)),
                               to_numpy(bn(x, training=False)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(sn(x, training=True)),
                               to_numpy(bn(x, training=True)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(sn.moving_mean), to_numpy(bn.moving_mean),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(sn.moving_variance),
                               to_numpy(bn.moving_variance), rtol=1e-5, atol=1e-6)


def test_inference_of_a_sample_does_not_depend_on_the_batch():
    x = _input((3, 4, 4, 3))
    layer = SwitchNormalization()
    layer.build(x.shape)
    _randomize(layer)
    assert_inference_ignores_the_batch(layer, x)


def test_trainable_false_runs_in_inference_mode():
    x = _input((3, 4, 4, 3))
    layer = SwitchNormalization()
    layer.build(x.shape)
    _randomize(layer)
    assert_trainable_false_runs_in_inference_mode(layer, x)


@pytest.mark.parametrize("kwargs,shape", [
    (dict(axis=3), (2, 4, 4)),
    (dict(axis=0), (2, 4)),
    (dict(), (4,)),
    (dict(axis=(1, 2)), (2, 3, 4)),
])
def test_invalid_axis_or_rank_raises(kwargs, shape):
    with pytest.raises(ValueError, match="axis"):
        SwitchNormalization(**kwargs).build(shape)


@pytest.mark.parametrize("kwargs,match", [
    (dict(momentum=1.5), "momentum=1.5"),
    (dict(epsilon=0.0), "epsilon=0.0"),
    (dict(axis="x"), "axis='x'"),
    (dict(synchronized="yes"), "synchronized='yes'"),
    (dict(using_bn="no"), "using_bn='no'"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwitchNormalization(**kwargs)


def test_synchronized_only_on_tensorflow():
    assert_synchronized_only_on_tensorflow(SwitchNormalization)


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1)])
def test_mixed_precision_close_to_float32(shape, axis):
    x = _input(shape, scale=300.0)  # x² overflows float16: statistics must be float32
    ref = SwitchNormalization(axis=axis)
    mixed = SwitchNormalization(axis=axis, dtype="mixed_float16")
    ref.build(shape)
    mixed.build(shape)
    _randomize(ref)
    assert_mixed_precision_close(ref, mixed, x, training_modes=(True, False))
    np.testing.assert_allclose(to_numpy(mixed.moving_variance),
                               to_numpy(ref.moving_variance), rtol=1e-3)


def test_config_round_trip():
    layer = SwitchNormalization(axis=1, momentum=0.95, epsilon=1e-5, center=False,
                                mean_weights_initializer=keras.initializers.Constant(2.0),
                                gamma_regularizer="l2", variance_weights_regularizer="l1",
                                mean_weights_constraint="non_neg", name="sn_cfg")
    x = _input((3, 3, 4, 4))
    layer.build(x.shape)
    _randomize(layer)
    assert_config_round_trip(
        layer, x,
        dict(axis=1, momentum=0.95, epsilon=1e-5, center=False, scale=True,
             synchronized=False),
        training=False)
    fresh = SwitchNormalization.from_config(layer.get_config())
    fresh.build(x.shape)
    np.testing.assert_array_equal(to_numpy(fresh.mean_weights), np.full(3, 2.0))
    assert isinstance(fresh.variance_weights_regularizer, keras.regularizers.L1)
    assert isinstance(fresh.mean_weights.constraint, keras.constraints.NonNeg)
    no_bn = SwitchNormalization(using_bn=False, name="sn_no_bn")
    no_bn.build(x.shape)
    _randomize(no_bn)
    assert_config_round_trip(no_bn, x, dict(using_bn=False), training=True)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    inputs = keras.Input((4, 4, 3))
    h = SwitchNormalization(name="sn_a")(inputs)
    h = SwitchNormalization(using_bn=False, name="sn_d")(h)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = SwitchNormalization(axis=1, name="sn_b")(h)
    h = keras.layers.Flatten()(h)
    h = SwitchNormalization(name="sn_c")(h)
    model = keras.Model(inputs, h)
    x = _input((3, 4, 4, 3))
    model(x, training=True)  # move the statistics away from their initial values
    for layer in model.layers:
        if isinstance(layer, SwitchNormalization):
            layer.mean_weights.assign(np.random.default_rng(len(layer.name)).normal(
                size=layer.mean_weights.shape))
    loaded = assert_save_load_round_trip(model, x, tmp_path / f"sn{suffix}", training=False)
    assert isinstance(loaded.get_layer("sn_b"), SwitchNormalization)
    assert loaded.get_layer("sn_b").axis == 1
    assert not loaded.get_layer("sn_d").using_bn


@pytest.mark.parametrize("shape,axis", [((3, 4, 4, 3), -1), ((3, 3, 4, 4), 1), ((4, 3), -1),
                                        ((1, 1, 1, 3), -1)])
def test_gradients_finite_for_every_trainable_weight(shape, axis):
    layer = SwitchNormalization(axis=axis)
    layer.build(shape)
    _randomize(layer)
    assert_finite_gradients(layer, _input(shape, scale=1.0), count=4, training=True)


def test_jit_compiled_training_steps():
    rng = np.random.default_rng(3)
    model = small_conv_model(SwitchNormalization(momentum=0.5, name="sn"), (5, 5, 2),
                             filters=4)
    run_jit_training_steps(model, rng.normal(size=(8, 5, 5, 2)).astype("float32"),
                           rng.normal(size=(8, 1)).astype("float32"), layer="sn")
