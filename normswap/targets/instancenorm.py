"""`instancenorm`: per-sample, per-channel statistics over the spatial axes. Not exact.

Built as GroupNormalization(groups=-1) (one group per channel, Ulyanov et al. 2016), γ and β
carried. Rank-2 (Dense) sites are skipped: a single value per channel has no spread, so the
layer would output β alone.
"""

from normswap.targets import register
from normswap.targets.base import POOLING_WARNING, Skip, Target
from normswap.targets.groupnorm import group_norm_for


@register
class InstanceNorm(Target):
    name = "instancenorm"
    summary = "InstanceNorm (GroupNormalization(groups=-1)), γ/β carried; skips Dense sites"

    def warnings(self, site):
        return [POOLING_WARNING] if site.pooled else []

    def check(self, site, options):
        if site.rank == 2:
            return Skip("instance statistics of a Dense output are one value: output would be β")
        return None

    def replace(self, site, params):
        return group_norm_for(site, -1)
