"""Batch Layer Normalization as its reference implementation computed it (tf.keras 2.1)."""

import keras
from keras import ops

from normswap.layers._axes import compute_dtype_for_statistics
from normswap.layers._batch_stats import moments
from normswap.layers._checks import check_count, check_epsilon, check_flag
from normswap.layers._weights import (
    add_configured_weight,
    set_weight_options,
    weight_arguments,
    weight_options_config,
)

#: The constant the reference implementation subtracts from both mixing weights.
MIX_OFFSET = 1e-4


def per_position_mix(x, batch_mean, batch_variance, feature_mean, feature_variance,
                     batch_size, epsilon):
    """[x_f·(1/B − 10⁻⁴) + x_b·(1 − (1/B + 10⁻⁴))] / √C, channels last.

    x_f = (x − μ_f)/√(σ²_f + ε), x_b = (x − μ_b)/√(σ²_b + ε); B = `batch_size` (the
    configured one), C the channel count. The weights do not sum to 1 and the result is
    divided by √C: both as in the reference implementation.
    """
    feature_weight = 1.0 / batch_size - MIX_OFFSET
    batch_weight = 1.0 - (1.0 / batch_size + MIX_OFFSET)
    x_f = (x - feature_mean) * ops.rsqrt(feature_variance + epsilon)
    x_b = (x - batch_mean) * ops.rsqrt(batch_variance + epsilon)
    mixed = x_f * feature_weight + x_b * batch_weight
    return mixed / ops.sqrt(ops.cast(x.shape[-1], x.dtype))


@keras.saving.register_keras_serializable(package="normswap")
class Keras2BatchLayerNormalization(keras.layers.Layer):
    """`bln_layer` of A2Amir/Batch-Layer-Normalization, the paper's reference code.

    A compatibility layer: it computes what that tf.keras 2.1 layer computed, so that its
    trained files load with their function. Channels last; for an input (N, *S, C):

        batch statistics μ_b, σ²_b: per position (shape (1, *S, C)), over the batch axis
        feature statistics μ_f, σ²_f: per sample and position (shape (N, *S, 1)), over C
        y = γ · [x_f·(1/B − 10⁻⁴) + x_b·(1 − (1/B + 10⁻⁴))] / √C + β
        x_f = (x − μ_f)/√(σ²_f + ε),  x_b = (x − μ_b)/√(σ²_b + ε)

    where B is the configured `batch_size`, not the batch's. At inference each of the four
    statistics is the stored moving one when its flag is set, else the input's own: with
    a batch flag off the output depends on the other samples of the batch; with a feature
    flag on, sample i is normalized with the statistics stored for row i of a batch of
    exactly B rows (the stored (B, *S, 1) broadcast against the batch). Both are the
    reference implementation's design, reproduced.

    Training (`training=True` and `trainable`) uses the batch's own statistics for all
    four, as the reference did; the moving statistics are not updated (the reference
    summed them over an epoch and averaged them in a callback). normswap's
    `BatchLayerNormalization` is the layer to train: per-channel batch statistics, no
    /√C, no fixed batch size.

    Args:
        batch_size: B, the batch size the model was trained with (`self.batchsize` in
            the reference's config).
        epsilon: added to both variances (the reference's `offset` weight, 0.001).
        batch_moving_mean, batch_moving_var, feature_moving_mean, feature_moving_var:
            which statistics come from the moving weights at inference (defaults as in
            the reference: the batch ones).
        beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
            beta_constraint, gamma_constraint: of β and γ.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (C,); non-trainable `moving_batch_mean`,
    `moving_batch_variance` (1, *S, C), `moving_feature_mean`, `moving_feature_variance`
    (B, *S, 1). S must be known when the layer is built.

    Reference: Ziaee, Çano, "Batch Layer Normalization, A new normalization layer for
    CNNs and RNNs", ICAART 2022, arXiv:2209.08898; the code:
    github.com/A2Amir/Batch-Layer-Normalization (helpers/bln_layer.py).
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones")

    def __init__(self, batch_size, epsilon=1e-3, batch_moving_mean=True, batch_moving_var=True,
                 feature_moving_mean=False, feature_moving_var=False, **kwargs):
        options = {key: kwargs.pop(key, default) for key, default in self.weight_options.items()}
        super().__init__(**kwargs)
        name = type(self).__name__
        self.batch_size = check_count(batch_size, name, "batch_size", minimum=1)
        self.epsilon = check_epsilon(epsilon, name)
        self.batch_moving_mean = check_flag(batch_moving_mean, name, "batch_moving_mean")
        self.batch_moving_var = check_flag(batch_moving_var, name, "batch_moving_var")
        self.feature_moving_mean = check_flag(feature_moving_mean, name,
                                              "feature_moving_mean")
        self.feature_moving_var = check_flag(feature_moving_var, name, "feature_moving_var")
        set_weight_options(self, **options)
        self.supports_masking = True
        self.autocast = False

    def build(self, input_shape):
        name = type(self).__name__
        spatial = tuple(input_shape[1:-1])
        channels = input_shape[-1]
        if len(input_shape) < 2 or channels is None or None in spatial:
            raise ValueError(
                f"{name} keeps its batch statistics per position, so every axis but the "
                f"batch must be known. Received: input shape {tuple(input_shape)}")
        self.input_spec = keras.layers.InputSpec(shape=(None, *spatial, channels))
        self.gamma = add_configured_weight(self, "gamma", (channels,))
        self.beta = add_configured_weight(self, "beta", (channels,))
        batch_shape = (1, *spatial, channels)
        feature_shape = (self.batch_size, *spatial, 1)
        self.moving_batch_mean = self._statistic("moving_batch_mean", batch_shape, "zeros")
        self.moving_batch_variance = self._statistic("moving_batch_variance", batch_shape,
                                                     "ones")
        self.moving_feature_mean = self._statistic("moving_feature_mean", feature_shape,
                                                   "zeros")
        self.moving_feature_variance = self._statistic("moving_feature_variance",
                                                       feature_shape, "ones")

    def _statistic(self, name, shape, initializer):
        return self.add_weight(name=name, shape=shape, initializer=initializer,
                               trainable=False, autocast=False)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, compute_dtype_for_statistics(inputs.dtype))
        dtype = x.dtype
        moving = not (training and self.trainable)
        batch_mean, batch_variance = moments(x, (0,))
        feature_mean, feature_variance = moments(x, (len(x.shape) - 1,))
        if moving and self.batch_moving_mean:
            batch_mean = ops.cast(self.moving_batch_mean, dtype)
        if moving and self.batch_moving_var:
            batch_variance = ops.cast(self.moving_batch_variance, dtype)
        if moving and self.feature_moving_mean:
            feature_mean = ops.cast(self.moving_feature_mean, dtype)
        if moving and self.feature_moving_var:
            feature_variance = ops.cast(self.moving_feature_variance, dtype)
        mixed = per_position_mix(x, batch_mean, batch_variance, feature_mean,
                                 feature_variance, float(self.batch_size), self.epsilon)
        y = mixed * ops.cast(self.gamma, dtype) + ops.cast(self.beta, dtype)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "batch_size": self.batch_size,
            "epsilon": self.epsilon,
            "batch_moving_mean": self.batch_moving_mean,
            "batch_moving_var": self.batch_moving_var,
            "feature_moving_mean": self.feature_moving_mean,
            "feature_moving_var": self.feature_moving_var,
            **weight_options_config(self),
        })
        return config
