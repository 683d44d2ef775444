"""`evonorm`: EvoNorm-S0 (Liu et al. 2020), γ and β carried. Not exact.

y = x·sigmoid(v·x) / group_std(x) · γ + β, with v = 1 at first. EvoNorm-S0 is a
normalization-activation layer: it replaces BN + ReLU together, so a ReLU that only the BN
feeds leaves the graph (as with FRN's TLU); where no ReLU follows, EvoNorm's own
nonlinearity is still there, which moves the function further.

EvoNorm-S0 never subtracts a mean, so γ and β after it cannot move the kink of its
x·sigmoid(v·x) gate to where the BN + ReLU had it (x = μ − βσ/γ). Where the BN is foldable
(see `fold`), the BN's whole inference affine is folded into the producing conv instead, so
EvoNorm's input is the BN's output itself, centred where the ReLU expects it, and EvoNorm
starts with γ = 1, β = 0. Elsewhere γ and β are copied. Group count: the
same automatic rule as `groupnorm` (`groups=N` to force one, adjusted down to a divisor of
the channel count when it does not divide; the report shows the count used).
"""

from keras import ops

from normswap.layers import EvoNormS0
from normswap.targets import register
from normswap.targets.base import (
    IDENTITY,
    Replacement,
    Target,
    built,
    keras_axis,
    like_bn,
)
from normswap.targets.fold import start_from_bn_output, why_not_foldable
from normswap.targets.groupnorm import auto_groups


@register
class EvoNorm(Target):
    name = "evonorm"
    summary = "EvoNorm-S0 (Liu 2020): x·σ(v·x)/group std, γ/β carried; groups as for groupnorm"
    layer_classes = (EvoNormS0,)

    def parameters(self, site, options):
        groups = options.get("groups")
        groups = auto_groups(site.channels) if groups in (None, "auto") else int(groups)
        return {"groups": groups, "absorbs_relu": site.relu is not None,
                "fold_affine": why_not_foldable(site) is None}

    def calibration_target(self, site, params, bn_output):
        """EvoNorm stands for BN + ReLU where it absorbed the ReLU."""
        return ops.relu(bn_output) if params.get("absorbs_relu") else bn_output

    def replace(self, site, params):
        layer = built(site, EvoNormS0(axis=keras_axis(site), groups=params["groups"],
                                      epsilon=site.epsilon, center=site.center,
                                      scale=site.scale, **like_bn(site)))
        layers, carried, notes = start_from_bn_output(site, layer, params["fold_affine"])
        layers[site.layer] = layer
        if layer.groups_used != params["groups"]:
            notes.append(f"{params['groups']} groups do not divide {site.channels} channels: "
                         f"used {layer.groups_used}")
            params["groups"] = layer.groups_used
        if params["absorbs_relu"]:
            layers[site.relu] = IDENTITY
            notes.append(f"replaces ReLU '{site.relu.name}' too")
        return Replacement(layers=layers, carried=carried, notes=notes)
