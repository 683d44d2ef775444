"""Axis bookkeeping shared by the bundled normalization layers.

Every layer normalizes per channel along one `axis` (the BatchNormalization convention:
-1 for channels_last, 1 for channels_first) and works for inputs of rank 2 to 5. The
constructor checks the argument (`check_axis`); `build` and `call` resolve it against the
input's rank (`channel_axis`, `channel_count`).
"""

import numbers

import keras
from keras import ops


def check_axis(axis, layer_name):
    """A layer's `axis` argument as an int, or a clear error naming `layer_name`.

    One integer, or a list/tuple holding one (accepted as Keras BatchNormalization does);
    whether it fits an input is only known in `build` (`channel_axis`).
    """
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(
            f"{layer_name} normalizes along a single channel axis, given as an integer "
            f"(-1 for channels_last, 1 for channels_first). Received: axis={axis!r}"
        )
    return int(axis)


def channel_axis(axis, rank):
    """The non-negative channel axis of a rank-`rank` input, or a clear error."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ValueError(
                f"Only a single channel axis is supported. Received: axis={axis}"
            )
        axis = axis[0]
    resolved = axis + rank if axis < 0 else axis
    if not 0 < resolved < rank:
        raise ValueError(
            f"axis={axis} is not a channel axis of a rank-{rank} input "
            "(axis 0 is the batch)."
        )
    return resolved


def channel_count(input_shape, axis, layer_name):
    """The size of the channel axis `axis` of `input_shape`, which must be known."""
    channels = input_shape[channel_axis(axis, len(input_shape))]
    if channels is None:
        raise ValueError(
            f"{layer_name} needs a known channel count: axis {axis} of input shape "
            f"{tuple(input_shape)} is None."
        )
    return channels


def spatial_axes(axis, rank):
    """Axes other than the batch and the channel axis (empty for rank 2).

    `axis` must be non-negative (resolve it with `channel_axis` first).
    """
    return tuple(a for a in range(1, rank) if a != axis)


def batch_axes(axis, rank):
    """The batch axis and the spatial axes: what a per-channel batch statistic reduces."""
    return (0,) + spatial_axes(axis, rank)


def broadcast_shape(axis, rank, channels):
    """Shape that broadcasts a per-channel vector against a rank-`rank` input."""
    shape = [1] * rank
    shape[axis] = channels
    return tuple(shape)


def per_channel(vector, axis, rank):
    """Reshape a (C,) weight so it broadcasts along `axis` of a rank-`rank` input."""
    return ops.reshape(vector, broadcast_shape(axis, rank, vector.shape[0]))


def compute_dtype_for_statistics(dtype):
    """float32 for float16/bfloat16 inputs (x² overflows float16), else the input dtype."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def per_sample_channel_shape(axis, rank, channels):
    """Shape (-1, 1, …, C, …, 1): a per-(sample, channel) factor of a rank-`rank` input."""
    return (-1,) + broadcast_shape(axis, rank, channels)[1:]
