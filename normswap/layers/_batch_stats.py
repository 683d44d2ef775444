"""Statistics over the batch, shared by the layers whose normalization spans the batch.

SwitchNormalization (its BN branch), BatchRenormalization, BatchLayerNormalization and
EvoNormB0 all need per-channel statistics over the batch, the Keras moving-average update
`m ← m·momentum + batch·(1 − momentum)`, and, with `synchronized=True`, statistics of the
*global* batch under a `tf.distribute` strategy.

Moments are computed in two passes, mean first, then the mean of squared deviations from
it: the variance is never negative and does not suffer the cancellation of E[x²] − E[x]².
Synchronized moments all-reduce the sums and counts of each pass (Σx and n, then
Σ(x − μ)² and n), so every replica sees the statistics of the whole global batch.

`BatchStatisticsLayer` holds what those layers share: the Keras-BN-style arguments and
their validation, γ/β, the moving statistics (by default a moving mean and variance), the
affine step and get_config.

The all-reduce is the only backend-specific code of the bundled layers. It lives in
`_all_reduce_sum`, which imports TensorFlow lazily and only runs when a layer was built
with `synchronized=True`, which `check_synchronized` allows on the TensorFlow backend only.
"""

import keras
from keras import ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    compute_dtype_for_statistics,
    per_channel,
)
from normswap.layers._channel_layer import ChannelLayer
from normswap.layers._checks import (
    check_epsilon,
    check_momentum,
    check_synchronized,
)
from normswap.layers._weights import add_configured_weight, weight_arguments


def _all_reduce_sum(*tensors):
    """Sum each tensor over the replicas of the current tf.distribute replica context.

    Outside a strategy (default replica context, one replica) the tensors are returned
    unchanged, so a synchronized layer also runs on a single device.
    """
    import tensorflow as tf  # Only reached with synchronized=True on the TF backend.

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    # One all-reduce per tensor, always in the same order on every replica (as Keras's
    # own synchronized BatchNormalization does: batched NCCL all-reduces can deadlock).
    return tuple(context.all_reduce(tf.distribute.ReduceOp.SUM, t) for t in tensors)


def element_count(x, axes):
    """How many elements of `x` each reduction over `axes` sees, as a float32 scalar."""
    shape = ops.shape(x)
    count = 1
    for a in axes:
        count = count * shape[a]
    return ops.cast(count, "float32")


def reduce_mean(x, axes, synchronized=False):
    """Mean over `axes` (kept as size-1 dims), over the global batch when synchronized."""
    axes = tuple(axes)
    total = ops.sum(x, axis=axes, keepdims=True)
    count = ops.cast(element_count(x, axes), x.dtype)
    if synchronized:
        total, count = _all_reduce_sum(total, count)
    return total / count


def moments(x, axes, synchronized=False):
    """Mean and biased variance of `x` over `axes`, kept as size-1 dims (two passes)."""
    mean = reduce_mean(x, axes, synchronized)
    variance = reduce_mean(ops.square(x - mean), axes, synchronized)
    return mean, variance


def global_batch_size(x, synchronized=False):
    """The batch size of `x` (summed over the replicas when synchronized), float32."""
    size = ops.cast(ops.shape(x)[0], "float32")
    if synchronized:
        (size,) = _all_reduce_sum(size)
    return size


def update_moving_average(variable, value, momentum):
    """variable ← variable·momentum + value·(1 − momentum), `value` reshaped to fit."""
    value = ops.reshape(ops.cast(value, variable.dtype), variable.shape)
    variable.assign(variable * momentum + value * (1.0 - momentum))




#: The moving statistics of a batch-normalizing layer (no regularizers or constraints).
BN_STATISTICS = ("moving_mean", "moving_variance")


class BatchStatisticsLayer(ChannelLayer):
    """What the batch-spanning layers share: arguments, γ/β, moving statistics, config.

    Not a layer to use on its own. Subclasses implement `call`, list the
    `<weight>_initializer/regularizer/constraint` arguments they take in `weight_options`
    (γ's and β's included, see `ChannelLayer`), and create their moving
    statistics in `build_statistics(channels)` (by default `moving_mean` and
    `moving_variance`, from `moving_mean_initializer` and `moving_variance_initializer`).
    The conventions are Keras BatchNormalization's: `training=True` on a layer with
    `trainable=False` still runs in inference mode (the frozen-backbone convention),
    weights stay float32 under mixed precision and statistics are computed in float32.
    A mask passes through to the next layer unchanged, but masked positions still count
    in the statistics (Keras BN excludes them).
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones", moving_mean="zeros",
                                      moving_variance="ones", statistics=BN_STATISTICS)

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 synchronized=False, **kwargs):
        super().__init__(axis=axis, **kwargs)
        name = type(self).__name__
        self.momentum = check_momentum(momentum, name)
        self.epsilon = check_epsilon(epsilon, name)
        self.center = bool(center)
        self.scale = bool(scale)
        self.synchronized = check_synchronized(synchronized, name)
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        channels = channel_count(input_shape, self.axis, type(self).__name__)
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self.axis: channels})
        if self.scale:
            self.gamma = add_configured_weight(self, "gamma", (channels,))
        if self.center:
            self.beta = add_configured_weight(self, "beta", (channels,))
        self.build_statistics(channels)

    def build_statistics(self, channels):
        """Create the weights after γ and β: by default `moving_mean`, `moving_variance`."""
        self.moving_mean = add_configured_weight(
            self, "moving_mean", (channels,), trainable=False)
        self.moving_variance = add_configured_weight(
            self, "moving_variance", (channels,), trainable=False)

    def _training(self, training):
        """Whether this call trains: `training` is true and the layer is trainable."""
        return bool(training and self.trainable)

    def _prepare(self, inputs):
        """(float32-or-wider inputs, channel axis, rank) for the statistics."""
        rank = len(inputs.shape)
        axis = channel_axis(self.axis, rank)
        x = ops.cast(inputs, compute_dtype_for_statistics(inputs.dtype))
        return x, axis, rank

    def _vector(self, variable, axis, rank, dtype):
        """A (C,) weight broadcast along the channel axis, in `dtype`."""
        return per_channel(ops.cast(variable, dtype), axis, rank)

    def _affine(self, normalized, axis, rank):
        """γ·x̂ + β, with the γ/β that exist."""
        if self.gamma is not None:
            normalized = normalized * self._vector(self.gamma, axis, rank, normalized.dtype)
        if self.beta is not None:
            normalized = normalized + self._vector(self.beta, axis, rank, normalized.dtype)
        return normalized

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "synchronized": self.synchronized,
        })
        return config
