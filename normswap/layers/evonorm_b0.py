"""EvoNorm-B0: the batch-statistics normalization-activation layer found by search."""

import keras
from keras import ops

from normswap.layers._axes import batch_axes, spatial_axes
from normswap.layers._batch_stats import BatchStatisticsLayer, moments, update_moving_average
from normswap.layers._weights import add_configured_weight, weight_arguments


def evonorm_b0(x, batch_variance, v, axis, epsilon):
    """x / max(√(s²_B + ε), v·x + √(s²_I(x) + ε)), before the affine map.

    `batch_variance` (s²_B, per channel, shaped to broadcast) is given: the batch's own
    in training, the moving one at inference. s²_I is each sample's (biased) variance
    per channel over the spatial axes, 0 when there are none (rank 2). `axis` is the
    non-negative channel axis. The denominator is at least √ε, so never 0.
    """
    spatial = spatial_axes(axis, len(x.shape))
    if spatial:
        _, instance_variance = moments(x, spatial)
        instance_std = ops.sqrt(instance_variance + epsilon)
    else:
        instance_std = ops.sqrt(ops.cast(epsilon, x.dtype))
    return x / ops.maximum(ops.sqrt(batch_variance + epsilon), v * x + instance_std)


@keras.saving.register_keras_serializable(package="normswap")
class EvoNormB0(BatchStatisticsLayer):
    """EvoNorm-B0: y = x / max(√(s²_B(x) + ε), v·x + √(s²_I(x) + ε)) · γ + β.

    Per channel, s²_B is the (biased) variance over the batch and spatial axes — the
    statistic BatchNormalization divides by — and s²_I the (biased) variance of each
    sample over the spatial axes, as InstanceNorm computes it. `v`, `gamma` (γ) and
    `beta` (β) are per-channel weights initialised to 1, 1 and 0. Nothing is
    subtracted. Where v·x + √(s²_I + ε) stays below the batch std (for v > 0: x ≤ 0,
    unless the sample's own std exceeds the batch's), the output is BatchNorm's scaling
    without centring, x/√(s²_B + ε)·γ + β; where it exceeds it (large positive x), the
    output saturates towards γ/v + β. The
    layer is a normalization and an activation in one: where it replaces a
    BatchNormalization followed by a ReLU, it replaces both. EvoNormS0
    (`normswap.layers.EvoNormS0`) is its batch-independent sibling.

    Training (`training=True` and `trainable`): s²_B is the batch's, and
    `moving_variance` is updated as Keras BatchNormalization updates its own,
    `m ← m·momentum + s²_B·(1 − momentum)`, with the biased variance. Inference:
    s²_B = `moving_variance`, so each sample's output depends on that sample alone (s²_I
    is per sample in both modes). There is no moving mean: nothing is centred.

    Biased or unbiased moving variance: the paper's reference TensorFlow code
    normalizes with, and averages, the biased batch variance; timm's EvoNorm2dB0
    normalizes training batches with the biased variance but stores the unbiased one
    (× n/(n − 1), PyTorch BatchNorm's convention, n = N·H·W per channel). This layer
    stores the biased one, as Keras 3 BatchNormalization does, so a Keras BN's
    moving_variance carries straight in and training and inference divide by the same
    kind of statistic. The two differ by the factor n/(n − 1) (1.0005 for a batch of 8
    images of 16×16): to use a running_var from timm, multiply it by (n − 1)/n of its
    training batches, or ignore the difference.

    Ranks: 3 to 5 (Conv1D/2D/3D feature maps) are the paper's case, with any channel
    axis. A rank-2 input (N, C) has no spatial axis: each sample holds one value per
    channel, whose variance is 0, so the layer computes x / max(√(s²_B + ε), v·x + √ε)
    — finite and differentiable (the batch term keeps the denominator ≥ √ε), a
    BatchNorm-scaled activation without centring. The same holds for 1×1 spatial maps.

    Under mixed precision the weights stay float32, the statistics and the whole map
    are computed in float32 and the result is cast to the input dtype.

    Carrying a trained BatchNormalization over: copy γ, β, the moving variance and ε.
    Not exact: B0 never subtracts the mean and its max term bends the function.

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        momentum: momentum of `moving_variance`. Defaults to 0.99 (Keras BN's).
        epsilon: ε inside both square roots. Defaults to 1e-5, as EvoNormS0's (carry
            the BN's own ε when converting).
        center, scale: whether to add β / multiply by γ.
        beta_initializer, gamma_initializer, v_initializer,
            moving_variance_initializer: initializers, zeros / ones / ones / ones.
        beta_regularizer, gamma_regularizer, v_regularizer: optional regularizers.
        beta_constraint, gamma_constraint, v_constraint: optional constraints.
        synchronized: with the TensorFlow backend under a tf.distribute strategy, compute
            s²_B over the global batch. Raises a ValueError on other backends.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (when scale/center), `v` (trainable, (C,));
    non-trainable `moving_variance` ((C,)).

    Reference: H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation
    Layers", NeurIPS 2020, arXiv:2004.02967.
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones", v="ones",
                                      moving_variance="ones", statistics=("moving_variance",))

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-5, center=True, scale=True,
                 synchronized=False, **kwargs):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
                         synchronized=synchronized, **kwargs)

    def build_statistics(self, channels):
        self.v = add_configured_weight(self, "v", (channels,))
        self.moving_variance = add_configured_weight(
            self, "moving_variance", (channels,), trainable=False)

    def call(self, inputs, training=None):
        x, axis, rank = self._prepare(inputs)
        dtype = x.dtype
        if self._training(training):
            _, batch_variance = moments(x, batch_axes(axis, rank), self.synchronized)
            update_moving_average(self.moving_variance, batch_variance, self.momentum)
        else:
            batch_variance = self._vector(self.moving_variance, axis, rank, dtype)
        normalized = evonorm_b0(x, batch_variance, self._vector(self.v, axis, rank, dtype),
                                axis, self.epsilon)
        return ops.cast(self._affine(normalized, axis, rank), inputs.dtype)
