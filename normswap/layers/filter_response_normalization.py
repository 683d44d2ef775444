"""Filter Response Normalization with a Thresholded Linear Unit (FRN + TLU)."""

import keras
from keras import initializers, ops

from normswap.layers._axes import (
    channel_axis,
    channel_count,
    compute_dtype_for_statistics,
    per_channel,
    spatial_axes,
)
from normswap.layers._channel_layer import ChannelLayer
from normswap.layers._checks import check_epsilon
from normswap.layers._weights import add_configured_weight, weight_arguments

#: The paper's initial value of the learned part ε_l of the epsilon.
LEARNED_EPSILON_INIT = 1e-4


def inv_instance_rms(x, axis=-1, epsilon=1e-6):
    """1 / √(ν² + ε), ν² being the mean of x² over the spatial axes, per (sample, channel).

    No centring: ν² is the mean square, not the variance. `axis` is the channel axis;
    every axis other than the batch (0) and `axis` is spatial. A rank-2 input (N, C)
    has no spatial axis, so ν² = x² element by element. The result keeps the reduced
    axes (size 1) so it broadcasts against `x`, and is float32 for float16/bfloat16
    inputs (x² overflows float16). `epsilon` may be a tensor (a learned epsilon).
    """
    rank = len(x.shape)
    axis = channel_axis(axis, rank)
    x = ops.cast(x, compute_dtype_for_statistics(x.dtype))
    reduce = spatial_axes(axis, rank)
    nu2 = ops.mean(ops.square(x), axis=reduce, keepdims=True) if reduce else ops.square(x)
    return ops.rsqrt(nu2 + ops.cast(epsilon, x.dtype))


@keras.saving.register_keras_serializable(package="normswap")
class FilterResponseNormalization(ChannelLayer):
    """Filter Response Normalization, optionally followed by a Thresholded Linear Unit.

    Per sample n and channel c, with the spatial axes being every axis except the batch
    and `axis`:

        ν²    = mean over the spatial axes of x²          (no mean subtracted)
        x̂     = x / √(ν² + ε)
        z     = max(γ · x̂ + β, τ)    if use_tlu
        z     = γ · x̂ + β            otherwise

    γ (`gamma`), β (`beta`) and τ (`tau`) are per-channel weights, initialised to 1, 0
    and 0. ε is `|epsilon|`, or `|epsilon| + |ε_l|` with `learned_epsilon=True`, where
    ε_l is a trainable scalar weight `epsilon_l` initialised to 1e-4 (the paper's
    "1e-6 + |ε_l|" for layers whose spatial extent is 1×1).

    Nothing depends on other samples of the batch and nothing is tracked over time, so
    training and inference compute the same function, at any batch size.

    The TLU is FRN's activation: with τ = 0 it is a ReLU. When FRN replaces a
    BatchNormalization that is followed by a ReLU, the TLU takes the ReLU's place;
    where no ReLU followed, use `use_tlu=False` (a TLU where there was no ReLU
    changes the function).

    Inputs of rank 3 to 5 (Conv1D/2D/3D feature maps) are the paper's case; any rank
    ≥ 2 works. **Rank-2 inputs** (N, C), e.g. after a Dense layer, have no spatial axis:
    ν² is then x² itself, so x̂ = x / √(x² + ε), which is ≈ sign(x) for |x| ≫ √ε: a
    defined, smooth function, but one that discards the magnitude of each activation.
    The same happens for rank ≥ 3 inputs whose spatial extent is 1 (1×1 maps). The paper
    recommends `learned_epsilon=True` there, so the layer can learn how much magnitude to
    keep. A rank-1 input (no channel axis) raises a ValueError.

    Under mixed precision the weights stay float32, ν² and the whole map are computed in
    float32 (x² overflows float16 beyond |x| ≈ 256) and the result is cast to the
    layer's compute dtype.

    Args:
        axis: the channel axis: -1 for channels_last (default), 1 for channels_first.
        epsilon: the fixed part of ε, default 1e-6 (the paper's). Must be ≥ 0, and > 0
            unless `learned_epsilon=True`.
        learned_epsilon: add a trainable scalar `epsilon_l` (init 1e-4) to ε. Default False.
        use_tlu: apply the TLU max(·, τ) and create `tau`. Default True.
        beta_initializer, gamma_initializer, tau_initializer: initializers of β, γ, τ
            (default "zeros", "ones", "zeros").
        beta_regularizer, gamma_regularizer, tau_regularizer: optional regularizers.
        beta_constraint, gamma_constraint, tau_constraint: optional constraints.
        **kwargs: base Layer arguments (`name`, `dtype`, `trainable`, ...).

    Reference: S. Singh, S. Krishnan, "Filter Response Normalization Layer: Eliminating
    Batch Dependence in the Training of Deep Neural Networks", CVPR 2020,
    arXiv:1911.09737.
    """

    weight_options = weight_arguments(beta="zeros", gamma="ones", tau="zeros")

    def __init__(self, axis=-1, epsilon=1e-6, learned_epsilon=False, use_tlu=True, **kwargs):
        super().__init__(axis=axis, **kwargs)
        self.epsilon = check_epsilon(
            epsilon, "FilterResponseNormalization", allow_zero=bool(learned_epsilon),
            hint=(" 0 is allowed with learned_epsilon=True (ε = |ε_l| then); the paper's "
                  "fixed ε is 1e-6."))
        self.learned_epsilon = bool(learned_epsilon)
        self.use_tlu = bool(use_tlu)

    def build(self, input_shape):
        channels = channel_count(input_shape, self.axis, "FilterResponseNormalization")
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={self.axis: channels}
        )
        shape = (channels,)
        self.gamma = add_configured_weight(self, "gamma", shape)
        self.beta = add_configured_weight(self, "beta", shape)
        self.tau = add_configured_weight(self, "tau", shape) if self.use_tlu else None
        self.epsilon_l = None
        if self.learned_epsilon:
            self.epsilon_l = self.add_weight(
                name="epsilon_l", shape=(),
                initializer=initializers.Constant(LEARNED_EPSILON_INIT),
                autocast=False,
            )

    def effective_epsilon(self):
        """ε as used in the forward pass: |epsilon| (+ |ε_l| when learned), float32."""
        eps = ops.convert_to_tensor(abs(self.epsilon), dtype="float32")
        if self.epsilon_l is not None:
            eps = eps + ops.abs(ops.cast(self.epsilon_l, "float32"))
        return eps

    def call(self, inputs, training=None, mask=None):
        rank = len(inputs.shape)
        axis = channel_axis(self.axis, rank)
        dtype = compute_dtype_for_statistics(inputs.dtype)
        x = ops.cast(inputs, dtype)
        # γ/√(ν² + ε) is one small per-(sample, channel) factor: the full-size
        # activations only see x·factor + β (and the TLU's maximum).
        factor = (ops.cast(inv_instance_rms(x, axis, self.effective_epsilon()), dtype)
                  * per_channel(ops.cast(self.gamma, dtype), axis, rank))
        z = x * factor + per_channel(ops.cast(self.beta, dtype), axis, rank)
        if self.tau is not None:
            z = ops.maximum(z, per_channel(ops.cast(self.tau, dtype), axis, rank))
        return ops.cast(z, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "epsilon": self.epsilon,
            "learned_epsilon": self.learned_epsilon,
            "use_tlu": self.use_tlu,
        })
        return config


#: Short alias, as in `normswap.FRN`.
FRN = FilterResponseNormalization
