"""Switchable Normalization: a learned mix of instance, layer and batch statistics."""

import keras
from keras import ops

from normswap.layers._axes import spatial_axes
from normswap.layers._batch_stats import (
    BatchStatisticsLayer,
    moments,
    reduce_mean,
    update_moving_average,
)
from normswap.layers._checks import check_flag
from normswap.layers._weights import add_configured_weight, weight_arguments


def instance_moments(x, axis):
    """μ_in, σ²_in per sample and channel over the spatial axes (x itself and 0 at rank 2).

    `x` has its batch on axis 0 and its channels on `axis` (non-negative); every other
    axis is spatial. The results keep the reduced axes as size-1 dims.
    """
    spatial = spatial_axes(axis, len(x.shape))
    if not spatial:
        return x, ops.zeros_like(x)
    return moments(x, spatial)


def pooled_moments(means, variances, axis, synchronized=False):
    """Mean and variance over `axis` of equal-sized groups, from each group's moments.

        μ = mean_axis μ_g,    σ² = mean_axis(σ²_g + (μ_g − μ)²)

    the law of total variance: equal to mean_axis(σ²_g + μ_g²) − μ², the paper's form,
    without its cancellation, and never negative. Pooling the IN moments over the
    channel axis gives the LN statistics, over the batch axis (0) the BN statistics;
    `synchronized` makes the latter span the global batch of a tf.distribute strategy.
    """
    mean = reduce_mean(means, (axis,), synchronized)
    variance = reduce_mean(variances + ops.square(means - mean), (axis,), synchronized)
    return mean, variance


def switch_weights(mean_logits, variance_logits, rank):
    """softmax of the switch logits; for a rank-2 input without the first (IN) logit.

    The logits are (IN, LN, BN), or (IN, LN) without a BN branch. A rank-2 input has no
    spatial axes, so its IN branch is degenerate (μ_in = x, σ²_in = 0: it would subtract
    the input from itself). As in the official 1-D variant, it is left out there: the
    weights are softmax(logits[1:]), the softmax renormalised over the other branches
    (a single LN branch then has weight 1).
    """
    if rank == 2:
        mean_logits, variance_logits = mean_logits[1:], variance_logits[1:]
    if mean_logits.shape[0] == 1:  # one branch: weight 1 (no softmax over one entry)
        return ops.ones_like(mean_logits), ops.ones_like(variance_logits)
    return ops.softmax(mean_logits), ops.softmax(variance_logits)


def switch_normalize(branch_moments, mean_weights, variance_weights, x, epsilon):
    """x̂ = (x − Σ_k w_k μ_k) / √(Σ_k w'_k σ²_k + ε) over the given branches."""
    mean = 0.0
    variance = 0.0
    for k, (mean_k, var_k) in enumerate(branch_moments):
        mean = mean + mean_weights[k] * mean_k
        variance = variance + variance_weights[k] * var_k
    return (x - mean) * ops.rsqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="normswap")
class SwitchNormalization(BatchStatisticsLayer):
    """Switchable Normalization: normalizes with a learned mix of IN, LN and BN statistics.

    For an input with batch axis 0, channel axis `axis` and spatial axes S, per sample n
    and channel c:

        μ_in, σ²_in = mean, variance of x[n, ..., c] over S
        μ_ln = mean_c μ_in          σ²_ln = mean_c(σ²_in + μ_in²) − μ_ln²
        μ_bn = mean_n μ_in          σ²_bn = mean_n(σ²_in + μ_in²) − μ_bn²
        y = γ · (x − Σ_k w_k μ_k) / √(Σ_k w'_k σ²_k + ε) + β

    with k over (IN, LN, BN), w = softmax(`mean_weights`) and w' = softmax(
    `variance_weights`) — two trainable vectors of 3 logits, in that order, initialised
    equal. Variances are computed as the equivalent sums of squared deviations, so they
    never go negative. Statistics are computed in float32 (also under mixed precision).

    Training (`training=True` and `trainable`): the BN branch uses the batch statistics
    and updates `moving_mean` and `moving_variance` as Keras BatchNormalization does,
    `m ← m·momentum + batch·(1 − momentum)`, with the biased batch variance.
    Inference: the BN branch uses `moving_mean`/`moving_variance`; the IN and LN branches
    still use the sample's own statistics (they do not depend on the batch).

    `using_bn=False` drops the BN branch, as the official code does for a batch of one
    image per GPU (where batch statistics are those of a single sample): k runs over
    (IN, LN) only, the logit vectors have 2 entries, and no batch statistic is computed,
    stored or updated (the layer has no moving statistics, `momentum` and the moving
    initializers are unused, and `synchronized` has nothing to all-reduce). Training and
    inference then compute the same function, independently of the other samples.

    Rank-2 inputs (after a Dense): there are no spatial axes and the IN branch is
    degenerate (μ_in = x, σ²_in = 0), so it is left out: LN and BN are mixed with
    softmax over the last two logits of each vector (the 3-way softmax renormalised over
    LN and BN), and with `using_bn=False` the layer is a LayerNormalization (the IN
    logit is then the only one left out, and the LN one, alone, has weight 1). Inputs
    with 1×1 spatial size keep every branch; the IN branch then contributes zero
    variance, and ε keeps the result finite.

    Relation to its siblings: logits that put all weight on one branch make the layer
    InstanceNorm, LayerNorm (a per-sample LayerNorm over spatial and channel axes) or
    BatchNormalization. Carrying a trained BatchNormalization over: copy γ, β,
    moving mean and variance and ε, and set the logits of both vectors to e.g.
    (0, 0, 20). The result equals the BN only when the BN weight is 1; in float32 that
    takes a logit gap of about 18 or more (w_bn = 1 − 2·e^−gap rounds to 1), and at that
    gap the softmax saturates: the switch gets zero gradient and is frozen. A gap of
    about 5 (w_bn ≈ 0.987) stays close to the BN and still lets the switch train, so
    the initial logits are a user choice, not a constant.

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        momentum: momentum of the moving averages (the weight they keep at each step,
            as in Keras). Defaults to 0.99, Keras BatchNormalization's. The official
            Switchable-Normalization code uses 0.9 and 0.997 (the same convention); the
            seed Keras port's README said 0.98 while its code used 0.99.
        epsilon: added to the mixed variance. Defaults to 1e-3 (Keras BN's default;
            carry the BN's own ε when converting).
        center, scale: whether to add β / multiply by γ.
        using_bn: whether to mix in the BN branch (True, the default). False mixes IN
            and LN only (see above).
        beta_initializer, gamma_initializer: initializers of β (zeros) and γ (ones).
        moving_mean_initializer, moving_variance_initializer: initializers of the moving
            statistics, zeros and ones.
        mean_weights_initializer, variance_weights_initializer: initializers of the two
            logit vectors, ones (equal weights).
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: as in
            Keras BatchNormalization.
        mean_weights_regularizer, variance_weights_regularizer, mean_weights_constraint,
            variance_weights_constraint: optional regularizers / constraints of the two
            logit vectors (the switch), None by default.
        synchronized: with the TensorFlow backend under a tf.distribute strategy, compute
            the BN branch over the global batch (all-reduced across replicas). Raises a
            ValueError on other backends.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (when scale/center), `moving_mean`, `moving_variance`
    (non-trainable, shape (C,), only with using_bn), `mean_weights`, `variance_weights`
    (trainable, (3,), or (2,) without the BN branch).

    Reference: Luo, Ren, Peng, Zhang, Li, "Differentiable Learning-to-Normalize via
    Switchable Normalization", ICLR 2019, arXiv:1806.10779.
    """

    weight_options = {**BatchStatisticsLayer.weight_options,
                      **weight_arguments(mean_weights="ones", variance_weights="ones")}

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 using_bn=True, synchronized=False, **kwargs):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
                         synchronized=synchronized, **kwargs)
        self.using_bn = check_flag(using_bn, type(self).__name__, "using_bn")

    def build_statistics(self, channels):
        if self.using_bn:
            super().build_statistics(channels)
        branches = 3 if self.using_bn else 2
        self.mean_weights = add_configured_weight(self, "mean_weights", (branches,))
        self.variance_weights = add_configured_weight(self, "variance_weights", (branches,))

    def call(self, inputs, training=None):
        x, axis, rank = self._prepare(inputs)
        dtype = x.dtype
        mean_in, var_in = instance_moments(x, axis)
        branches = [(mean_in, var_in), pooled_moments(mean_in, var_in, axis)]
        if self.using_bn:
            if self._training(training):
                mean_bn, var_bn = pooled_moments(mean_in, var_in, 0, self.synchronized)
                update_moving_average(self.moving_mean, mean_bn, self.momentum)
                update_moving_average(self.moving_variance, var_bn, self.momentum)
            else:
                mean_bn = self._vector(self.moving_mean, axis, rank, dtype)
                var_bn = self._vector(self.moving_variance, axis, rank, dtype)
            branches.append((mean_bn, var_bn))
        if rank == 2:
            branches = branches[1:]
        mean_weights, variance_weights = switch_weights(
            ops.cast(self.mean_weights, dtype), ops.cast(self.variance_weights, dtype), rank)
        normalized = switch_normalize(branches, mean_weights, variance_weights, x,
                                      self.epsilon)
        return ops.cast(self._affine(normalized, axis, rank), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["using_bn"] = self.using_bn
        return config
