"""Stand-ins for the five seed implementations, written for tf_keras (the Keras 2 package).

Test fixtures only: normswap must load the `.h5` files that people wrote with these layers,
and the original code (standalone Keras 2.1–2.3, or tf.keras 2.1 for the BLN seed) cannot run
here. Each class below is an independent re-implementation that writes what the seed wrote:

- the same class name in the model config (`GroupNormalization` twice: titu1994's and
  keras-contrib's are different classes with the same saved name),
- the same `get_config` keys, in the same order, including the seeds' mistakes (FRN writes
  `axis` and `tau_initializer`, which its constructor rejects; `bln_layer` writes
  `self.batchsize` and cannot be rebuilt from its config),
- the same weights, created in the same order with the same names, shapes and trainable
  flags, so that the legacy `.h5` file (weights stored per layer in the order
  `trainable_weights + non_trainable_weights`) has the seed's layout,

and computes the seed's formula, defects included (see docs/seed-layers.md, written from the
seed sources). The `training=False` path is the one that matters; training paths are
implemented where it was cheap and are not meant to be bit-exact (the seeds' Keras 2.1/2.2
moving averages were zero-debiased, these use the plain update).

Nothing here registers with tf_keras or Keras 3: a file saved with these layers carries only
the bare class names, exactly as the seeds' files do. Import this module only in tests; it
imports tf_keras, which coexists with Keras 3 in one process (see make_files.py).
"""

import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras import backend as K
from tf_keras import constraints, initializers, regularizers
from tf_keras.layers import InputSpec, Layer

__all__ = [
    "BatchRenormalization",
    "ContribGroupNormalization",
    "ContribInstanceNormalization",
    "FRN",
    "SwitchNormalization",
    "TituGroupNormalization",
    "bln_layer",
    "custom_objects",
]


def _saved_as(name):
    """Give a class the name its seed saved under (tf_keras writes `cls.__name__`)."""

    def rename(cls):
        cls.__name__ = name
        cls.__qualname__ = name
        return cls

    return rename


def _non_channel_axes(rank, axis):
    """All axes of a rank-`rank` tensor except `axis` (negative axes allowed)."""
    axis = axis % rank
    return [i for i in range(rank) if i != axis]


def _broadcast_shape(rank, axis, size):
    shape = [1] * rank
    shape[axis] = size
    return shape


def _ema(variable, value, momentum):
    """Keras's moving average: v <- v * momentum + value * (1 - momentum)."""
    variable.assign(variable * momentum + tf.cast(value, variable.dtype) * (1.0 - momentum))


def _phase(training):
    """What a Keras 2 layer saw for `training`: None means the global learning phase."""
    if training is None:
        training = K.learning_phase()
    return training


# --- titu1994/keras-switchnorm: switchnorm.py ----------------------------------------------


@_saved_as("SwitchNormalization")
class SwitchNormalization(Layer):
    """titu1994's SwitchNormalization: a softmax-weighted mix of instance, layer and batch
    statistics. Inference: batch statistics come from the moving averages, instance and
    layer statistics from the sample itself. Seed defects kept: moving mean initialised to
    ones and moving variance to zeros (swapped); Bessel factor S/(S - 1 - eps) with S the
    product of the non-batch, non-channel dims (so it is negative for rank 2 / 1x1 maps).
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, final_gamma=False, center=True,
                 scale=True, beta_initializer="zeros", gamma_initializer="ones",
                 mean_weights_initializer="ones", variance_weights_initializer="ones",
                 moving_mean_initializer="ones", moving_variance_initializer="zeros",
                 beta_regularizer=None, gamma_regularizer=None, mean_weights_regularizer=None,
                 variance_weights_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 mean_weights_constraints=None, variance_weights_constraints=None, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        # final_gamma is folded into the initializer and never written to the config.
        self.gamma_initializer = initializers.get("zeros" if final_gamma else gamma_initializer)
        self.mean_weights_initializer = initializers.get(mean_weights_initializer)
        self.variance_weights_initializer = initializers.get(variance_weights_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.mean_weights_regularizer = regularizers.get(mean_weights_regularizer)
        self.variance_weights_regularizer = regularizers.get(variance_weights_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.mean_weights_constraints = constraints.get(mean_weights_constraints)
        self.variance_weights_constraints = constraints.get(variance_weights_constraints)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(f"Axis {self.axis} of the input must be known: {input_shape}")
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: channels})
        shape = (channels,)
        # Creation order (= the file's order after trainable/non-trainable split):
        # gamma, beta, moving_mean, moving_variance, mean_weights, variance_weights.
        self.gamma = self.add_weight(
            shape=shape, name="gamma", initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
        ) if self.scale else None
        self.beta = self.add_weight(
            shape=shape, name="beta", initializer=self.beta_initializer,
            regularizer=self.beta_regularizer, constraint=self.beta_constraint,
        ) if self.center else None
        self.moving_mean = self.add_weight(
            shape=shape, name="moving_mean", initializer=self.moving_mean_initializer,
            trainable=False)
        self.moving_variance = self.add_weight(
            shape=shape, name="moving_variance", initializer=self.moving_variance_initializer,
            trainable=False)
        self.mean_weights = self.add_weight(
            shape=(3,), name="mean_weights", initializer=self.mean_weights_initializer,
            regularizer=self.mean_weights_regularizer, constraint=self.mean_weights_constraints)
        self.variance_weights = self.add_weight(
            shape=(3,), name="variance_weights", initializer=self.variance_weights_initializer,
            regularizer=self.variance_weights_regularizer,
            constraint=self.variance_weights_constraints)
        self.built = True

    def call(self, inputs, training=None):
        rank = len(inputs.shape)
        axis = self.axis % rank
        channels = inputs.shape[axis]
        # Instance statistics: per sample and channel, over every other axis but the batch.
        spatial = [i for i in _non_channel_axes(rank, axis) if i != 0]
        mean_in = tf.reduce_mean(inputs, axis=spatial, keepdims=True)
        var_in = tf.reduce_mean(tf.square(inputs - mean_in), axis=spatial, keepdims=True)
        # Layer statistics: per sample, over the channels of the instance statistics.
        second_in = var_in + tf.square(mean_in)
        mean_ln = tf.reduce_mean(mean_in, axis=axis, keepdims=True)
        var_ln = tf.reduce_mean(second_in, axis=axis, keepdims=True) - tf.square(mean_ln)
        bshape = _broadcast_shape(rank, axis, channels)

        def mix(mean_bn, var_bn):
            wm = tf.nn.softmax(self.mean_weights)
            wv = tf.nn.softmax(self.variance_weights)
            mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * tf.reshape(mean_bn, bshape)
            var = wv[0] * var_in + wv[1] * var_ln + wv[2] * tf.reshape(var_bn, bshape)
            out = (inputs - mean) / tf.sqrt(var + self.epsilon)
            if self.scale:
                out = out * tf.reshape(self.gamma, bshape)
            if self.center:
                out = out + tf.reshape(self.beta, bshape)
            return out

        def inference():
            return mix(self.moving_mean, self.moving_variance)

        def train(update):
            mean_bn = tf.reduce_mean(mean_in, axis=0, keepdims=True)
            var_bn = tf.reduce_mean(second_in, axis=0, keepdims=True) - tf.square(mean_bn)
            if update:
                size = tf.cast(tf.reduce_prod([tf.shape(inputs)[i] for i in spatial]),
                               inputs.dtype)
                corrected = tf.reshape(var_bn, [-1]) * size / (size - (1.0 + self.epsilon))
                _ema(self.moving_mean, tf.reshape(mean_bn, [-1]), self.momentum)
                _ema(self.moving_variance, corrected, self.momentum)
            return mix(mean_bn, var_bn)

        if training in (0, False) and training is not None:
            return inference()
        phase = _phase(training)
        if phase is True or (isinstance(phase, int) and phase == 1):
            return train(update=True)
        return K.in_train_phase(lambda: train(update=False), inference, training=phase)

    def get_config(self):
        config = {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "mean_weights_initializer": initializers.serialize(self.mean_weights_initializer),
            "variance_weights_initializer":
                initializers.serialize(self.variance_weights_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer":
                initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "mean_weights_regularizer": regularizers.serialize(self.mean_weights_regularizer),
            "variance_weights_regularizer":
                regularizers.serialize(self.variance_weights_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "mean_weights_constraints": constraints.serialize(self.mean_weights_constraints),
            "variance_weights_constraints":
                constraints.serialize(self.variance_weights_constraints),
        }
        return {**super().get_config(), **config}

    def compute_output_shape(self, input_shape):
        return input_shape


# --- titu1994/BatchRenormalization: batch_renorm.py (Keras 2 version) -----------------------


@_saved_as("BatchRenormalization")
class BatchRenormalization(Layer):
    """titu1994's BatchRenormalization (the Keras 2 version of batch_renorm.py).

    Weights `<layer name>_gamma`, `_beta` (trainable), `_running_mean`, `_running_std`
    (non-trainable; `_running_std` holds a moving average of var_B + eps, a variance).
    The r_max / d_max / t schedule lived in plain backend variables that Keras 2 neither
    tracked nor saved: they restart at r_max = 1, d_max = 0, t = 0 in every process, and
    are kept untracked here so the file has the seed's four weights.

    `training=False` (what tf.keras passes in predict, or a user's explicit call) returns
    the batch-statistics output gamma * ((x - mu_B) / s_B * r + d) + beta, with r and d
    clipped by the schedule (r = 1, d = 0 before any training step). Only `training=None`
    with learning phase 0 (standalone Keras 2's predict) gives the running-statistics
    output gamma * (x - mean) / sqrt(running_std + eps) + beta.
    """

    def __init__(self, axis=-1, momentum=0.99, center=True, scale=True, epsilon=1e-3,
                 r_max_value=3., d_max_value=5., t_delta=1e-3, weights=None,
                 beta_initializer="zero", gamma_initializer="one",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 gamma_regularizer=None, beta_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        if axis != -1:
            raise NotImplementedError("There is currently a bug when using batch "
                                      "renormalisation and the TensorFlow backend.")
        super().__init__(**kwargs)
        self.supports_masking = True
        self.axis = axis
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.momentum = momentum
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.r_max_value = r_max_value
        self.d_max_value = d_max_value
        self.t_delta = t_delta
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        object.__setattr__(self, "_initial_weights_seed", weights)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(f"Axis {self.axis} of the input must be known: {input_shape}")
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: channels})
        shape = (channels,)
        self.gamma = self.add_weight(
            shape=shape, initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
            name=f"{self.name}_gamma") if self.scale else None
        self.beta = self.add_weight(
            shape=shape, initializer=self.beta_initializer,
            regularizer=self.beta_regularizer, constraint=self.beta_constraint,
            name=f"{self.name}_beta") if self.center else None
        self.running_mean = self.add_weight(
            shape=shape, initializer=self.moving_mean_initializer,
            name=f"{self.name}_running_mean", trainable=False)
        self.running_variance = self.add_weight(
            shape=shape, initializer=self.moving_variance_initializer,
            name=f"{self.name}_running_std", trainable=False)
        # The schedule state: untracked, unsaved, like the seed's K.variable()s.
        with tf.init_scope():
            state = {
                "r_max": tf.Variable(1.0, trainable=False, name=f"{self.name}_r_max"),
                "d_max": tf.Variable(0.0, trainable=False, name=f"{self.name}_d_max"),
                "t": tf.Variable(0.0, trainable=False, name=f"{self.name}_t"),
            }
        object.__setattr__(self, "_schedule", state)
        if self._initial_weights_seed is not None:
            self.set_weights(self._initial_weights_seed)
            object.__setattr__(self, "_initial_weights_seed", None)
        self.built = True

    def _batch_output(self, inputs):
        reduce = _non_channel_axes(len(inputs.shape), self.axis)
        mean_b, var_b = tf.nn.moments(inputs, axes=reduce)
        std_b = tf.sqrt(var_b + self.epsilon)
        running_std = tf.sqrt(self.running_variance + self.epsilon)
        r_max = self._schedule["r_max"]
        d_max = self._schedule["d_max"]
        r = tf.stop_gradient(tf.clip_by_value(std_b / running_std, 1.0 / r_max, r_max))
        d = tf.stop_gradient(
            tf.clip_by_value((mean_b - self.running_mean) / running_std, -d_max, d_max))
        out = ((inputs - mean_b) / std_b * r + d) * self.gamma + self.beta
        return out, mean_b, var_b

    def _running_output(self, inputs):
        out = (inputs - self.running_mean) / tf.sqrt(self.running_variance + self.epsilon)
        if self.scale:
            out = out * self.gamma
        if self.center:
            out = out + self.beta
        return out

    def _update(self, mean_b, var_b):
        _ema(self.running_mean, mean_b, self.momentum)
        # The seed averages std_B ** 2 = var_B + eps (eps then enters twice at inference).
        _ema(self.running_variance, var_b + self.epsilon, self.momentum)
        s = self._schedule
        t = s["t"]
        s["r_max"].assign(self.r_max_value / (1.0 + (self.r_max_value - 1.0) * tf.exp(-t)))
        s["d_max"].assign(self.d_max_value
                          / (1.0 + (self.d_max_value / 1e-3 - 1.0) * tf.exp(-2.0 * t)))
        t.assign_add(self.t_delta)

    def call(self, inputs, training=None):
        if training in (0, False) and training is not None:
            return self._batch_output(inputs)[0]
        phase = _phase(training)
        if phase is True or (isinstance(phase, int) and phase == 1):
            out, mean_b, var_b = self._batch_output(inputs)
            self._update(mean_b, var_b)
            return out
        return K.in_train_phase(lambda: self._batch_output(inputs)[0],
                                lambda: self._running_output(inputs), training=phase)

    def get_config(self):
        config = {
            "epsilon": self.epsilon,
            "axis": self.axis,
            "center": self.center,
            "scale": self.scale,
            "momentum": self.momentum,
            # The seed serializes its regularizers with initializers.serialize.
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer":
                initializers.serialize(self.moving_variance_initializer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "r_max_value": self.r_max_value,
            "d_max_value": self.d_max_value,
            "t_delta": self.t_delta,
        }
        return {**super().get_config(), **config}


# --- philipperemy/keras-frn: frn/frn.py ----------------------------------------------------


@_saved_as("FRN")
class FRN(Layer):
    """keras-frn's FRN: z = max(gamma * x / sqrt(mean_{axes 1,2}(x^2) + |eps|) + beta, tau).

    Weights tau, gamma, beta (all trainable, shape (C,), in that order). Channels-last
    rank 4 only in practice (the mean is over axes 1 and 2, hard-coded). `get_config`
    writes `axis` and `tau_initializer`; the constructor takes `tau_initializers` and no
    `axis`, so the layer cannot be rebuilt from its own config.
    """

    def __init__(self, epsilon=1e-6, beta_initializer="zeros", gamma_initializer="ones",
                 tau_initializers="zeros", beta_regularizer=None, gamma_regularizer=None,
                 tau_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 tau_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.epsilon = epsilon
        self.beta_initializer = initializers.get(beta_initializer)
        self.tau_initializer = initializers.get(tau_initializers)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.tau_regularizer = regularizers.get(tau_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.tau_constraint = constraints.get(tau_constraint)
        self.axis = -1

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        channels = input_shape[self.axis]
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: channels})
        shape = (channels,)
        self.tau = self.add_weight(shape=shape, name="tau", initializer=self.tau_initializer,
                                   regularizer=self.tau_regularizer,
                                   constraint=self.tau_constraint)
        self.gamma = self.add_weight(shape=shape, name="gamma",
                                     initializer=self.gamma_initializer,
                                     regularizer=self.gamma_regularizer,
                                     constraint=self.gamma_constraint)
        self.beta = self.add_weight(shape=shape, name="beta", initializer=self.beta_initializer,
                                    regularizer=self.beta_regularizer,
                                    constraint=self.beta_constraint)
        self.built = True

    def call(self, inputs, training=None):
        nu2 = tf.reduce_mean(tf.square(inputs), axis=[1, 2], keepdims=True)
        normed = inputs / tf.sqrt(nu2 + abs(self.epsilon))
        return tf.maximum(self.gamma * normed + self.beta, self.tau)

    def get_config(self):
        config = {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "tau_initializer": initializers.serialize(self.tau_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "tau_regularizer": regularizers.serialize(self.tau_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "tau_constraint": constraints.serialize(self.tau_constraint),
        }
        return {**super().get_config(), **config}

    def compute_output_shape(self, input_shape):
        return input_shape


# --- GroupNormalization: titu1994/Keras-Group-Normalization and keras-contrib ---------------


class _GroupNormBase(Layer):
    """What titu1994's and keras-contrib's GroupNormalization share: arguments, checks,
    weights (gamma, beta: trainable, shape (C,)) and config. They differ only in `call`."""

    def __init__(self, groups=32, axis=-1, epsilon=1e-5, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.groups = groups
        self.axis = axis
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(f"Axis {self.axis} of the input must be known: {input_shape}")
        if channels < self.groups:
            raise ValueError(f"Number of groups ({self.groups}) cannot be more than the "
                             f"number of channels ({channels}).")
        if channels % self.groups != 0:
            raise ValueError(f"Number of groups ({self.groups}) must be a multiple of the "
                             f"number of channels ({channels}).")
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: channels})
        shape = (channels,)
        self.gamma = self.add_weight(
            shape=shape, name="gamma", initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
        ) if self.scale else None
        self.beta = self.add_weight(
            shape=shape, name="beta", initializer=self.beta_initializer,
            regularizer=self.beta_regularizer, constraint=self.beta_constraint,
        ) if self.center else None
        self.built = True

    def _grouped_shape(self, inputs, dynamic):
        """[batch, groups, *rest] where rest is the input's non-batch shape with the channel
        axis divided by `groups`: the seeds' reshape target. For channels-last input this
        does NOT put a channel group on axis 1 - it cuts each sample's row-major memory
        (spatial..., C) into `groups` equal contiguous runs (whole image rows)."""
        rank = len(inputs.shape)
        axis = self.axis % rank
        dims = [tf.shape(inputs)[i] if dynamic else inputs.shape[i] for i in range(rank)]
        dims[axis] = inputs.shape[axis] // self.groups
        return [-1 if not dynamic else dims[0], self.groups] + dims[1:]

    def _normalize_groups(self, grouped):
        moments_axes = list(range(2, len(grouped.shape)))
        mean, var = tf.nn.moments(grouped, axes=moments_axes, keepdims=True)
        return (grouped - mean) / tf.sqrt(var + self.epsilon)

    def get_config(self):
        config = {
            "groups": self.groups,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}

    def compute_output_shape(self, input_shape):
        return input_shape


@_saved_as("GroupNormalization")
class TituGroupNormalization(_GroupNormBase):
    """titu1994's GroupNormalization (group_norm.py), saved as `GroupNormalization`.

    Reshapes x (N, d1, ..., C) to (N, G, d1, ..., C/G) (static shape: every dim must be
    known), normalizes over all axes after the second, reshapes back, then applies gamma
    and beta per true channel. Correct GN for rank 2 and for channels-first input; for
    channels-last rank >= 3 each "group" is a contiguous run of H/G image rows (all
    channels), not a set of channels.
    """

    def call(self, inputs, **kwargs):
        rank = len(inputs.shape)
        axis = self.axis % rank
        original = [-1] + inputs.shape.as_list()[1:]
        grouped = tf.reshape(inputs, self._grouped_shape(inputs, dynamic=False))
        out = tf.reshape(self._normalize_groups(grouped), original)
        bshape = _broadcast_shape(rank, axis, inputs.shape[axis])
        if self.scale:
            out = out * tf.reshape(self.gamma, bshape)
        if self.center:
            out = out + tf.reshape(self.beta, bshape)
        return out


@_saved_as("GroupNormalization")
class ContribGroupNormalization(_GroupNormBase):
    """keras-contrib's GroupNormalization, saved as `GroupNormalization`.

    Same reshape as titu1994's (dynamic shape, so unknown spatial dims are fine) and the
    same statistics, but gamma/beta are applied while still in the grouped layout, reshaped
    to (1, G, 1, ..., C/G): element at grouped position (g, ..., j) gets gamma[g*C/G + j].
    For channels-last rank >= 3 that is not the element's own channel (it is channel
    g*C/G + c mod (C/G), g the row-run index). Correct for rank 2 and channels-first.
    """

    def call(self, inputs, **kwargs):
        rank = len(inputs.shape)
        axis = self.axis % rank
        grouped = tf.reshape(inputs, tf.stack(self._grouped_shape(inputs, dynamic=True)))
        out = tf.reshape(self._normalize_groups(grouped), tf.shape(inputs))
        bshape = [1] * rank
        bshape[axis] = inputs.shape[axis] // self.groups
        bshape.insert(1, self.groups)

        def as_input_layout(vector):
            # The seed multiplies in the grouped layout; the same numbers, laid out like the
            # input. (Multiplying in the grouped layout directly lets TensorFlow's oneDNN
            # graph rewrite fuse the rank-2 case into a LayerNorm kernel that then fails
            # with "scale must be 1D tensor" in predict.)
            full = tf.broadcast_to(tf.reshape(vector, bshape), tf.shape(grouped))
            return tf.reshape(full, tf.shape(inputs))

        if self.scale:
            out = out * as_input_layout(self.gamma)
        if self.center:
            out = out + as_input_layout(self.beta)
        return out


# --- keras-contrib InstanceNormalization -----------------------------------------------------


@_saved_as("InstanceNormalization")
class ContribInstanceNormalization(Layer):
    """keras-contrib's InstanceNormalization: y = gamma * (x - mean) / (std + eps) + beta,
    statistics per sample over every axis but the batch and `axis` (eps added to the
    standard deviation, not the variance). axis=None (the default): statistics over all
    non-batch axes and scalar gamma/beta of shape (1,)."""

    def __init__(self, axis=None, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.axis = axis
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        ndim = len(input_shape)
        if self.axis == 0:
            raise ValueError("Axis cannot be zero")
        if self.axis is not None and ndim == 2:
            raise ValueError("Cannot specify axis for rank 1 tensor")
        self.input_spec = InputSpec(ndim=ndim)
        shape = (1,) if self.axis is None else (input_shape[self.axis],)
        self.gamma = self.add_weight(
            shape=shape, name="gamma", initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
        ) if self.scale else None
        self.beta = self.add_weight(
            shape=shape, name="beta", initializer=self.beta_initializer,
            regularizer=self.beta_regularizer, constraint=self.beta_constraint,
        ) if self.center else None
        self.built = True

    def call(self, inputs, training=None):
        rank = len(inputs.shape)
        reduce = list(range(1, rank))
        if self.axis is not None:
            reduce.remove(self.axis % rank)
        mean = tf.reduce_mean(inputs, axis=reduce, keepdims=True)
        std = tf.sqrt(tf.reduce_mean(tf.square(inputs - mean), axis=reduce, keepdims=True))
        out = (inputs - mean) / (std + self.epsilon)
        bshape = [1] * rank
        if self.axis is not None:
            bshape[self.axis] = inputs.shape[self.axis]
        if self.scale:
            out = out * tf.reshape(self.gamma, bshape)
        if self.center:
            out = out + tf.reshape(self.beta, bshape)
        return out

    def get_config(self):
        config = {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}


# --- A2Amir/Batch-Layer-Normalization: helpers/bln_layer.py (tf.keras 2.1) --------------------


class bln_layer(Layer):  # noqa: N801 - the seed's class name, as saved
    """A2Amir's Batch Layer Normalization layer.

    Weights, in the file's order: scale1, shift1 (trainable, (C,)); then non-trainable:
    `Variable` (the scalar offset 0.001, a bare tf.Variable that tf.keras tracked),
    moving_Bmean, moving_Bvar (shape (1, *input_shape[1:])), moving_Fmean, moving_Fvar
    (shape (batchsize, *input_shape[1:-1], 1)), `batchcount` (scalar).

    y = gamma * [x_f * (1/B - 1e-4) + x_b * (1 - 1/B - 1e-4)] / sqrt(C) + beta, with
    B = the configured batchsize, x_f = (x - mu_f) / sqrt(var_f + offset) over the channel
    axis of each position, x_b = (x - mu_b) / sqrt(var_b + offset) per position over the
    batch; at inference each of the four statistics comes from the moving weights or from
    the current input, chosen by the four flags. Config key `self.batchsize`.
    """

    def __init__(self, stateful, batchsize, batch_moving_mean=True, batch_moving_var=True,
                 feature_moving_mean=False, feature_moving_var=False, **kwargs):
        super().__init__(**kwargs)
        self.stateful = stateful
        self.batchsize = batchsize
        self.batch_moving_mean = batch_moving_mean
        self.batch_moving_var = batch_moving_var
        self.feature_moving_mean = feature_moving_mean
        self.feature_moving_var = feature_moving_var

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        rank = len(input_shape)
        if rank not in (2, 3, 4):
            raise ValueError("layer shape must be 2D or 3D or 4D")
        channels = input_shape[-1]
        batch_stat_shape = (1, *input_shape[1:])
        feature_stat_shape = (self.batchsize, *input_shape[1:-1], 1)
        self.gamma1 = self.add_weight(name="scale1", shape=(channels,), initializer="ones",
                                      trainable=True)
        self.beta1 = self.add_weight(name="shift1", shape=(channels,), initializer="zeros",
                                     trainable=True)
        # A bare variable assigned to an attribute: tf.keras tracks it as a non-trainable
        # weight named "Variable", saved between shift1 and moving_Bmean.
        self.offset = tf.Variable(0.001, dtype="float32", trainable=False)
        self.moving_Bmean = self.add_weight(name="moving_Bmean", shape=batch_stat_shape,
                                            initializer="zeros", trainable=False)
        self.moving_Bvar = self.add_weight(name="moving_Bvar", shape=batch_stat_shape,
                                           initializer="zeros", trainable=False)
        self.moving_Fmean = self.add_weight(name="moving_Fmean", shape=feature_stat_shape,
                                            initializer="zeros", trainable=False)
        self.moving_Fvar = self.add_weight(name="moving_Fvar", shape=feature_stat_shape,
                                           initializer="zeros", trainable=False)
        self.batch_count = tf.Variable(0, dtype="float32", name="batchcount", trainable=False)
        self.built = True

    def _mix(self, inputs, mean_b, std_b, mean_f, std_f):
        size = float(self.batchsize)
        x_f = (inputs - mean_f) / std_f
        x_b = (inputs - mean_b) / std_b
        mixed = x_f * (1.0 / size - 1e-4) + x_b * (1.0 - (1.0 / size + 1e-4))
        mixed = mixed / tf.sqrt(tf.cast(inputs.shape[-1], inputs.dtype))
        return self.gamma1 * mixed + self.beta1

    def _training(self, inputs):
        mean_b, var_b = tf.nn.moments(inputs, axes=[0], keepdims=True)
        mean_f, var_f = tf.nn.moments(inputs, axes=[-1], keepdims=True)
        # Sums over the epoch; a callback divides them by the step count at its end.
        self.moving_Bmean.assign_add(mean_b)
        self.moving_Bvar.assign_add(var_b)
        self.moving_Fmean.assign_add(mean_f)
        self.moving_Fvar.assign_add(var_f)
        return self._mix(inputs, mean_b, tf.sqrt(var_b + self.offset),
                         mean_f, tf.sqrt(var_f + self.offset))

    def _inference(self, inputs):
        mean_b, var_b = tf.nn.moments(inputs, axes=[0], keepdims=True)
        mean_f, var_f = tf.nn.moments(inputs, axes=[-1], keepdims=True)
        if self.batch_moving_mean:
            mean_b = self.moving_Bmean
        if self.batch_moving_var:
            var_b = self.moving_Bvar
        if self.feature_moving_mean:
            mean_f = self.moving_Fmean
        if self.feature_moving_var:
            var_f = self.moving_Fvar
        return self._mix(inputs, mean_b, tf.sqrt(var_b + self.offset),
                         mean_f, tf.sqrt(var_f + self.offset))

    def call(self, inputs, training=None):
        # The seed's call takes `training` without a default and switches with
        # tf.cond(tf.equal(training, True)); tf.keras 2.1 fed it the learning phase.
        phase = _phase(training)
        if isinstance(phase, (bool, int)):
            return self._training(inputs) if phase else self._inference(inputs)
        return tf.cond(tf.equal(phase, True), lambda: self._training(inputs),
                       lambda: self._inference(inputs))

    def update_mm_mv(self):
        """The seed callback's end-of-epoch step: sums -> means, variances Bessel-corrected."""
        count = self.batch_count
        size = float(self.batchsize)
        if float(count) > 0:
            self.moving_Bmean.assign(self.moving_Bmean / count)
            self.moving_Bvar.assign(self.moving_Bvar * (size / ((size - 1.0) * count)))
            self.moving_Fmean.assign(self.moving_Fmean / count)
            self.moving_Fvar.assign(self.moving_Fvar * (size / ((size - 1.0) * count)))

    def reset_states(self):
        for variable in (self.moving_Bmean, self.moving_Bvar, self.moving_Fmean,
                         self.moving_Fvar):
            variable.assign(tf.zeros_like(variable))

    def get_config(self):
        config = super().get_config()
        config.update({"stateful": self.stateful})
        config.update({"self.batchsize": self.batchsize})
        config.update({"batch_moving_mean": self.batch_moving_mean})
        config.update({"batch_moving_var": self.batch_moving_var})
        config.update({"feature_moving_mean": self.feature_moving_mean})
        config.update({"feature_moving_var": self.feature_moving_var})
        return config


def custom_objects(which_group_norm="titu1994"):
    """The custom_objects a tf_keras user would have passed to reload these files (for the
    seeds whose configs round-trip at all: FRN and bln_layer never reload). Only one
    `GroupNormalization` can be given: `which_group_norm` is "titu1994" or "contrib"."""
    group_norm = {"titu1994": TituGroupNormalization,
                  "contrib": ContribGroupNormalization}[which_group_norm]
    return {
        "SwitchNormalization": SwitchNormalization,
        "BatchRenormalization": BatchRenormalization,
        "FRN": FRN,
        "GroupNormalization": group_norm,
        "InstanceNormalization": ContribInstanceNormalization,
        "bln_layer": bln_layer,
    }


# Keep `np` and `tf_keras` importable from here for the fixtures' convenience.
_ = (np, tf_keras)
