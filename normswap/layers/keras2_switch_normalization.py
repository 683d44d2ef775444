"""Switchable Normalization as the Keras-2 port computed it: every branch at every rank."""

import keras
from keras import ops

from normswap.layers._batch_stats import update_moving_average
from normswap.layers.switch_normalization import (
    SwitchNormalization,
    instance_moments,
    pooled_moments,
    switch_normalize,
)


@keras.saving.register_keras_serializable(package="normswap")
class Keras2SwitchNormalization(SwitchNormalization):
    """SwitchNormalization that keeps the degenerate instance branch of rank-2 inputs.

    A compatibility layer: it computes what `SwitchNormalization` of titu1994/keras-switchnorm
    (a Keras 2 port, `switchnorm.py`) computed at inference, so that its trained files load
    with their function. For inputs of rank 3 and more it is normswap's
    `SwitchNormalization` (same weights, arguments and formula). For a rank-2 input (N, C)
    there are no spatial axes, the instance statistics are μ_in = x and σ²_in = 0, and the
    Keras 2 port mixed them in like any other branch:

        μ = w₀·x + w₁·μ_ln + w₂·μ_bn        σ² = w'₁·σ²_ln + w'₂·σ²_bn   (w'₀·0)
        y = γ · (x − μ) / √(σ² + ε) + β

    with w = softmax(`mean_weights`), w' = softmax(`variance_weights`) over all three
    logits, μ_ln = mean_c x, σ²_ln the variance of x over the channels, and μ_bn, σ²_bn the
    moving statistics (the batch's in training). normswap's `SwitchNormalization` leaves the
    degenerate branch out there (softmax over the LN and BN logits only), a different
    function; use that layer for new models. Training follows `SwitchNormalization`'s rules
    (biased batch variance in the moving average; the port's Bessel factor, negative for
    rank 2, is not reproduced).

    Args: those of `SwitchNormalization`.

    Reference: Luo, Ren, Peng, Zhang, Li, "Differentiable Learning-to-Normalize via
    Switchable Normalization", ICLR 2019, arXiv:1806.10779; the Keras 2 port:
    github.com/titu1994/keras-switchnorm.
    """

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
        mean_weights = ops.softmax(ops.cast(self.mean_weights, dtype))
        variance_weights = ops.softmax(ops.cast(self.variance_weights, dtype))
        normalized = switch_normalize(branches, mean_weights, variance_weights, x,
                                      self.epsilon)
        return ops.cast(self._affine(normalized, axis, rank), inputs.dtype)
