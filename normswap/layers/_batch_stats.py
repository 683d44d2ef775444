"""Statistics over the batch, shared by the layers whose normalization spans the batch.

SwitchNormalization (its BN branch), BatchRenormalization and BatchLayerNormalization all
need per-channel means and variances over the batch, the Keras moving-average update
`m ← m·momentum + batch·(1 − momentum)`, and, with `synchronized=True`, statistics of the
*global* batch under a `tf.distribute` strategy.

Moments are computed in two passes, mean first, then the mean of squared deviations from
it: the variance is never negative and does not suffer the cancellation of E[x²] − E[x]².
Synchronized moments all-reduce the sums and counts of each pass (Σx and n, then
Σ(x − μ)² and n), so every replica sees the statistics of the whole global batch.

`BatchStatisticsLayer` holds what the three layers share: the Keras-BN-style arguments
and their validation, γ/β/moving_mean/moving_variance, the affine step and get_config.

The all-reduce is the only backend-specific code of the bundled layers. It lives in
`_all_reduce_sum`, which imports TensorFlow lazily and only runs when a layer was built
with `synchronized=True`, which `check_synchronized` allows on the TensorFlow backend only.
"""

import keras
from keras import ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    check_axis,
    compute_dtype_for_statistics,
    per_channel,
)


def check_synchronized(synchronized, layer_name):
    """Refuse `synchronized=True` where it cannot work (any backend but TensorFlow)."""
    if synchronized not in (True, False):
        raise ValueError(
            f"{layer_name}: `synchronized` must be True or False. "
            f"Received: synchronized={synchronized!r}"
        )
    if synchronized and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"{layer_name}: synchronized=True (batch statistics all-reduced across the "
            "replicas of a tf.distribute strategy) is only supported with the TensorFlow "
            f"backend; the current backend is {keras.backend.backend()!r}. Use "
            "synchronized=False, or set KERAS_BACKEND=tensorflow."
        )
    return bool(synchronized)


def check_momentum(momentum, layer_name, name="momentum"):
    """A moving-average momentum must lie in [0, 1]."""
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"{layer_name}: `{name}` must be between 0 and 1 (the weight kept by the "
            f"moving average at each step, e.g. 0.99). Received: {name}={momentum}"
        )
    return momentum


def check_epsilon(epsilon, layer_name):
    """ε must be positive (it keeps 1/√(variance + ε) finite)."""
    epsilon = float(epsilon)
    if not epsilon > 0.0:
        raise ValueError(
            f"{layer_name}: `epsilon` must be a positive float (e.g. 1e-3). "
            f"Received: epsilon={epsilon}"
        )
    return epsilon


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


class BatchStatisticsLayer(keras.layers.Layer):
    """What the three batch-spanning layers share: arguments, γ/β, moving mean/variance.

    Not a layer to use on its own. Subclasses implement `call` and may create more
    weights in `build_statistics(channels)`. The conventions are Keras BatchNormalization's:
    `training=True` on a layer with `trainable=False` still runs in inference mode (the
    frozen-backbone convention), weights stay float32 under mixed precision
    (`self.autocast = False`) and statistics are computed in float32. A mask passes
    through to the next layer unchanged, but masked positions still count in the
    statistics (Keras BN excludes them).
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
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
        super().__init__(**kwargs)
        name = type(self).__name__
        self.axis = check_axis(axis, name)
        self.momentum = check_momentum(momentum, name)
        self.epsilon = check_epsilon(epsilon, name)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.synchronized = check_synchronized(synchronized, name)
        self.supports_masking = True
        self.autocast = False
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        channels = channel_count(input_shape, self.axis, type(self).__name__)
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self.axis: channels})
        shape = (channels,)
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma", shape=shape, initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
                trainable=True, autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta", shape=shape, initializer=self.beta_initializer,
                regularizer=self.beta_regularizer, constraint=self.beta_constraint,
                trainable=True, autocast=False,
            )
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer=self.moving_mean_initializer,
            trainable=False, autocast=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape,
            initializer=self.moving_variance_initializer, trainable=False, autocast=False,
        )
        self.build_statistics(channels)

    def build_statistics(self, channels):
        """Hook for subclasses: create further weights (after the four above)."""

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

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": keras.initializers.serialize(
                self.moving_mean_initializer),
            "moving_variance_initializer": keras.initializers.serialize(
                self.moving_variance_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
        })
        return config
