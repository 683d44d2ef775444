"""`groupnorm`: Keras GroupNormalization with γ and β carried. Not exact.

Group count: `groups=N` for every site (sites whose channels N does not divide are skipped),
or automatic per site (`carry.auto_groups`): the largest divisor G of the channel count C
with G ≤ 32 and at least 16 channels per group (so C=16 → 1, C=64 → 4, C=512 → 32); with
calibration samples, the count whose output fits the BN's best. Automatic choice never makes
groups of one channel; on a rank-2 (Dense) input one channel per group would output β alone,
so it is refused even when asked.
"""

import keras

from normswap.calibration.hooks import GroupNormCalibration
from normswap.carry import auto_groups, carry_affine
from normswap.targets import register
from normswap.targets.base import Replacement, Skip, Target, built, keras_axis, like_bn


class GroupCountCalibration(GroupNormCalibration):
    """With groups='auto', calibration also picks each site's group count by fit: the fit
    of every count comes in closed form from one set of per-(sample, channel) moments
    (`GroupNormCalibration`), and only the chosen count's layer runs."""

    def choices(self, site, params, inputs):
        """Every count in 1, 2, 4, …, 32 that divides the channels into groups of at least
        two; calibration keeps the one whose output fits the BN's best."""
        if not params.get("auto"):
            return [params]
        counts = [g for g in (1, 2, 4, 8, 16, 32)
                  if site.channels % g == 0 and site.channels // g >= 2]
        return [params] + [{**params, "groups": g} for g in counts if g != params["groups"]]

    def apply_params(self, layer, params):
        layer.groups = params["groups"]  # γ and β are per channel: any count fits them


@register
class GroupNorm(Target):
    name = "groupnorm"
    summary = "GroupNormalization (Wu & He 2018), γ/β carried; groups auto per layer or --groups"
    layer_classes = (keras.layers.GroupNormalization,)
    options = {"groups": None}
    calibration = GroupCountCalibration()

    def check(self, site, options):
        groups = self.option(options, "groups")
        if groups in (None, "auto"):
            return None
        if site.channels % groups:
            return Skip(f"{groups} groups do not divide {site.channels} channels")
        if site.rank == 2 and groups == site.channels:
            return Skip("one channel per group on a Dense output would leave only β")
        return None

    def parameters(self, site, options):
        groups = self.option(options, "groups")
        if groups in (None, "auto"):
            return {"groups": auto_groups(site.channels), "auto": True}
        return {"groups": int(groups)}

    def replace(self, site, params):
        layer = built(site, keras.layers.GroupNormalization(
            groups=params["groups"], axis=keras_axis(site), epsilon=site.epsilon,
            center=site.center, scale=site.scale, **like_bn(site)))
        return Replacement(layers={site.layer: layer}, carried=carry_affine(site, layer))
