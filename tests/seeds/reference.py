"""NumPy references of what each seed layer computes at inference (`training=False`).

Independent of seed_layers.py (which is TensorFlow): these are the formulas of
docs/seed-layers.md, written out in float64 with NumPy only. `weights` arguments are
the seed layer's weights by their short names (as `make_files.SeedFile.weights` gives them).
Every function takes x of any rank the seed accepts, channels on `axis`.
"""

import numpy as np


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _bshape(rank, axis, size):
    shape = [1] * rank
    shape[axis] = size
    return shape


def _softmax(logits):
    z = np.exp(logits - np.max(logits))
    return z / z.sum()


def switchnorm(x, weights, axis=-1, epsilon=1e-3, center=True, scale=True):
    """titu1994 SwitchNormalization at inference.

    mu_in, var_in: per (sample, channel) over the non-batch, non-channel axes (biased);
    mu_ln = mean_c mu_in; var_ln = mean_c(var_in + mu_in^2) - mu_ln^2;
    mu_bn, var_bn = moving_mean, moving_variance;
    mu = sum_k softmax(mean_weights)_k mu_k; var = sum_k softmax(variance_weights)_k var_k
    (k = instance, layer, batch); y = gamma * (x - mu) / sqrt(var + eps) + beta.
    """
    (x,) = _f64(x)
    rank = x.ndim
    axis = axis % rank
    c = x.shape[axis]
    spatial = tuple(i for i in range(1, rank) if i != axis)
    mu_in = x.mean(axis=spatial, keepdims=True)
    var_in = ((x - mu_in) ** 2).mean(axis=spatial, keepdims=True)
    mu_ln = mu_in.mean(axis=axis, keepdims=True)
    var_ln = (var_in + mu_in ** 2).mean(axis=axis, keepdims=True) - mu_ln ** 2
    b = _bshape(rank, axis, c)
    mu_bn = np.reshape(np.float64(weights["moving_mean"]), b)
    var_bn = np.reshape(np.float64(weights["moving_variance"]), b)
    wm = _softmax(np.float64(weights["mean_weights"]))
    wv = _softmax(np.float64(weights["variance_weights"]))
    mu = wm[0] * mu_in + wm[1] * mu_ln + wm[2] * mu_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    y = (x - mu) / np.sqrt(var + epsilon)
    if scale:
        y = y * np.reshape(np.float64(weights["gamma"]), b)
    if center:
        y = y + np.reshape(np.float64(weights["beta"]), b)
    return y


def batchrenorm_training_false(x, weights, epsilon=1e-3, r_max=1.0, d_max=0.0):
    """titu1994 BatchRenormalization called with training=False (tf.keras predict, or any
    explicit training=False): the batch-statistics output, r and d clipped by the unsaved
    schedule (r_max = 1, d_max = 0 in a fresh process: then y = BN with batch statistics).

    mu_B, var_B over all axes but the last (biased); s_B = sqrt(var_B + eps);
    s = sqrt(running_std + eps) ("running_std" holds a variance);
    r = clip(s_B / s, 1/r_max, r_max); d = clip((mu_B - mean) / s, -d_max, d_max);
    y = gamma * ((x - mu_B) / s_B * r + d) + beta.
    """
    (x,) = _f64(x)
    axes = tuple(range(x.ndim - 1))
    mu_b = x.mean(axis=axes)
    s_b = np.sqrt(x.var(axis=axes) + epsilon)
    s = np.sqrt(np.float64(weights["running_std"]) + epsilon)
    r = np.clip(s_b / s, 1.0 / r_max, r_max)
    d = np.clip((mu_b - np.float64(weights["running_mean"])) / s, -d_max, d_max)
    return np.float64(weights["gamma"]) * ((x - mu_b) / s_b * r + d) + np.float64(
        weights["beta"])


def batchrenorm_learning_phase_0(x, weights, epsilon=1e-3):
    """titu1994 BatchRenormalization called with training=None under learning phase 0
    (standalone Keras 2's predict): y = gamma * (x - running_mean) / sqrt(running_std + eps)
    + beta. The stored running_std is a moving average of var_B + eps, so relative to the
    batch variance eps enters twice."""
    (x,) = _f64(x)
    mean = np.float64(weights["running_mean"])
    var = np.float64(weights["running_std"])
    return np.float64(weights["gamma"]) * (x - mean) / np.sqrt(var + epsilon) + np.float64(
        weights["beta"])


def frn(x, weights, epsilon=1e-6):
    """keras-frn FRN (NHWC rank 4): nu2 = mean over axes 1, 2 of x^2 (no centring);
    z = max(gamma * x / sqrt(nu2 + |eps|) + beta, tau)."""
    (x,) = _f64(x)
    nu2 = (x ** 2).mean(axis=(1, 2), keepdims=True)
    y = np.float64(weights["gamma"]) * x / np.sqrt(nu2 + abs(epsilon)) + np.float64(
        weights["beta"])
    return np.maximum(y, np.float64(weights["tau"]))


def _seed_groups(x, groups, axis):
    """The seeds' grouping: reshape (N, d1, .., C, ..) row-major to (N, G, d1, .., C/G, ..)
    - the channel axis divided by G, G inserted after the batch axis."""
    rank = x.ndim
    axis = axis % rank
    dims = list(x.shape)
    dims[axis] //= groups
    return x.reshape([x.shape[0], groups] + dims[1:])


def groupnorm_titu1994(x, weights, groups, axis=-1, epsilon=1e-5, center=True, scale=True):
    """titu1994 GroupNormalization: statistics over each run of the seed's reshape (for
    channels-last rank >= 3: H/G consecutive image rows with all their channels, i.e. each
    sample's row-major memory cut into G equal contiguous pieces), then gamma/beta per true
    channel. y = gamma_c * (x - mu_run) / sqrt(var_run + eps) + beta_c."""
    (x,) = _f64(x)
    rank = x.ndim
    axis = axis % rank
    g = _seed_groups(x, groups, axis)
    red = tuple(range(2, g.ndim))
    g = (g - g.mean(axis=red, keepdims=True)) / np.sqrt(g.var(axis=red, keepdims=True) + epsilon)
    y = g.reshape(x.shape)
    b = _bshape(rank, axis, x.shape[axis])
    if scale:
        y = y * np.reshape(np.float64(weights["gamma"]), b)
    if center:
        y = y + np.reshape(np.float64(weights["beta"]), b)
    return y


def groupnorm_contrib(x, weights, groups, axis=-1, epsilon=1e-5, center=True, scale=True):
    """keras-contrib GroupNormalization: the same runs and statistics as titu1994's, but
    gamma/beta applied in the grouped layout: the element at grouped index (g, ..., j)
    (j its index along the divided channel axis) gets gamma[g * C/G + j]."""
    (x,) = _f64(x)
    rank = x.ndim
    axis = axis % rank
    c = x.shape[axis]
    g = _seed_groups(x, groups, axis)
    red = tuple(range(2, g.ndim))
    g = (g - g.mean(axis=red, keepdims=True)) / np.sqrt(g.var(axis=red, keepdims=True) + epsilon)
    b = [1] * rank
    b[axis] = c // groups
    b.insert(1, groups)
    if scale:
        g = g * np.reshape(np.float64(weights["gamma"]), b)
    if center:
        g = g + np.reshape(np.float64(weights["beta"]), b)
    return g.reshape(x.shape)


def groupnorm_true(x, gamma, beta, groups, axis=-1, epsilon=1e-5):
    """Group normalization as the paper (and Keras 3's GroupNormalization) defines it:
    statistics per sample over the non-batch, non-channel axes and the C/G channels of a
    group; gamma/beta per channel. Used to measure how far the seeds' layers are from it."""
    (x,) = _f64(x)
    rank = x.ndim
    axis = axis % rank
    moved = np.moveaxis(x, axis, -1)
    shape = moved.shape
    c = shape[-1]
    grouped = moved.reshape(shape[:-1] + (groups, c // groups))
    red = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    mean = grouped.mean(axis=red, keepdims=True)
    var = grouped.var(axis=red, keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + epsilon)).reshape(shape)
    y = y * np.float64(gamma) + np.float64(beta)
    return np.moveaxis(y, -1, axis)


def instancenorm_contrib(x, weights, axis=None, epsilon=1e-3, center=True, scale=True):
    """keras-contrib InstanceNormalization: per sample over every non-batch axis except
    `axis` (all non-batch axes when axis is None), y = gamma * (x - mu) / (sigma + eps)
    + beta, sigma the biased standard deviation (eps added to sigma, not to the variance);
    gamma/beta shape (C,) on `axis`, or (1,) (scalars) when axis is None."""
    (x,) = _f64(x)
    rank = x.ndim
    red = [i for i in range(1, rank)]
    b = [1] * rank
    if axis is not None:
        red.remove(axis % rank)
        b[axis] = x.shape[axis]
    red = tuple(red)
    mu = x.mean(axis=red, keepdims=True)
    sigma = x.std(axis=red, keepdims=True)
    y = (x - mu) / (sigma + epsilon)
    if scale:
        y = y * np.reshape(np.float64(weights["gamma"]), b)
    if center:
        y = y + np.reshape(np.float64(weights["beta"]), b)
    return y


def bln(x, weights, batchsize, batch_moving_mean=True, batch_moving_var=True,
        feature_moving_mean=False, feature_moving_var=False):
    """A2Amir bln_layer at inference (channels last, rank 2-4).

    Batch statistics per position over the batch axis only (shape (1, *x.shape[1:])),
    feature statistics per sample and position over the channel axis (shape
    (N, *x.shape[1:-1], 1)); each taken from the stored moving weight when its flag is set
    (the moving feature statistics have the configured batch size as first dim, so the
    input batch must be that size, or broadcast). offset = the stored `Variable` (0.001).
    y = scale1 * [x_f * (1/B - 1e-4) + x_b * (1 - 1/B - 1e-4)] / sqrt(C) + shift1,
    x_f = (x - mu_f) / sqrt(var_f + offset), x_b = (x - mu_b) / sqrt(var_b + offset),
    B = the configured batchsize (not the batch's size).
    """
    (x,) = _f64(x)
    offset = np.float64(weights["Variable"])
    mu_b = x.mean(axis=0, keepdims=True)
    var_b = x.var(axis=0, keepdims=True)
    mu_f = x.mean(axis=-1, keepdims=True)
    var_f = x.var(axis=-1, keepdims=True)
    if batch_moving_mean:
        mu_b = np.float64(weights["moving_Bmean"])
    if batch_moving_var:
        var_b = np.float64(weights["moving_Bvar"])
    if feature_moving_mean:
        mu_f = np.float64(weights["moving_Fmean"])
    if feature_moving_var:
        var_f = np.float64(weights["moving_Fvar"])
    x_f = (x - mu_f) / np.sqrt(var_f + offset)
    x_b = (x - mu_b) / np.sqrt(var_b + offset)
    inv_b = 1.0 / float(batchsize)
    mixed = x_f * (inv_b - 1e-4) + x_b * (1.0 - (inv_b + 1e-4))
    mixed = mixed / np.sqrt(x.shape[-1])
    return np.float64(weights["scale1"]) * mixed + np.float64(weights["shift1"])


def seed_layer_output(seed, x, weights, kwargs):
    """The seed layer's inference output on x, by the `seed` names of make_files.SeedFile
    (`kwargs` = its layer_kwargs; omitted arguments take the seed's defaults)."""
    kw = dict(kwargs)
    if seed == "switchnorm":
        return switchnorm(x, weights, axis=kw.get("axis", -1), epsilon=kw.get("epsilon", 1e-3),
                          center=kw.get("center", True), scale=kw.get("scale", True))
    if seed == "batchrenorm":
        return batchrenorm_training_false(x, weights, epsilon=kw.get("epsilon", 1e-3))
    if seed == "frn":
        return frn(x, weights, epsilon=kw.get("epsilon", 1e-6))
    if seed in ("groupnorm_titu1994", "groupnorm_contrib"):
        fn = groupnorm_titu1994 if seed == "groupnorm_titu1994" else groupnorm_contrib
        return fn(x, weights, groups=kw.get("groups", 32), axis=kw.get("axis", -1),
                  epsilon=kw.get("epsilon", 1e-5), center=kw.get("center", True),
                  scale=kw.get("scale", True))
    if seed == "instancenorm_contrib":
        return instancenorm_contrib(x, weights, axis=kw.get("axis"),
                                    epsilon=kw.get("epsilon", 1e-3),
                                    center=kw.get("center", True), scale=kw.get("scale", True))
    if seed == "bln":
        return bln(x, weights, kw["batchsize"],
                   **{k: kw.get(k, d) for k, d in (("batch_moving_mean", True),
                                                    ("batch_moving_var", True),
                                                    ("feature_moving_mean", False),
                                                    ("feature_moving_var", False))})
    raise KeyError(f"unknown seed {seed!r}")
