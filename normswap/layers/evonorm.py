"""EvoNorm-S0: a batch-independent normalization-activation layer found by search."""

import keras
from keras import ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    compute_dtype_for_statistics,
    per_channel,
    per_sample_channel_shape,
    spatial_axes,
)
from normswap.layers._channel_layer import ChannelLayer
from normswap.layers._checks import check_count, check_epsilon
from normswap.layers._groups import groups_for
from normswap.layers._weights import add_configured_weight, weight_arguments


def group_variance(x, groups, axis=-1):
    """The (biased) variance of each sample's groups, as a small (N, groups, 1) tensor.

    The variance runs over the spatial axes and the C/`groups` consecutive channels of
    each group (channel axis `axis`), computed in float32 for float16/bfloat16 inputs.
    `groups` must divide C.

    It is assembled from per-(sample, channel) moments over the spatial axes with the
    law of total variance, var_g = mean_{c∈g}(var_c) + mean_{c∈g}((μ_c − μ_g)²): the
    full-size input is only read by the per-channel reductions of `ops.moments`, and
    the group step works on the small (N, C) moments. Nothing is computed as
    E[x²] − E[x]²: `ops.moments` takes two passes (mean, then squared deviations) on
    TensorFlow and JAX, and the between-channel term is a mean of squared deviations
    too. (PyTorch's `ops.moments` does compute E[x²] − E[x]², which can come out
    slightly negative: var_c is clamped at 0.) The one first-order rounding effect is
    that of the float32 channel means μ_c in the between-channel term: for activations
    whose mean is 10⁴ times their standard deviation, the group std's relative error
    was 6e-5 (2e-7 when reducing the grouped tensor directly); at |μ|/σ ≤ 100 it is
    below 1e-6. A rank-2 input (N, C) has no spatial axis: there μ_c = x and var_c = 0.
    """
    rank = len(x.shape)
    axis = channel_axis(axis, rank)
    channels = x.shape[axis]
    if channels % groups:
        raise ValueError(
            f"groups={groups} does not divide the {channels} channels of input "
            f"shape {tuple(x.shape)}."
        )
    x = ops.cast(x, compute_dtype_for_statistics(x.dtype))
    grouped_shape = (-1, groups, channels // groups)
    reduce = spatial_axes(axis, rank)
    if reduce:
        channel_mean, channel_variance = ops.moments(x, axes=reduce, keepdims=True)
        channel_mean = ops.reshape(channel_mean, grouped_shape)
        channel_variance = ops.maximum(channel_variance, 0.0)
        within = ops.mean(ops.reshape(channel_variance, grouped_shape), axis=2,
                          keepdims=True)
    else:
        channel_mean = ops.reshape(x, grouped_shape)
        within = None
    group_mean = ops.mean(channel_mean, axis=2, keepdims=True)
    between = ops.mean(ops.square(channel_mean - group_mean), axis=2, keepdims=True)
    return between if within is None else within + between


@keras.saving.register_keras_serializable(package="normswap")
class EvoNormS0(ChannelLayer):
    """EvoNorm-S0: y = x · sigmoid(v · x) / group_std(x) · γ + β.

    Per sample, `group_std(x)` = √(var(x) + ε), the (biased) variance taken over the
    spatial axes and the channels of the group each channel belongs to, exactly as
    GroupNormalization groups channels (consecutive blocks of C/G). `v`, `gamma` (γ) and
    `beta` (β) are per-channel weights initialised to 1, 1 and 0. The numerator
    x · sigmoid(v · x) is a Swish, so the layer is a normalization and an activation in
    one: where it replaces a BatchNormalization followed by a ReLU, it replaces both.
    There are no moving statistics and no batch dependence: training and inference
    compute the same function. (EvoNormB0, `normswap.layers.EvoNormB0`, is the
    batch-statistics sibling from the same paper.)

    The group count actually used, `groups_used` (set in `build`), is the largest
    divisor of the channel count C that is ≤ `groups`: 32 groups cannot split 24, 72 or
    144 channels, so those get 24. For rank-2 inputs (N, C), which have no spatial axis,
    the group statistics run over the channels of the group only, and groups are kept
    at ≥ 2 channels (count ≤ C // 2); a rank-2 input with C = 1 raises a ValueError.
    No warning is emitted when the count changes: callers read `groups_used`. The config
    keeps `groups` as given, so a reloaded layer makes the same choice. Inputs of rank 2
    to 5 are supported (any rank ≥ 2 works).

    Under mixed precision the weights stay float32, the whole map is computed in
    float32 and the result is cast to the layer's compute dtype.

    Args:
        axis: the channel axis: -1 for channels_last (default), 1 for channels_first.
        groups: the requested number of groups, a positive integer (default 32, the
            paper's); see `groups_used`.
        epsilon: ε added to the group variance, default 1e-5. Must be > 0.
        center: create and add β. Default True.
        scale: create and multiply by γ. Default True.
        beta_initializer, gamma_initializer, v_initializer: default "zeros", "ones",
            "ones".
        beta_regularizer, gamma_regularizer, v_regularizer: optional regularizers.
        beta_constraint, gamma_constraint, v_constraint: optional constraints.
        **kwargs: base Layer arguments (`name`, `dtype`, `trainable`, ...).

    Reference: H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation
    Layers", NeurIPS 2020, arXiv:2004.02967.
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones", v="ones")

    def __init__(self, axis=-1, groups=32, epsilon=1e-5, center=True, scale=True, **kwargs):
        super().__init__(axis=axis, **kwargs)
        self.groups = check_count(groups, "EvoNormS0", "groups", minimum=1)
        self.groups_used = None
        self.epsilon = check_epsilon(epsilon, "EvoNormS0")
        self.center = bool(center)
        self.scale = bool(scale)

    def build(self, input_shape):
        channels = channel_count(input_shape, self.axis, "EvoNormS0")
        try:
            self.groups_used = groups_for(channels, self.groups, len(input_shape))
        except ValueError as error:
            raise ValueError(f"EvoNormS0 '{self.name}': {error}") from None
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={self.axis: channels}
        )
        shape = (channels,)
        self.gamma = add_configured_weight(self, "gamma", shape) if self.scale else None
        self.beta = add_configured_weight(self, "beta", shape) if self.center else None
        self.v = add_configured_weight(self, "v", shape)

    def call(self, inputs, training=None, mask=None):
        rank = len(inputs.shape)
        axis = channel_axis(self.axis, rank)
        dtype = compute_dtype_for_statistics(inputs.dtype)
        x = ops.cast(inputs, dtype)
        channels = x.shape[axis]
        groups = self.groups_used
        v = per_channel(ops.cast(self.v, dtype), axis, rank)
        # One factor per (sample, channel), γ/√(var_g + ε), computed on small tensors:
        # the full-size activations only see x·sigmoid(v·x)·factor + β.
        inv_std = ops.rsqrt(group_variance(x, groups, axis)
                            + ops.cast(self.epsilon, dtype))  # (N, G, 1)
        if self.gamma is not None:
            gamma = ops.reshape(ops.cast(self.gamma, dtype), (1, groups, channels // groups))
            factor = inv_std * gamma
        else:
            factor = ops.repeat(inv_std, channels // groups, axis=2)
        factor = ops.reshape(factor, per_sample_channel_shape(axis, rank, channels))
        y = x * ops.sigmoid(v * x) * factor
        if self.beta is not None:
            y = y + per_channel(ops.cast(self.beta, dtype), axis, rank)
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "groups": self.groups,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        })
        return config
