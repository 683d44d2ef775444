"""How a BatchNormalization's learned numbers carry into what replaces it.

Pure math on arrays first (like torch's `fuse_conv_bn_weights`), then the thin wrappers
that read a BN site and build or fill Keras layers with it (like `fuse_conv_bn_eval`).
Every target module takes its carry from here; no target imports another.

The math, per channel c, for a BN with γ, β, moving mean μ, moving variance v and ε:

    inference affine    s = γ / √(v + ε),   o = β − μ·s       (BN(x) = x·s + o)
    fold into W, b      W' = W·s (per output channel),   b' = b·s + o
    mean-free layers    where the BN folds, its whole affine goes into the producer, so
                        the new layer (FRN, EvoNorm-S0) sees the BN's output itself and
                        starts with γ = 1, β = 0; elsewhere γ and β are copied.

The group-count rule of groupnorm and EvoNorm lives with the layers (`layers/_groups.py`)
and is re-exported here.
"""

import keras
import numpy as np

from normswap.layers._groups import auto_groups, groups_for  # noqa: F401 - re-exported

ALL_STATISTICS = ["gamma", "beta", "moving_mean", "moving_variance", "epsilon"]

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
FOLDABLE = (keras.layers.Dense,) + _CONVS + _TRANSPOSED + _DEPTHWISE + _SEPARABLE


# ---------------------------------------------------------------------------------------
# Pure math (NumPy, float64)


def inference_affine(gamma, beta, mean, variance, epsilon):
    """(s, o) with BN(x) = x·s + o at inference: s = γ/√(v + ε), o = β − μ·s, computed in
    float64 whatever the inputs' dtype."""
    gamma, beta, mean, variance = (np.asarray(v, np.float64) for v in (gamma, beta, mean, variance))
    scale = gamma / np.sqrt(variance + epsilon)
    return scale, beta - mean * scale


def scale_output_channels(kernel, scale, layout="standard"):
    """`kernel` with each output channel multiplied by `scale`.

    layout "standard": Dense and Conv kernels (..., in, out) — and a separable conv's
    pointwise kernel; "transposed": Conv*Transpose kernels (..., out, in); "depthwise":
    Depthwise kernels (..., in, multiplier) whose output channel in·multiplier + m is
    scaled by scale[in·multiplier + m]. Computed in float64.
    """
    kernel, scale = np.asarray(kernel, np.float64), np.asarray(scale)  # float64 products
    if layout == "standard":
        return kernel * scale
    if layout == "transposed":
        return kernel * scale[:, None]
    if layout == "depthwise":
        return kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    raise ValueError(f"unknown kernel layout {layout!r}: 'standard', 'transposed' or 'depthwise'")


def fold_weights(kernel, bias, scale, offset, layout="standard"):
    """(W', b') of a linear producer with a per-channel affine x·s + o after it folded in:
    W' = W·s per output channel, b' = b·s + o (`bias` None for a producer without one),
    in float64."""
    bias = np.asarray(0.0 if bias is None else bias, np.float64)  # float64 products
    return scale_output_channels(kernel, scale, layout), bias * scale + offset


# ---------------------------------------------------------------------------------------
# Reading a BN and filling layers


def bn_numbers(layer):
    """The BN's γ, β, moving mean and variance as float64 arrays (γ=1, β=0 where absent)."""
    mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    gamma = layer.gamma.numpy() if layer.scale else np.ones_like(mean)
    beta = layer.beta.numpy() if layer.center else np.zeros_like(mean)
    return tuple(np.asarray(v, np.float64) for v in (gamma, beta, mean, variance))


def bn_affine(layer):
    """The per-channel (scale, offset) a BN applies at inference, in float64."""
    return inference_affine(*bn_numbers(layer), float(layer.epsilon))


def assign(variable, value):
    """Set a Keras variable from a NumPy value, in the variable's own dtype."""
    variable.assign(np.asarray(value).astype(variable.dtype))


def site_affine(site):
    """The per-channel γ and β of a site's layer (a BN's, or a compatibility layer's, a
    scalar broadcast to every channel), float64; 1 and 0 where absent."""
    if site.is_batchnorm:
        gamma, beta, _, _ = bn_numbers(site.layer)
        return gamma, beta
    values = []
    for name, default in (("gamma", 1.0), ("beta", 0.0)):
        variable = getattr(site.layer, name, None)
        value = default if variable is None else variable.numpy()
        values.append(np.array(np.broadcast_to(np.ravel(value)[:site.channels],
                                               (site.channels,)), np.float64))
    return tuple(values)


def carry_affine(site, new_layer, gamma_name="gamma", beta_name="beta"):
    """Copy the BN's γ and β (those it has) into the new layer's per-channel weights;
    returns the names carried."""
    gamma, beta = site_affine(site)
    carried = []
    for name, value, present in ((gamma_name, gamma, site.scale), (beta_name, beta, site.center)):
        variable = getattr(new_layer, name, None)
        if present and variable is not None:
            assign(variable, value)
            carried.append(name)
    return carried


def set_population_statistics(layer, mean, variance, epsilon):
    """Population statistics (per-channel mean and biased variance) into a batch-dependent
    layer's moving mean and variance. A layer with its own way of taking a BN's statistics
    (`set_statistics_from_bn`, e.g. Batch Renorm's moving standard deviation, which needs
    the BN's ε) uses it."""
    if hasattr(layer, "set_statistics_from_bn"):
        layer.set_statistics_from_bn(mean, variance, epsilon)
        return
    assign(layer.moving_mean, mean)
    assign(layer.moving_variance, variance)


def carry_statistics(site, layer):
    """Copy the BN's γ, β and moving statistics into a batch-dependent replacement;
    returns the names carried."""
    _, _, mean, variance = bn_numbers(site.layer)
    carried = carry_affine(site, layer)
    set_population_statistics(layer, mean, variance, site.epsilon)
    return carried + ["moving_mean", "moving_variance", "epsilon"]


def _channel_axis_of(producer, rank):
    if isinstance(producer, keras.layers.Dense):
        return rank - 1
    return 1 if producer.data_format == "channels_first" else rank - 1


def foldable_reason(site):
    """None when the BN can be folded into its producer, else why not (for the plan)."""
    producer = site.producer
    if not site.is_batchnorm:
        return (f"it is a {type(site.layer).__name__} (a Keras-2 library's layer), not a "
                "BatchNormalization with statistics to fold")
    if site.calls != 1:
        return f"the BN is shared by {site.calls} call sites"
    if producer is None:
        return "no layer feeds the BN directly (it reads a model input)"
    if not isinstance(producer, FOLDABLE):
        return f"its input comes from {type(producer).__name__}, not a Conv or Dense"
    if not site.producer_exclusive:
        return f"'{producer.name}' also feeds other layers or is shared; folding would change them"
    if keras.activations.serialize(producer.activation) not in ("linear", None):
        return f"'{producer.name}' applies an activation before the BN"
    if _channel_axis_of(producer, site.rank) != site.axis:
        return f"the BN's axis is not the output-channel axis of '{producer.name}'"
    if _bias_lands_on_last_axis(site):
        return (f"Keras's TensorFlow backend adds the bias of the channels_first "
                f"'{producer.name}' along its last axis, which has as many entries as it has "
                "channels (a Keras bug): a folded bias would land there")
    return None


def _bias_lands_on_last_axis(site):
    """Keras 3's TensorFlow `ops.add` turns a channels_first conv's (1, C, 1, …) bias into a
    bias_add along the last axis when that axis also has C entries."""
    return (keras.backend.backend() == "tensorflow" and site.rank > 2 and site.axis == 1
            and site.input_shape[-1] == site.channels)


def _layout(producer):
    if isinstance(producer, _TRANSPOSED):
        return "transposed"
    if isinstance(producer, _DEPTHWISE):
        return "depthwise"
    return "standard"


def folded_producer(site):
    """A copy of the site's producer, built, with the BN's inference affine folded in."""
    producer = site.producer
    config = producer.get_config()
    config["use_bias"] = True
    folded = producer.__class__.from_config(config)
    folded.build(site.producer_input_shape)
    linear = "pointwise_kernel" if isinstance(producer, _SEPARABLE) else "kernel"
    bias = producer.bias.numpy() if producer.use_bias else None
    kernel, new_bias = fold_weights(getattr(producer, linear).numpy(), bias,
                                    *bn_affine(site.layer), _layout(producer))
    for variable in producer.weights:  # the depthwise kernel of a separable conv
        assign(getattr(folded, variable.name), variable.numpy())
    assign(getattr(folded, linear), kernel)
    assign(folded.bias, new_bias)
    return folded


def _weight_penalty(layer):
    """The sum of the regularization penalties of `layer`'s weights (not `add_loss` or
    activity terms, which belong to its last call), float."""
    return float(sum(np.sum(keras.ops.convert_to_numpy(variable.regularizer(variable)))
                     for variable in layer.weights
                     if getattr(variable, "regularizer", None) is not None))


def fold_into_producer(site):
    """`folded_producer(site)` and its notes: one when the producer's weight regularizers
    (kernel, bias) penalize the folded weights differently — they stay at the same
    coefficients but now weigh W·γ/√(v+ε) and the folded bias, so fine-tuning
    regularizes by another amount."""
    folded = folded_producer(site)
    before, after = (_weight_penalty(layer) for layer in (site.producer, folded))
    if before == after:
        return folded, []
    return folded, [f"regularization penalty of '{site.producer.name}' {before:.3g} → "
                    f"{after:.3g} (same coefficients, folded weights)"]


def start_from_bn_output(site, new_layer, fold):
    """The carry of layers that never subtract a mean (FRN, EvoNorm-S0).

    Where `fold` (the site is foldable), the BN's whole inference affine goes into the
    producer, so the new layer sees the BN's output itself, centred where the network expects
    it, and keeps γ = 1, β = 0; elsewhere γ and β are copied. Returns (extra layers, carried,
    notes).
    """
    if fold:
        folded, notes = fold_into_producer(site)
        return ({site.producer: folded}, list(ALL_STATISTICS),
                [f"BN affine folded into '{site.producer.name}'"] + notes)
    return {}, carry_affine(site, new_layer), []
