"""InstanceNormalization as keras-contrib computed it: ε added to the standard deviation."""

import keras
from keras import ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    check_axis,
    compute_dtype_for_statistics,
    per_channel,
)
from normswap.layers._checks import check_epsilon, check_flag
from normswap.layers._weights import (
    add_configured_weight,
    set_weight_options,
    weight_arguments,
    weight_options_config,
)


def std_normalize(x, axes, epsilon):
    """(x − μ) / (σ + ε) over `axes`, σ the biased standard deviation (ε on σ, not σ²)."""
    mean = ops.mean(x, axis=axes, keepdims=True)
    std = ops.sqrt(ops.mean(ops.square(x - mean), axis=axes, keepdims=True))
    return (x - mean) / (std + epsilon)


@keras.saving.register_keras_serializable(package="normswap")
class Keras2InstanceNormalization(keras.layers.Layer):
    """The InstanceNormalization of keras-contrib: y = γ·(x − μ)/(σ + ε) + β.

    A compatibility layer: it computes what keras-contrib's layer
    (keras_contrib/layers/normalization/instancenormalization.py, Keras 2) computed, so
    that its trained files load with their function. Per sample, over every axis except
    the batch and `axis`:

        μ = mean(x),  σ = √mean((x − μ)²)  (biased)
        y = γ · (x − μ) / (σ + ε) + β

    ε is added to the standard deviation, not to the variance, so no Keras layer computes
    this exactly (GroupNormalization(groups=-1) is (x − μ)/√(σ² + ε)). With `axis=None`
    (keras-contrib's default) the statistics span every non-batch axis — a per-sample
    LayerNormalization of the whole sample — and γ, β are single numbers (shape (1,)).
    With an integer `axis` γ and β are per channel; a rank-2 input then has nothing to
    normalize over and is refused, as keras-contrib refused it.

    Training and inference compute the same function (no batch statistics).

    Args:
        axis: the channel axis, or None (the default) for one set of statistics and one
            γ, β per sample.
        epsilon: added to σ. Defaults to 1e-3 (keras-contrib's).
        center, scale: whether to add β / multiply by γ.
        beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
            beta_constraint, gamma_constraint: as in Keras normalization layers.
        **kwargs: base Layer arguments (name, dtype, ...).

    Weights: `gamma`, `beta` of shape (C,), or (1,) with axis=None, when scale / center.

    Reference: Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing
    Ingredient for Fast Stylization", arXiv:1607.08022; the Keras 2 layer:
    github.com/keras-team/keras-contrib.
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones")

    def __init__(self, axis=None, epsilon=1e-3, center=True, scale=True, **kwargs):
        options = {key: kwargs.pop(key, default) for key, default in self.weight_options.items()}
        super().__init__(**kwargs)
        name = type(self).__name__
        self.axis = None if axis is None else check_axis(axis, name)
        if self.axis == 0:
            raise ValueError(f"{name}: axis 0 is the batch, not a channel axis. Received: "
                             "axis=0 (use None for one set of statistics per sample)")
        self.epsilon = check_epsilon(epsilon, name)
        self.center = check_flag(center, name, "center")
        self.scale = check_flag(scale, name, "scale")
        set_weight_options(self, **options)
        self.supports_masking = True
        self.autocast = False
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        name = type(self).__name__
        rank = len(input_shape)
        if self.axis is None:
            shape = (1,)
        else:
            if rank == 2:
                raise ValueError(
                    f"{name}: a rank-2 input has no axis to normalize over besides its "
                    f"channels; use axis=None. Received: axis={self.axis}, input shape "
                    f"{tuple(input_shape)}")
            shape = (channel_count(input_shape, self.axis, name),)
        self.input_spec = keras.layers.InputSpec(ndim=rank)
        if self.scale:
            self.gamma = add_configured_weight(self, "gamma", shape)
        if self.center:
            self.beta = add_configured_weight(self, "beta", shape)

    def _broadcast(self, vector, rank, dtype):
        vector = ops.cast(vector, dtype)
        if self.axis is None:
            return ops.reshape(vector, [1] * rank)
        return per_channel(vector, channel_axis(self.axis, rank), rank)

    def call(self, inputs, mask=None):
        rank = len(inputs.shape)
        axes = tuple(range(1, rank))
        if self.axis is not None:
            axes = tuple(a for a in axes if a != channel_axis(self.axis, rank))
        x = ops.cast(inputs, compute_dtype_for_statistics(inputs.dtype))
        y = std_normalize(x, axes, self.epsilon)
        if self.gamma is not None:
            y = y * self._broadcast(self.gamma, rank, x.dtype)
        if self.beta is not None:
            y = y + self._broadcast(self.beta, rank, x.dtype)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                       "scale": self.scale, **weight_options_config(self)})
        return config
