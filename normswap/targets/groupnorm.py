"""`groupnorm`: Keras GroupNormalization with γ and β carried. Not exact.

Group count: `groups=N` for every site (sites whose channels N does not divide are skipped),
or automatic per site: the largest divisor G of the channel count C with G ≤ 32 and at least
16 channels per group (so C=16 → 1, C=64 → 4, C=512 → 32). Automatic choice never makes
groups of one channel; on a rank-2 (Dense) input one channel per group would output β alone,
so it is refused even when asked.
"""

import keras

from normswap.targets import register
from normswap.targets.base import (
    Replacement,
    Skip,
    Target,
    built,
    carry_affine,
    keras_axis,
    like_bn,
)

MAX_GROUPS = 32
MIN_CHANNELS_PER_GROUP = 16


def auto_groups(channels):
    """The default group count for `channels` (see the module docstring)."""
    limit = max(1, min(MAX_GROUPS, channels // MIN_CHANNELS_PER_GROUP))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def group_norm_for(site, groups):
    """A GroupNormalization in the BN's place, built, with γ and β carried."""
    layer = keras.layers.GroupNormalization(
        groups=groups, axis=keras_axis(site), epsilon=site.epsilon,
        center=site.center, scale=site.scale, **like_bn(site))
    layer = built(site, layer)
    return Replacement(layers={site.layer: layer}, carried=carry_affine(site, layer))


@register
class GroupNorm(Target):
    name = "groupnorm"
    summary = "GroupNormalization (Wu & He 2018), γ/β carried; groups auto per layer or --groups"
    layer_classes = (keras.layers.GroupNormalization,)
    options = {"groups": None}

    def check(self, site, options):
        groups = options.get("groups")
        if groups in (None, "auto"):
            return None
        if site.channels % groups:
            return Skip(f"{groups} groups do not divide {site.channels} channels")
        if site.rank == 2 and groups == site.channels:
            return Skip("one channel per group on a Dense output would leave only β")
        return None

    def parameters(self, site, options):
        groups = options.get("groups")
        if groups in (None, "auto"):
            return {"groups": auto_groups(site.channels), "auto": True}
        return {"groups": int(groups)}

    def calibration_choices(self, site, params):
        """With groups='auto', every count in 1, 2, 4, …, 32 that divides the channels into
        groups of at least two; calibration keeps the one whose output fits the BN's best."""
        if not params.get("auto"):
            return [params]
        counts = [g for g in (1, 2, 4, 8, 16, 32)
                  if site.channels % g == 0 and site.channels // g >= 2]
        return [params] + [{**params, "groups": g} for g in counts if g != params["groups"]]

    def apply_params(self, layer, params):
        layer.groups = params["groups"]  # γ and β are per channel: any count fits them

    def replace(self, site, params):
        return group_norm_for(site, params["groups"])
