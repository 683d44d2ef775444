"""A per-channel affine map: what a BatchNormalization computes at inference."""

import keras
from keras import initializers, ops

from normswap.layers._axes import channel_axis, compute_dtype_for_statistics, per_channel


@keras.saving.register_keras_serializable(package="normswap")
class ChannelAffine(keras.layers.Layer):
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

    def __init__(self, axis=-1, use_offset=True, scale_initializer="ones",
                 offset_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.use_offset = use_offset
        self.scale_initializer = initializers.get(scale_initializer)
        self.offset_initializer = initializers.get(offset_initializer)
        self.supports_masking = True
        self.autocast = False

    def build(self, input_shape):
        axis = channel_axis(self.axis, len(input_shape))
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(f"The channel axis {self.axis} of input {input_shape} must be known.")
        self.scale = self.add_weight(
            name="scale", shape=(channels,), initializer=self.scale_initializer,
            autocast=False,
        )
        self.offset = None
        if self.use_offset:
            self.offset = self.add_weight(
                name="offset", shape=(channels,), initializer=self.offset_initializer,
                autocast=False,
            )

    def call(self, inputs, mask=None):
        rank = len(inputs.shape)
        axis = channel_axis(self.axis, rank)
        dtype = compute_dtype_for_statistics(inputs.dtype)
        x = ops.cast(inputs, dtype)
        y = x * per_channel(ops.cast(self.scale, dtype), axis, rank)
        if self.offset is not None:
            y = y + per_channel(ops.cast(self.offset, dtype), axis, rank)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "axis": self.axis,
            "use_offset": self.use_offset,
            "scale_initializer": initializers.serialize(self.scale_initializer),
            "offset_initializer": initializers.serialize(self.offset_initializer),
        })
        return config
