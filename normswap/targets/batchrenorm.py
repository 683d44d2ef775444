"""`batchrenorm`: normswap's Batch Renormalization (Ioffe 2017) with the BN's statistics. Exact.

Every statistic carries: γ, β, moving mean and variance, ε; the renorm statistics start at
the BN's (renorm mean μ, moving std √(v+ε)), so inference equals the BN and training equals
it too while r and d stay inside their clipping range.
"""

import numpy as np

from normswap.layers import BatchRenormalization
from normswap.targets import register
from normswap.targets.base import (
    Replacement,
    Target,
    assign,
    built,
    keras_axis,
    like_bn,
)


@register
class BatchRenorm(Target):
    name = "batchrenorm"
    summary = "Batch Renormalization (Ioffe 2017), every statistic carried; exact"
    exact = True
    layer_classes = (BatchRenormalization,)
    options = {"warmup_steps": 5000}

    def parameters(self, site, options):
        return {"warmup_steps": int(options.get("warmup_steps", 5000))}

    def set_statistics(self, layer, mean, variance, epsilon):
        """Inference statistics and the renorm statistics r and d are measured against."""
        assign(layer.moving_mean, mean)
        assign(layer.moving_variance, variance)
        assign(layer.renorm_mean, mean)
        assign(layer.moving_stddev, np.sqrt(variance + epsilon))
        return True

    def replace(self, site, params):
        bn = site.layer
        layer = built(site, BatchRenormalization(
            axis=keras_axis(site), momentum=bn.momentum, epsilon=site.epsilon,
            center=site.center, scale=site.scale, warmup_steps=params["warmup_steps"],
            renorm_momentum=bn.momentum, **like_bn(site)))
        return Replacement(layers={bn: layer}, carried=self.carry_statistics(site, layer))
