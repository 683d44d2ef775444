"""`ws=True`: the convs that feed swapped sites become Weight-Standardized convs.

The new conv stores the same raw kernel (and bias) and standardizes it in its forward pass
(Qiao et al. 2019), which changes what the model computes: WS cannot reproduce a pretrained
kernel (conv(x, W) = std_W·conv(x, Ŵ) + mean_W·Σ_patch x; the second term is lost), so a
conversion with ws is never exact. It applies only where a normalization follows the conv
and the conv feeds nothing else.
"""

import keras

from normswap.layers.weight_standardization import (
    WSConv1D,
    WSConv2D,
    WSConv3D,
    WSDepthwiseConv2D,
    kernel_fan_in,
)

WS_COUNTERPARTS = {
    keras.layers.Conv1D: WSConv1D,
    keras.layers.Conv2D: WSConv2D,
    keras.layers.Conv3D: WSConv3D,
    keras.layers.DepthwiseConv2D: WSDepthwiseConv2D,
}


def ws_note(site):
    """None when the conv that computes the BN's input (`site.source`: the producer, or the
    conv before element-wise layers such as a ReLU) can become a WS conv, else the plan
    note saying why it stays plain."""
    producer = site.source
    if producer is None or type(producer) not in WS_COUNTERPARTS:
        kind = "no producer" if producer is None else type(producer).__name__
        return (f"ws: not applied ({kind} is not a Conv1D/2D/3D or DepthwiseConv2D, nor an "
                "element-wise layer after one)")
    if not site.source_exclusive:
        return f"ws: not applied ('{producer.name}' also feeds other layers)"
    depthwise = isinstance(producer, keras.layers.DepthwiseConv2D)
    if kernel_fan_in(producer.kernel.shape, depthwise) <= 1:
        return (f"ws: not applied ('{producer.name}' has a fan-in of 1: its standardized "
                "kernel would be all zeros)")
    return None


def ws_counterpart(site, source=None):
    """The conv of `site` (`site.source`) as its WS counterpart, built, with the raw weights
    of `source` (default that conv itself; a target may already have replaced it, e.g.
    folded the BN into it)."""
    source = site.source if source is None else source
    new = WS_COUNTERPARTS[type(site.source)].from_config(source.get_config())
    new.build(site.source_input_shape)
    new.set_weights(source.get_weights())
    return new


def ws_applied_note(site, new_layer):
    """The plan note of a conv made Weight-Standardized, through the layers passed."""
    through = "".join(f" through '{layer.name}'" for layer in site.source_path)
    return f"'{site.source.name}' → {type(new_layer).__name__}{through}"
