"""`batchrenorm`: normswap's Batch Renormalization (Ioffe 2017) with the BN's statistics. Exact.

Every statistic carries: γ, β, the moving mean μ, and the moving standard deviation
σ = √(v + ε) from the BN's moving variance v; so inference equals the BN, and training
equals it too while r and d stay inside their clipping range.
"""

from normswap.carry import carry_statistics
from normswap.layers import BatchRenormalization
from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, keras_axis, like_bn


@register
class BatchRenorm(Target):
    name = "batchrenorm"
    summary = "Batch Renormalization (Ioffe 2017), every statistic carried; exact"
    exact = True
    layer_classes = (BatchRenormalization,)
    needs_bn_statistics = True
    options = {"warmup_steps": 5000}

    def parameters(self, site, options):
        return {"warmup_steps": int(self.option(options, "warmup_steps"))}

    def replace(self, site, params):
        bn = site.layer
        layer = built(site, BatchRenormalization(
            axis=keras_axis(site), momentum=bn.momentum, epsilon=site.epsilon,
            center=site.center, scale=site.scale, warmup_steps=params["warmup_steps"],
            **like_bn(site)))
        return Replacement(layers={bn: layer}, carried=carry_statistics(site, layer))
