"""`evonorm`: EvoNorm-S0 (Liu et al. 2020), γ and β carried. Not exact.

y = x·sigmoid(v·x) / group_std(x) · γ + β, with v = 1 at first. EvoNorm-S0 is a
normalization-activation layer: it replaces BN + ReLU together, so a ReLU that only the BN
feeds leaves the graph (as with FRN's TLU); where no ReLU follows, EvoNorm's own
nonlinearity is still there, which moves the function further.

EvoNorm-S0 never subtracts a mean, so γ and β after it cannot move the kink of its
x·sigmoid(v·x) gate to where the BN + ReLU had it (x = μ − βσ/γ). Where the BN is foldable
(see `fold`), the BN's whole inference affine is folded into the producing conv instead, so
EvoNorm's input is the BN's output itself, centred where the ReLU expects it, and EvoNorm
starts with γ = 1, β = 0 (`carry.start_from_bn_output`). Elsewhere γ and β are copied.
Group count: the automatic rule of `groupnorm` (`groups=N` to ask for one), adjusted down to
a divisor of the channel count by EvoNorm's own rule (`carry.groups_for`); the plan shows
the count used.
"""

from normswap.calibration.hooks import AbsorbedReluCalibration
from normswap.carry import auto_groups, foldable_reason, groups_for, start_from_bn_output
from normswap.layers import EvoNormS0
from normswap.targets import register
from normswap.targets.base import IDENTITY, Replacement, Skip, Target, built, keras_axis, like_bn


@register
class EvoNorm(Target):
    name = "evonorm"
    summary = "EvoNorm-S0 (Liu 2020): x·σ(v·x)/group std, γ/β carried; groups as for groupnorm"
    layer_classes = (EvoNormS0,)
    options = {"groups": None}
    calibration = AbsorbedReluCalibration()

    def check(self, site, options):
        if site.rank == 2 and site.channels < 2:
            return Skip("a Dense output with one channel has no group statistics",
                        fallback="frozenbn")
        return None

    def parameters(self, site, options):
        requested = self.option(options, "groups")
        if requested in (None, "auto"):
            requested = auto_groups(site.channels)
        groups = groups_for(site.channels, int(requested), site.rank)
        params = {"groups": groups, "absorbs_relu": site.relu is not None,
                  "fold_affine": foldable_reason(site) is None}
        if groups != requested:
            params["requested_groups"] = int(requested)
        return params

    def replace(self, site, params):
        layer = built(site, EvoNormS0(axis=keras_axis(site), groups=params["groups"],
                                      epsilon=site.epsilon, center=site.center,
                                      scale=site.scale, **like_bn(site)))
        layers, carried, notes = start_from_bn_output(site, layer, params["fold_affine"])
        layers[site.layer] = layer
        if "requested_groups" in params:
            notes.append(f"{params['requested_groups']} groups do not divide {site.channels} "
                         f"channels: used {params['groups']}")
        if params["absorbs_relu"]:
            layers[site.relu] = IDENTITY
            notes.append(f"replaces ReLU '{site.relu.name}' too")
        return Replacement(layers=layers, carried=carried, notes=notes)
