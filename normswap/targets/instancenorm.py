"""`instancenorm`: per-sample, per-channel statistics over the spatial axes. Not exact.

Built as GroupNormalization(groups=-1) (one group per channel, Ulyanov et al. 2016), γ and β
carried. Rank-2 (Dense) sites are skipped: a single value per channel has no spread, so the
layer would output β alone.
"""

import keras

from normswap.calibration.hooks import GroupNormCalibration
from normswap.carry import carry_affine
from normswap.targets import register
from normswap.targets.base import Replacement, Skip, Target, built, keras_axis, like_bn


@register
class InstanceNorm(Target):
    name = "instancenorm"
    summary = "InstanceNorm (GroupNormalization(groups=-1)), γ/β carried; skips Dense sites"
    per_sample_channel_statistics = True
    calibration = GroupNormCalibration()  # fits in closed form, no extra layer runs

    def check(self, site, options):
        if site.rank == 2:
            return Skip("instance statistics of a Dense output are one value: output would be β")
        return None

    def replace(self, site, params):
        layer = built(site, keras.layers.GroupNormalization(
            groups=-1, axis=keras_axis(site), epsilon=site.epsilon, center=site.center,
            scale=site.scale, **like_bn(site)))
        return Replacement(layers={site.layer: layer}, carried=carry_affine(site, layer))
