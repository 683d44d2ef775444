"""A per-channel affine map: what a BatchNormalization computes at inference."""

import keras
from keras import ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    compute_dtype_for_statistics,
    per_channel,
)
from normswap.layers._channel_layer import ChannelLayer
from normswap.layers._checks import check_flag
from normswap.layers._weights import add_configured_weight, weight_arguments


@keras.saving.register_keras_serializable(package="normswap")
class ChannelAffine(ChannelLayer):
    """y = x · scale + offset, one `scale` and one `offset` per channel along `axis`.

    A BatchNormalization at inference is exactly this map with
    scale = γ / √(v + ε) and offset = β − μ · scale, where μ and v are its moving
    mean and variance. normswap's `frozenbn` target swaps a BN for it: the model keeps
    its inference function, the statistics stop moving, and the batch no longer matters
    (the "frozen BN" of detection backbones).

    Args:
        axis: the channel axis (-1 for channels_last, 1 for channels_first).
        use_offset: whether to add the per-channel `offset`.
        scale_initializer, offset_initializer: initializers of the two weights.

    The map runs in float32 under mixed precision and casts back to the input dtype.
    """

    weight_options = weight_arguments(scale="ones", offset="zeros")

    def __init__(self, axis=-1, use_offset=True, **kwargs):
        super().__init__(axis=axis, **kwargs)
        self.use_offset = check_flag(use_offset, "ChannelAffine", "use_offset")

    def build(self, input_shape):
        shape = (channel_count(input_shape, self.axis, "ChannelAffine"),)
        self.scale = add_configured_weight(self, "scale", shape)
        self.offset = add_configured_weight(self, "offset", shape) if self.use_offset else None

    def call(self, inputs, mask=None):
        rank = len(inputs.shape)
        axis = channel_axis(self.axis, rank)
        dtype = compute_dtype_for_statistics(inputs.dtype)
        x = ops.cast(inputs, dtype)
        y = x * per_channel(ops.cast(self.scale, dtype), axis, rank)
        if self.offset is not None:
            y = y + per_channel(ops.cast(self.offset, dtype), axis, rank)
        return ops.cast(y, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["use_offset"] = self.use_offset
        return config
