"""`fold`: the BN folded into the Conv/Dense that feeds it. Exact at inference.

With s = γ/√(v+ε) per output channel: W' = W·s and b' = (b − μ)·s + β. The BN disappears.
A site folds only when its producer is a linear-activation Conv/Dense whose output channels
are the BN's channels, called once and feeding nothing but this BN — folding a conv whose
output also takes another path would corrupt that path. Other sites fall back to `frozenbn`.
"""

import keras
import numpy as np

from normswap.targets import register
from normswap.targets.base import (
    ALL_STATISTICS,
    IDENTITY,
    Replacement,
    Skip,
    Target,
    assign,
    bn_affine,
    carry_affine,
)

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
FOLDABLE = (keras.layers.Dense,) + _CONVS + _TRANSPOSED + _DEPTHWISE + _SEPARABLE


def _channel_axis_of(producer, rank):
    if isinstance(producer, keras.layers.Dense):
        return rank - 1
    return 1 if producer.data_format == "channels_first" else rank - 1


def why_not_foldable(site):
    producer = site.producer
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
    return None


def _scaled_kernel(producer, kernel, scale):
    """Multiply each output channel of a producer's (last linear) kernel by `scale`."""
    if isinstance(producer, _TRANSPOSED):  # kernel (..., out, in)
        return kernel * scale[:, None]
    if isinstance(producer, _DEPTHWISE):  # kernel (..., in, multiplier), out = in·mult
        return kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    return kernel * scale  # Dense, Conv and the pointwise kernel of a SeparableConv


@register
class Fold(Target):
    name = "fold"
    summary = "BN folded into the preceding Conv/Dense kernel and bias; exact; else frozenbn"
    exact = True
    normalizes = False

    def check(self, site, options):
        reason = why_not_foldable(site)
        return Skip(f"cannot fold: {reason}", fallback="frozenbn") if reason else None

    def replace(self, site, params):
        producer = site.producer
        return Replacement(
            layers={site.layer: IDENTITY, producer: folded_producer(site)},
            carried=list(ALL_STATISTICS),
            notes=[f"folded into '{producer.name}'"
                   + ("" if producer.use_bias else " (bias added)")],
        )


def folded_producer(site):
    """A copy of the site's producer, built, with the BN's inference affine folded in."""
    producer = site.producer
    config = producer.get_config()
    config["use_bias"] = True
    folded = producer.__class__.from_config(config)
    folded.build(site.producer_input_shape)
    scale, offset = bn_affine(site.layer)
    linear = "pointwise_kernel" if isinstance(producer, _SEPARABLE) else "kernel"
    for variable in producer.weights:
        name = variable.path.split("/")[-1]
        if name == linear:
            value = _scaled_kernel(producer, np.asarray(variable.numpy(), np.float64), scale)
        else:
            value = variable.numpy()
        assign(getattr(folded, name), value)
    bias = producer.bias.numpy().astype(np.float64) if producer.use_bias else 0.0
    assign(folded.bias, bias * scale + offset)  # (b − μ)·s + β
    return folded


def start_from_bn_output(site, new_layer, fold):
    """The carry of layers that never subtract a mean (FRN, EvoNorm-S0).

    Where `fold` (the site is foldable), the BN's whole inference affine goes into the
    producer, so the new layer sees the BN's output itself, centred where the network expects
    it, and keeps γ = 1, β = 0; elsewhere γ and β are copied. Returns (extra layers, carried,
    notes).
    """
    if fold:
        return ({site.producer: folded_producer(site)}, list(ALL_STATISTICS),
                [f"BN affine folded into '{site.producer.name}'"])
    return {}, carry_affine(site, new_layer), []
