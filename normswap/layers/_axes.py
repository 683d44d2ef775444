"""Axis bookkeeping shared by the bundled normalization layers.

Every layer normalizes per channel along one `axis` (the BatchNormalization convention:
-1 for channels_last, 1 for channels_first) and works for inputs of rank 2 to 5.
"""

import keras
from keras import ops


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


def spatial_axes(axis, rank):
    """Axes other than the batch and the channel axis (empty for rank 2)."""
    return tuple(a for a in range(1, rank) if a != axis)


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
