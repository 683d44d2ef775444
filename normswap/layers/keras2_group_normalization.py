"""GroupNormalization as the Keras-2 libraries computed it: groups of contiguous memory."""

import keras
import numpy as np
from keras import ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    compute_dtype_for_statistics,
    per_channel,
)
from normswap.layers._batch_stats import moments
from normswap.layers._channel_layer import ChannelLayer
from normswap.layers._checks import check_count, check_epsilon, check_flag
from normswap.layers._weights import add_configured_weight, weight_arguments


def contiguous_group_normalize(x, groups, epsilon):
    """Each sample's values, in row-major order, cut into `groups` equal contiguous runs
    and normalized per run: (x − μ_run)/√(σ²_run + ε), σ² biased; same shape as `x`.

    This is what `reshape(x, [N, G] + dims[1:] with the channel dim divided by G)`
    followed by moments over every axis after the second computes: the reshape is
    row-major, so its G slices are contiguous runs of M/G values, M the size of one
    sample. Channel groups only when the channels lead the sample's memory (axis 1).
    """
    shape = ops.shape(x)
    runs = ops.reshape(x, (shape[0], groups, -1))
    mean, variance = moments(runs, (2,))
    return ops.reshape((runs - mean) * ops.rsqrt(variance + epsilon), shape)


def grouped_affine_channels(sample_shape, axis, groups):
    """For each position of one sample (shape `sample_shape`, channels on `axis` of the
    full input, batch excluded), the channel whose γ and β keras-contrib applied there.

    keras-contrib multiplies in the grouped layout (N, G, d₁, …, C/G, …): the value at
    grouped index (g, …, j, …) gets γ[g·C/G + j]. Returned as an int array of
    `sample_shape`; it equals each position's own channel index when the channels lead
    the sample (axis 1) or G = 1.
    """
    rank = len(sample_shape) + 1
    axis = channel_axis(axis, rank)
    grouped = list(sample_shape)
    per_group = grouped[axis - 1] // groups
    grouped[axis - 1] = per_group
    index = np.arange(per_group).reshape([per_group if a == axis - 1 else 1
                                          for a in range(len(grouped))])
    run = np.arange(groups).reshape([groups] + [1] * len(grouped))
    channels = np.broadcast_to(run * per_group + index, [groups] + grouped)
    return channels.reshape(sample_shape)


def own_channels(sample_shape, axis):
    """For each position of one sample, its own channel index (what per-channel γ uses)."""
    rank = len(sample_shape) + 1
    axis = channel_axis(axis, rank)
    count = sample_shape[axis - 1]
    index = np.arange(count).reshape([count if a == axis - 1 else 1
                                      for a in range(len(sample_shape))])
    return np.broadcast_to(index, sample_shape)


@keras.saving.register_keras_serializable(package="normswap")
class Keras2GroupNormalization(ChannelLayer):
    """The GroupNormalization of titu1994/Keras-Group-Normalization and of keras-contrib.

    A compatibility layer: it computes what those two Keras 2 layers computed, so that
    their trained files load with their function. Both reshape x (N, d₁, …, C, …) to
    (N, G, d₁, …, C/G, …) and take the moments over every axis after the second. The
    reshape is row-major, so group g of a sample is the g-th of G equal *contiguous runs*
    of its memory, not a set of channels:

        x̂ = (x − μ_run) / √(σ²_run + ε)        (μ, σ² biased, per sample and run)
        y = γ[c]·x̂ + β[c]                      (titu1994: c the value's own channel)
        y = γ[g·C/G + j]·x̂ + β[g·C/G + j]      (keras-contrib, `grouped_affine=True`:
                                                 g its run, j its index along the
                                                 divided channel axis)

    When the channels lead each sample's memory (`axis=1`: rank 2, or channels_first)
    the runs are the channel groups and both are group normalization; Keras's
    `GroupNormalization` is then the same function. For channels-last input of rank ≥ 3
    (N, H, W, C) with G dividing H, run g is the image rows g·H/G … (g+1)·H/G − 1 with all
    their channels (runs may also cut through a row): statistics over bands of rows, not
    channel groups, and keras-contrib also applies γ/β of the wrong channels. For new
    models use `keras.layers.GroupNormalization`.

    Training and inference compute the same function (no batch statistics).

    Args:
        groups: G, which must divide the channel count. Defaults to 32.
        axis: the channel axis. Defaults to -1.
        epsilon: added to the variance. Defaults to 1e-5 (both libraries').
        center, scale: whether to add β / multiply by γ.
        grouped_affine: apply γ/β in the grouped layout, as keras-contrib did (True), or
            per channel, as titu1994's layer did (False, the default).
        beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
            beta_constraint, gamma_constraint: as in Keras GroupNormalization.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` (C,), when scale / center.

    Reference: Wu, He, "Group Normalization", ECCV 2018, arXiv:1803.08494; the Keras 2
    layers: github.com/titu1994/Keras-Group-Normalization (group_norm.py) and
    github.com/keras-team/keras-contrib (keras_contrib/layers/normalization/
    groupnormalization.py).
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones")

    def __init__(self, groups=32, axis=-1, epsilon=1e-5, center=True, scale=True,
                 grouped_affine=False, **kwargs):
        super().__init__(axis=axis, **kwargs)
        name = type(self).__name__
        self.groups = check_count(groups, name, "groups", minimum=1)
        self.epsilon = check_epsilon(epsilon, name)
        self.center = check_flag(center, name, "center")
        self.scale = check_flag(scale, name, "scale")
        self.grouped_affine = check_flag(grouped_affine, name, "grouped_affine")
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        name = type(self).__name__
        channels = channel_count(input_shape, self.axis, name)
        if channels % self.groups:
            raise ValueError(
                f"{name}: groups={self.groups} must divide the {channels} channels on axis "
                f"{self.axis} of input shape {tuple(input_shape)}.")
        self.input_spec = keras.layers.InputSpec(ndim=len(input_shape),
                                                 axes={self.axis: channels})
        if self.scale:
            self.gamma = add_configured_weight(self, "gamma", (channels,))
        if self.center:
            self.beta = add_configured_weight(self, "beta", (channels,))

    def _affine_weight(self, vector, shape, axis, rank, dtype):
        vector = ops.cast(vector, dtype)
        if not self.grouped_affine:
            return per_channel(vector, axis, rank)
        # The vector laid out as keras-contrib broadcast it in the grouped layout, then
        # reshaped to one sample's layout.
        per_group = vector.shape[0] // self.groups
        layout = [1] * rank
        layout[axis] = per_group
        layout.insert(1, self.groups)
        grouped = [1, self.groups] + [per_group if a == axis else shape[a]
                                      for a in range(1, rank)]
        full = ops.broadcast_to(ops.reshape(vector, layout), grouped)
        return ops.reshape(full, [1] + [shape[a] for a in range(1, rank)])

    def call(self, inputs, mask=None):
        rank = len(inputs.shape)
        axis = channel_axis(self.axis, rank)
        x = ops.cast(inputs, compute_dtype_for_statistics(inputs.dtype))
        y = contiguous_group_normalize(x, self.groups, self.epsilon)
        shape = ops.shape(x)
        if self.gamma is not None:
            y = y * self._affine_weight(self.gamma, shape, axis, rank, x.dtype)
        if self.beta is not None:
            y = y + self._affine_weight(self.beta, shape, axis, rank, x.dtype)
        return ops.cast(y, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "groups": self.groups,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "grouped_affine": self.grouped_affine,
        })
        return config
