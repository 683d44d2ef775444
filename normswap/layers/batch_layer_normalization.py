"""Batch Layer Normalization: batch and per-sample normalization mixed by 1/batch size."""

import keras
from keras import ops

from normswap.layers._batch_stats import (
    BatchStatisticsLayer,
    global_batch_size,
    moments,
    reduce_mean,
    update_moving_average,
)


def batch_layer_normalize(x, batch_mean, batch_variance, feature_mean, feature_variance,
                          feature_weight, epsilon):
    """w·(x − μ_F)/√(σ²_F + ε) + (1 − w)·(x − μ_B)/√(σ²_B + ε), w the feature weight 1/B."""
    feature_normalized = (x - feature_mean) * ops.rsqrt(feature_variance + epsilon)
    batch_normalized = (x - batch_mean) * ops.rsqrt(batch_variance + epsilon)
    return feature_weight * feature_normalized + (1.0 - feature_weight) * batch_normalized


@keras.saving.register_keras_serializable(package="normswap")
class BatchLayerNormalization(BatchStatisticsLayer):
    """Batch Layer Normalization: batch and feature normalization weighted by 1/batch size.

    For an input with batch axis 0, channel axis `axis` and spatial axes S:

        μ_B, σ²_B = per-channel mean and biased variance over the batch and S
                    (what BatchNormalization uses)
        μ_F, σ²_F = per-sample mean and variance over S and the channels
                    (what a per-sample LayerNormalization uses)
        y = γ · [ w·(x − μ_F)/√(σ²_F + ε) + (1 − w)·(x − μ_B)/√(σ²_B + ε) ] + β

    Training (`training=True` and `trainable`): w = 1/B with B the batch size of the
    call (dynamic: any batch size works, including a smaller last batch; the global batch
    size when synchronized). At B = 1 the batch term has weight 0, so the layer is a
    per-sample normalization and stays finite. Each training call updates, with
    `m ← m·momentum + value·(1 − momentum)`:

        moving_mean, moving_variance        ← μ_B, σ²_B (per channel, like Keras BN)
        moving_feature_mean, _variance      ← mean over the batch of μ_F, σ²_F (scalars)
        moving_inverse_batch_size           ← 1/B

    Inference: each of the four statistics comes from its moving average when its flag
    is set (`batch_moving_mean`, `batch_moving_var`, `feature_moving_mean`,
    `feature_moving_var`), else from the input itself (μ_B, σ²_B of the inference batch,
    μ_F, σ²_F of each sample). The defaults (batch moving, feature per sample) make
    inference independent of the other samples in the batch. The mixing weight at
    inference is w = `moving_inverse_batch_size`, the training batch size's inverse,
    not the inference batch size's: a model trained at batch size 32 and evaluated one
    image at a time would otherwise switch to pure per-sample normalization at
    inference, a different function from the one it was trained as.

    Why the feature moving statistics are scalars: per-sample statistics have no
    population value per sample. The seed kept one moving average per *slot* of a fixed
    batch (shape (batch_size, H, W, 1)), which averages unrelated samples that happened
    to share a slot and ties the layer to one batch size. Here they are the moving
    averages of the batch-mean of the per-sample mean and variance: the typical sample's
    statistics, which replace a sample's own when the flags ask for them.

    Differences from the seed implementation, all defects there: batch statistics are
    per channel (not per position), the output is not divided by √C, no fixed batch size
    is needed, batch size 1 is finite, `get_config` round-trips, and the exponential
    moving averages need no callback to reset them each epoch.

    Carrying a trained BatchNormalization over: copy γ, β, moving mean and variance, ε,
    and leave moving_inverse_batch_size at its initial 0: inference then equals the BN
    (with the default flags). Training at batch size B mixes in the feature term at
    weight 1/B, and moving_inverse_batch_size follows.

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        momentum: momentum of all moving averages. Defaults to 0.99.
        epsilon: added to both variances. Defaults to 1e-3.
        center, scale: whether to add β / multiply by γ.
        batch_moving_mean, batch_moving_var: at inference, use the moving batch mean /
            variance (True, the defaults) or the inference batch's own.
        feature_moving_mean, feature_moving_var: at inference, use the moving feature
            mean / variance (True) or each sample's own (False, the defaults).
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: initializers, zeros / ones / zeros / ones.
            The scalar feature statistics start at 0 and 1, the inverse batch size at 0.
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: as in
            Keras BatchNormalization.
        synchronized: with the TensorFlow backend under a tf.distribute strategy, compute
            the batch statistics and B over the global batch. Raises a ValueError on
            other backends.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (when scale/center); non-trainable `moving_mean`,
    `moving_variance` ((C,)), `moving_feature_mean`, `moving_feature_variance`,
    `moving_inverse_batch_size` (scalars).

    Reference: Ziaee, Çano, "Batch Layer Normalization, A new normalization layer for
    CNNs and RNNs", ICAART 2022, arXiv:2209.08898.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        batch_moving_mean=True,
        batch_moving_var=True,
        feature_moving_mean=False,
        feature_moving_var=False,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
            beta_initializer=beta_initializer, gamma_initializer=gamma_initializer,
            moving_mean_initializer=moving_mean_initializer,
            moving_variance_initializer=moving_variance_initializer,
            beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint, gamma_constraint=gamma_constraint,
            synchronized=synchronized, **kwargs,
        )
        flags = {
            "batch_moving_mean": batch_moving_mean,
            "batch_moving_var": batch_moving_var,
            "feature_moving_mean": feature_moving_mean,
            "feature_moving_var": feature_moving_var,
        }
        for flag, value in flags.items():
            if value not in (True, False):
                raise ValueError(
                    f"{type(self).__name__}: `{flag}` must be True or False. "
                    f"Received: {flag}={value!r}"
                )
        self.batch_moving_mean = bool(batch_moving_mean)
        self.batch_moving_var = bool(batch_moving_var)
        self.feature_moving_mean = bool(feature_moving_mean)
        self.feature_moving_var = bool(feature_moving_var)

    def build_statistics(self, channels):
        self.moving_feature_mean = self.add_weight(
            name="moving_feature_mean", shape=(), initializer="zeros", dtype="float32",
            trainable=False, autocast=False,
        )
        self.moving_feature_variance = self.add_weight(
            name="moving_feature_variance", shape=(), initializer="ones", dtype="float32",
            trainable=False, autocast=False,
        )
        self.moving_inverse_batch_size = self.add_weight(
            name="moving_inverse_batch_size", shape=(), initializer="zeros",
            dtype="float32", trainable=False, autocast=False,
        )

    def call(self, inputs, training=None):
        x, axis, rank = self._prepare(inputs)
        dtype = x.dtype
        batch_axes = tuple(a for a in range(rank) if a != axis)
        feature_axes = tuple(range(1, rank))
        training = bool(training and self.trainable)
        synchronized = self.synchronized and training

        use = {
            "batch_mean": not training and self.batch_moving_mean,
            "batch_var": not training and self.batch_moving_var,
            "feature_mean": not training and self.feature_moving_mean,
            "feature_var": not training and self.feature_moving_var,
        }
        if not (use["batch_mean"] and use["batch_var"]):
            batch_mean, batch_variance = moments(x, batch_axes, synchronized)
        if not (use["feature_mean"] and use["feature_var"]):
            feature_mean, feature_variance = moments(x, feature_axes)

        if training:
            feature_weight = 1.0 / global_batch_size(x, synchronized)
            update_moving_average(self.moving_mean, batch_mean, self.momentum)
            update_moving_average(self.moving_variance, batch_variance, self.momentum)
            update_moving_average(
                self.moving_feature_mean,
                reduce_mean(feature_mean, (0,), synchronized), self.momentum)
            update_moving_average(
                self.moving_feature_variance,
                reduce_mean(feature_variance, (0,), synchronized), self.momentum)
            update_moving_average(self.moving_inverse_batch_size, feature_weight,
                                  self.momentum)
        else:
            feature_weight = ops.cast(self.moving_inverse_batch_size, dtype)
            if use["batch_mean"]:
                batch_mean = self._vector(self.moving_mean, axis, rank, dtype)
            if use["batch_var"]:
                batch_variance = self._vector(self.moving_variance, axis, rank, dtype)
            if use["feature_mean"]:
                feature_mean = ops.cast(self.moving_feature_mean, dtype)
            if use["feature_var"]:
                feature_variance = ops.cast(self.moving_feature_variance, dtype)

        normalized = batch_layer_normalize(
            x, batch_mean, batch_variance, feature_mean, feature_variance,
            ops.cast(feature_weight, dtype), self.epsilon)
        return ops.cast(self._affine(normalized, axis, rank), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "batch_moving_mean": self.batch_moving_mean,
            "batch_moving_var": self.batch_moving_var,
            "feature_moving_mean": self.feature_moving_mean,
            "feature_moving_var": self.feature_moving_var,
        })
        return config
