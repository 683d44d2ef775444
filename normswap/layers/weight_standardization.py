"""Weight-Standardized convolutions: the forward pass uses a per-output-channel standardized
kernel, while the stored kernel stays the raw one."""

import math

import keras
from keras import ops

from normswap.layers._checks import check_epsilon


def _fan_in_axes(rank, depthwise):
    # Conv kernels (*kernel_size, in // groups, filters): all axes but the last;
    # depthwise kernels (kh, kw, in, multiplier): the window, all axes but the last two.
    return tuple(range(rank - 2)) if depthwise else tuple(range(rank - 1))


def kernel_fan_in(kernel_shape, depthwise=False):
    """The fan-in of each output channel of a kernel: how many weights it standardizes over.

    For a Conv1D/2D/3D kernel of shape (*kernel_size, in // groups, filters), the
    product of all axes but the last (a Conv2D 3×3 kernel over 16 input channels: 144);
    for a DepthwiseConv2D kernel (kh, kw, in, multiplier), `depthwise=True`, the product
    of the window kh·kw. A fan-in of 1 (a 1×1 conv over one channel, a 1×1 depthwise
    conv) standardizes every weight to 0. `kernel_shape` is a tuple of ints.
    """
    kernel_shape = tuple(kernel_shape)
    return math.prod(kernel_shape[a] for a in _fan_in_axes(len(kernel_shape), depthwise))


def standardize_kernel(kernel, epsilon=1e-5, depthwise=False):
    """Ŵ = (W − mean(W)) / √(var(W) + ε), per output channel over its fan-in.

    For a Conv1D/2D/3D kernel of shape (*kernel_size, in // groups, filters) each output
    channel is a slice `kernel[..., o]` and the statistics run over all axes but the
    last. For a DepthwiseConv2D kernel of shape (kh, kw, in, multiplier) each
    (in, multiplier) pair is an output channel and the statistics run over (kh, kw)
    (`depthwise=True`). The variance is the biased one and ε sits inside the square
    root; the computation is float32 (float64 stays float64) and the result is returned
    in that dtype: cast it to the compute dtype yourself.
    """
    if keras.backend.standardize_dtype(kernel.dtype) != "float64":
        kernel = ops.cast(kernel, "float32")
    axes = _fan_in_axes(len(kernel.shape), depthwise)
    mean = ops.mean(kernel, axis=axes, keepdims=True)
    centred = kernel - mean
    variance = ops.mean(ops.square(centred), axis=axes, keepdims=True)
    return centred * ops.rsqrt(variance + ops.cast(epsilon, kernel.dtype))


def _check_fan_in(layer, fan_in):
    if fan_in < 2:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': each output channel has a fan-in of "
            f"{fan_in} weight, whose standardization is 0 (the layer would output only "
            "its bias). Weight Standardization needs a fan-in of at least 2; use the "
            "plain Keras layer here."
        )


class _WSConvMixin:
    """What the four WS layers share; placed before the Keras conv class in the MRO.

    `call` mirrors keras.layers.Conv1D/2D/3D.call (causal padding, bias, activation), with
    `standardized_kernel()` in place of `self.kernel`; WSDepthwiseConv2D overrides it to
    mirror DepthwiseConv2D.call the same way.
    """

    _ws_depthwise = False

    def _ws_init(self, ws_epsilon):
        self.ws_epsilon = check_epsilon(ws_epsilon, type(self).__name__, "ws_epsilon")

    def add_weight(self, *args, **kwargs):
        # Under mixed precision Keras hands every variable to `call` cast to the compute
        # dtype (float16) unless the variable itself opts out; `layer.autocast = False`
        # is not enough for a top-level call. The kernel opts out, so Ŵ is computed from
        # the float32 W and only the result is cast (`standardized_kernel`).
        if kwargs.get("name") == "kernel":
            kwargs["autocast"] = False
        return super().add_weight(*args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        _check_fan_in(self, kernel_fan_in(self.kernel.shape, self._ws_depthwise))

    def standardized_kernel(self):
        """The kernel the forward pass convolves with, in the layer's compute dtype."""
        return ops.cast(
            standardize_kernel(self.kernel, self.ws_epsilon, self._ws_depthwise),
            self.compute_dtype,
        )

    def _ws_finish(self, outputs, channels):
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (channels,)
            else:
                bias_shape = (1, channels) + (1,) * self.rank
            bias = ops.reshape(ops.cast(self.bias, outputs.dtype), bias_shape)
            # `+`, not ops.add: Keras's TensorFlow ops.add turns a (1, C, 1) bias into a
            # bias_add along the LAST axis when that axis also has C entries.
            outputs = outputs + bias
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        padding = self.padding
        if padding == "causal":  # Conv1D only, as in keras.layers.Conv1D.call
            inputs = ops.pad(inputs, self._compute_causal_padding())
            padding = "valid"
        outputs = ops.conv(
            inputs,
            self.standardized_kernel(),
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._ws_finish(outputs, self.filters)

    def get_config(self):
        config = super().get_config()
        config["ws_epsilon"] = self.ws_epsilon
        return config


_DOC = """{keras_name} whose forward pass convolves with the Weight-Standardized kernel.

    For each output channel o, over its fan-in ({fan_in}):

        Ŵ_o = (W_o − mean(W_o)) / √(var(W_o) + ε)

    (biased variance, ε = `ws_epsilon` inside the square root, computed in float32 even
    under mixed precision, then cast to the compute dtype). The stored `kernel` weight is
    the raw W, so `get_weights()`/`set_weights()` and saved files hold W, and a pretrained
    kernel can be copied in verbatim; `standardized_kernel()` returns Ŵ. Everything else
    ({keras_name}'s arguments, bias, activation, strides, padding, dilation,
    data_format{groups}) behaves as in `keras.layers.{keras_name}`.

    WS cannot reproduce a pretrained kernel: conv(x, W) = std(W)·conv(x, Ŵ) +
    mean(W)·Σ_patch x, and the second, input-dependent term is lost. It is meant for
    convolutions followed by a normalization (GroupNorm, LayerNorm, ...), which absorbs
    the scale. An output channel with a fan-in of 1 would standardize to 0, so `build`
    raises a ValueError then.

    Args:
        ws_epsilon: ε of the standardization, default 1e-5 (the value Qiao et al.'s
            reference code adds to the unbiased std; here it sits inside the square
            root of the biased variance, which keeps an all-constant kernel finite and
            is negligible against the variance of any trained kernel). Must be > 0.
        All other arguments: those of `keras.layers.{keras_name}`.

    Reference: S. Qiao, H. Wang, C. Liu, W. Shen, A. Yuille, "Micro-Batch Training with
    Batch-Channel Normalization and Weight Standardization", arXiv:1903.10520.
    """


@keras.saving.register_keras_serializable(package="normswap")
class WSConv1D(_WSConvMixin, keras.layers.Conv1D):
    __doc__ = _DOC.format(keras_name="Conv1D", fan_in="kernel axes 0, 1",
                          groups=", groups")

    def __init__(self, *args, ws_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._ws_init(ws_epsilon)


@keras.saving.register_keras_serializable(package="normswap")
class WSConv2D(_WSConvMixin, keras.layers.Conv2D):
    __doc__ = _DOC.format(keras_name="Conv2D", fan_in="kernel axes 0, 1, 2",
                          groups=", groups")

    def __init__(self, *args, ws_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._ws_init(ws_epsilon)


@keras.saving.register_keras_serializable(package="normswap")
class WSConv3D(_WSConvMixin, keras.layers.Conv3D):
    __doc__ = _DOC.format(keras_name="Conv3D", fan_in="kernel axes 0, 1, 2, 3",
                          groups=", groups")

    def __init__(self, *args, ws_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._ws_init(ws_epsilon)


@keras.saving.register_keras_serializable(package="normswap")
class WSDepthwiseConv2D(_WSConvMixin, keras.layers.DepthwiseConv2D):
    __doc__ = _DOC.format(
        keras_name="DepthwiseConv2D",
        fan_in="the (kh, kw) window of each (input channel, multiplier) pair of the "
               "(kh, kw, in, multiplier) kernel",
        groups="",
    )

    _ws_depthwise = True

    def __init__(self, *args, ws_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._ws_init(ws_epsilon)

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        outputs = ops.depthwise_conv(
            inputs,
            self.standardized_kernel(),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        channels = self.depth_multiplier * self._get_input_channel(inputs.shape)
        return self._ws_finish(outputs, channels)
