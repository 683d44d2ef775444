"""Weight-Standardized convolutions: the forward pass equals a plain Keras convolution whose
kernel was standardized in NumPy, while the stored kernel stays the raw one."""

import keras
import numpy as np
import pytest
from keras import ops

from normswap.layers import (
    WSConv1D,
    WSConv2D,
    WSConv3D,
    WSDepthwiseConv2D,
    kernel_fan_in,
    standardize_kernel,
)
from tests.layers._common import (
    assert_config_round_trip,
    assert_finite_gradients,
    assert_save_load_round_trip,
    run_jit_training_steps,
    to_numpy,
)

KERAS_OF = {
    WSConv1D: keras.layers.Conv1D,
    WSConv2D: keras.layers.Conv2D,
    WSConv3D: keras.layers.Conv3D,
    WSDepthwiseConv2D: keras.layers.DepthwiseConv2D,
}

# (class, constructor arguments, channels_last input shape)
CASES = [
    (WSConv1D, dict(filters=4, kernel_size=3), (2, 9, 3)),
    (WSConv1D, dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2,
                    activation="relu"), (2, 9, 3)),
    (WSConv2D, dict(filters=5, kernel_size=3, padding="same", strides=2), (2, 7, 6, 3)),
    (WSConv2D, dict(filters=6, kernel_size=(3, 2), groups=2, dilation_rate=2,
                    use_bias=False), (2, 8, 7, 4)),
    (WSConv3D, dict(filters=3, kernel_size=2, activation="tanh"), (2, 4, 5, 4, 2)),
    (WSDepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2, padding="same"),
     (2, 6, 5, 3)),
    (WSDepthwiseConv2D, dict(kernel_size=(2, 3), strides=2, use_bias=False), (2, 7, 7, 4)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(CASES)]


def numpy_standardize(kernel, epsilon, depthwise):
    """Qiao et al. 2019, eq. (5): per output channel over its fan-in, float64 NumPy."""
    w = np.asarray(kernel, np.float64)
    fan_in = tuple(range(w.ndim - 2)) if depthwise else tuple(range(w.ndim - 1))
    mean = w.mean(axis=fan_in, keepdims=True)
    var = ((w - mean) ** 2).mean(axis=fan_in, keepdims=True)
    return (w - mean) / np.sqrt(var + epsilon)


def _raw_kernel(shape, seed=0, scale=0.3):
    """A kernel whose output channels have non-zero, different means and scales."""
    rng = np.random.default_rng(seed)
    spread = rng.uniform(0.2, 3.0, size=shape[-1])
    offset = rng.normal(0.0, 1.0, size=shape[-1])
    return (scale * (spread * rng.normal(size=shape) + offset)).astype("float32")


class _PlainTwin:
    """The plain Keras conv with a given kernel, its bias added in NumPy on the channel axis
    (then its activation).

    Keras 3.15's TensorFlow `ops.add` (which its convs use for the bias) puts a
    channels_first (1, C, 1, ...) bias on the LAST axis when that axis also has C entries,
    so a plain Keras conv is not a trustworthy reference for the bias.
    """

    def __init__(self, cls, kwargs, shape, data_format):
        plain_kwargs = {**kwargs, "use_bias": False, "activation": None}
        self.conv = KERAS_OF[cls](data_format=data_format, **plain_kwargs)
        self.conv.build(shape)
        self.activation = keras.activations.get(kwargs.get("activation"))
        self.axis = 1 if data_format == "channels_first" else -1
        self.bias = None

    def set_weights(self, weights):
        self.conv.set_weights(weights[:1])
        self.bias = weights[1] if len(weights) > 1 else None

    def __call__(self, x):
        y = to_numpy(self.conv(x))
        if self.bias is not None:
            shape = [1] * y.ndim
            shape[self.axis] = -1
            y = y + np.asarray(self.bias).reshape(shape).astype(y.dtype)
        return to_numpy(self.activation(y))


def _pair(cls, kwargs, shape, data_format, kernel_scale=0.3, seed=0, ws_epsilon=1e-5):
    """A built WS layer with a random raw kernel, and the plain Keras twin with Ŵ."""
    if data_format == "channels_first":
        shape = (shape[0], shape[-1]) + shape[1:-1]
    ws = cls(data_format=data_format, ws_epsilon=ws_epsilon, **kwargs)
    ws.build(shape)
    weights = ws.get_weights()
    weights[0] = _raw_kernel(weights[0].shape, seed, kernel_scale)
    if len(weights) > 1:
        bias = np.random.default_rng(seed + 1).normal(size=weights[1].shape)
        weights[1] = bias.astype("float32")
    ws.set_weights(weights)
    plain = _PlainTwin(cls, kwargs, shape, data_format)
    depthwise = cls is WSDepthwiseConv2D
    plain.set_weights([numpy_standardize(weights[0], ws_epsilon, depthwise).astype("float32")]
                      + weights[1:])
    x = np.random.default_rng(seed + 2).normal(1.0, 1.0, size=shape).astype("float32")
    return ws, plain, weights, x


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("cls,kwargs,shape", CASES, ids=IDS)
def test_forward_equals_plain_conv_with_numpy_standardized_kernel(cls, kwargs, shape,
                                                                  data_format):
    ws, plain, raw, x = _pair(cls, kwargs, shape, data_format)
    expected = to_numpy(plain(x))
    np.testing.assert_allclose(to_numpy(ws(x)), expected, rtol=1e-4, atol=1e-4)
    # the stored kernel is the raw one, unchanged
    for a, b in zip(ws.get_weights(), raw):
        np.testing.assert_array_equal(a, b)
    # and WS really changes the forward pass: the raw kernel gives something else
    plain.set_weights(raw)
    assert np.abs(to_numpy(plain(x)) - expected).max() > 1e-2


@pytest.mark.parametrize("depthwise", [False, True])
def test_standardize_kernel_matches_numpy(depthwise):
    kernel = _raw_kernel((3, 3, 4, 5), seed=4)
    got = to_numpy(standardize_kernel(kernel, 1e-5, depthwise=depthwise))
    np.testing.assert_allclose(got, numpy_standardize(kernel, 1e-5, depthwise),
                               rtol=1e-5, atol=1e-5)
    axes = (0, 1) if depthwise else (0, 1, 2)
    np.testing.assert_allclose(got.mean(axis=axes), 0.0, atol=1e-5)
    var = kernel.astype(np.float64).var(axis=axes)
    np.testing.assert_allclose(got.std(axis=axes), np.sqrt(var / (var + 1e-5)), rtol=1e-4)
    assert np.all(np.sqrt(var / (var + 1e-5)) > 0.99)  # ≈ unit std: ε is small here


@pytest.mark.parametrize("cls,kwargs,shape", CASES, ids=IDS)
def test_kernel_fan_in_counts_what_each_output_channel_standardizes_over(cls, kwargs, shape):
    layer = cls(**kwargs)
    layer.build(shape)
    kernel_shape = tuple(layer.kernel.shape)
    depthwise = cls is WSDepthwiseConv2D
    # NumPy: the size of one output channel's slice of the kernel
    if depthwise:
        expected = np.zeros(kernel_shape)[..., 0, 0].size
    else:
        expected = np.zeros(kernel_shape)[..., 0].size
    assert kernel_fan_in(kernel_shape, depthwise=depthwise) == expected
    assert kernel_fan_in((3, 3, 16, 32)) == 144
    assert kernel_fan_in((3, 3, 16, 2), depthwise=True) == 9
    assert kernel_fan_in((1, 1, 1, 8)) == 1


def test_constant_kernel_stays_finite_and_fan_in_one_raises():
    # W − mean(W) is float32 round-off (~1e-7) here, divided by √ε: finite and ≈ 0
    out = to_numpy(standardize_kernel(np.full((3, 3, 2, 4), 0.7, "float32"), 1e-5))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="fan-in of 1"):
        WSConv2D(4, 1)(np.zeros((1, 3, 3, 1), "float32"))
    with pytest.raises(ValueError, match="fan-in of 1"):
        WSDepthwiseConv2D(1)(np.zeros((1, 3, 3, 2), "float32"))
    with pytest.raises(ValueError, match="Received: ws_epsilon"):
        WSConv2D(4, 3, ws_epsilon=0.0)


# TensorFlow's CPU kernels have no float16 NCHW/NCW convolution: a plain
# keras.layers.Conv1D/Conv2D(data_format="channels_first", dtype="mixed_float16") fails the
# same way there (grouped, 3-D and depthwise convs go through XLA and work). Those two
# combinations are therefore checked on the JAX backend only.
_TF_CPU_NO_FP16_NCHW = pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="TF CPU has no float16 channels_first Conv1D/Conv2D kernel (plain Keras fails too)",
)
MIXED_CASES = [
    pytest.param(*CASES[0], "channels_last", id="WSConv1D-channels_last"),
    pytest.param(*CASES[0], "channels_first", id="WSConv1D-channels_first",
                 marks=_TF_CPU_NO_FP16_NCHW),
    pytest.param(*CASES[2], "channels_last", id="WSConv2D-channels_last"),
    pytest.param(*CASES[2], "channels_first", id="WSConv2D-channels_first",
                 marks=_TF_CPU_NO_FP16_NCHW),
    pytest.param(*CASES[3], "channels_first", id="WSConv2D-grouped-channels_first"),
    pytest.param(*CASES[4], "channels_last", id="WSConv3D-channels_last"),
    pytest.param(*CASES[4], "channels_first", id="WSConv3D-channels_first"),
    pytest.param(*CASES[5], "channels_last", id="WSDepthwiseConv2D-channels_last"),
    pytest.param(*CASES[5], "channels_first", id="WSDepthwiseConv2D-channels_first"),
]


@pytest.mark.parametrize("cls,kwargs,shape,data_format", MIXED_CASES)
def test_mixed_precision_standardizes_in_float32(cls, kwargs, shape, data_format):
    # Two regimes where var(W) ≫ ε, so Ŵ has unit scale and the output is O(1):
    # - W ~ 1e-7 is subnormal in float16 (steps of 6e-8): standardizing a float16 copy
    #   of the kernel is off by several percent;
    # - W ~ 1e-3: W² ~ 1e-6 is subnormal in float16, so float16 statistics are off too.
    # The stored kernel stays float32 and Ŵ is computed from it in float32, so the
    # float16 output matches the float32 one to float16 precision. (The activation is
    # left out: float16 tanh alone differs from float32 tanh by ~1e-2 on TF.)
    kwargs = {k: v for k, v in kwargs.items() if k != "activation"}
    for kernel_scale, ws_epsilon in [(1e-7, 1e-20), (1e-3, 1e-10)]:
        ws, plain, raw, x = _pair(cls, kwargs, shape, data_format,
                                  kernel_scale=kernel_scale, ws_epsilon=ws_epsilon)
        mixed = cls(data_format=data_format, dtype="mixed_float16", ws_epsilon=ws_epsilon,
                    **kwargs)
        mixed.build(x.shape)
        mixed.set_weights(raw)
        assert all(w.dtype == "float32" for w in mixed.weights)
        out = mixed(ops.cast(x, "float16"))
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        out = to_numpy(ops.cast(out, "float32"))
        expected = to_numpy(plain(x))
        assert np.isfinite(out).all()
        assert np.abs(expected).max() > 0.5
        error = np.abs(out - expected).max() / np.abs(expected).max()
        assert error <= 5e-3, (kernel_scale, error)


@pytest.mark.parametrize("cls,kwargs,shape", [CASES[1], CASES[3], CASES[4], CASES[6]],
                         ids=["WSConv1D", "WSConv2D", "WSConv3D", "WSDepthwiseConv2D"])
def test_config_round_trip(cls, kwargs, shape):
    ws, plain, raw, x = _pair(cls, kwargs, shape, "channels_last", ws_epsilon=1e-3)
    np.testing.assert_allclose(to_numpy(ws(x)), to_numpy(plain(x)), rtol=1e-4, atol=1e-4)
    clone = assert_config_round_trip(ws, x, dict(ws_epsilon=1e-3))
    for a, b in zip(clone.get_weights(), raw):  # the clone got the raw kernel
        np.testing.assert_array_equal(a, b)


def _multi_model():
    """One model holding every WS layer (both layouts), for save/load and training."""
    in1 = keras.Input((9, 3))
    in2 = keras.Input((6, 6, 3))
    in3 = keras.Input((2, 4, 4, 4))
    a = WSConv1D(4, 3, padding="causal", name="ws1")(in1)
    a = keras.layers.GlobalAveragePooling1D()(a)
    b = WSConv2D(4, 3, padding="same", groups=1, name="ws2")(in2)
    b = WSDepthwiseConv2D(3, depth_multiplier=2, name="wsdw")(b)
    b = keras.layers.GlobalAveragePooling2D()(b)
    c = WSConv3D(3, 2, data_format="channels_first", ws_epsilon=1e-4, name="ws3")(in3)
    c = keras.layers.GlobalAveragePooling3D(data_format="channels_first")(c)
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([a, b, c]))
    return keras.Model([in1, in2, in3], out)


def _multi_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 9, 3)).astype("float32"),
            rng.normal(size=(n, 6, 6, 3)).astype("float32"),
            rng.normal(size=(n, 2, 4, 4, 4)).astype("float32")]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load(tmp_path, suffix):
    model = _multi_model()
    weights = [_raw_kernel(w.shape, seed=i) for i, w in enumerate(model.get_weights())]
    model.set_weights(weights)
    loaded = assert_save_load_round_trip(model, _multi_inputs(2), tmp_path / f"ws{suffix}",
                                         rtol=1e-5, atol=1e-6)
    for name, cls in [("ws1", WSConv1D), ("ws2", WSConv2D), ("wsdw", WSDepthwiseConv2D),
                      ("ws3", WSConv3D)]:
        assert type(loaded.get_layer(name)) is cls
    assert loaded.get_layer("ws3").ws_epsilon == 1e-4
    for a, b in zip(weights, loaded.get_weights()):  # raw kernels, stored verbatim
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls,kwargs,shape", [CASES[0], CASES[3], CASES[4], CASES[5]],
                         ids=["WSConv1D", "WSConv2D", "WSConv3D", "WSDepthwiseConv2D"])
def test_gradients_finite_and_orthogonal_to_the_kernel_mean(cls, kwargs, shape):
    ws, _, _, x = _pair(cls, kwargs, shape, "channels_last")
    grads = assert_finite_gradients(ws, x)
    # Ŵ does not change when W_o is shifted or scaled, so the kernel gradient of each
    # output channel sums to zero over its fan-in (a property plain convs lack).
    fan_in = (0, 1) if cls is WSDepthwiseConv2D else tuple(range(grads[0].ndim - 1))
    np.testing.assert_allclose(grads[0].sum(axis=fan_in), 0.0,
                               atol=1e-4 * np.abs(grads[0]).sum())


def test_jit_compiled_training_steps():
    run_jit_training_steps(_multi_model(), _multi_inputs(8),
                           np.random.default_rng(1).normal(size=(8, 1)))


def test_channels_first_bias_lands_on_the_channel_axis():
    """Regression: with (N, C, T) outputs and T == C, Keras's TensorFlow ops.add applied a
    (1, C, 1) bias along the last axis. Checked against NumPy, not against a Keras conv
    (keras.layers.Conv1D has the same defect)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    layer = WSConv1D(4, 1, data_format="channels_first", bias_initializer="random_normal")
    y = np.asarray(keras.ops.convert_to_numpy(layer(x)))
    kernel = layer.kernel.numpy().astype(np.float64)[0]  # (in, out)
    centred = kernel - kernel.mean(axis=0, keepdims=True)
    standardized = centred / np.sqrt(centred.var(axis=0, keepdims=True) + layer.ws_epsilon)
    expected = np.einsum("nit,io->not", x, standardized) + layer.bias.numpy()[None, :, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
