"""`batchrenorm`: Batch Renormalization (Ioffe 2017) with the BN's statistics. Exact.

Every statistic carries: γ, β, moving mean and variance, ε; the renorm statistics start at
the BN's (moving std √(v+ε), renorm mean μ), so inference equals the BN and training equals
it too while r and d stay inside their clipping range.
"""

import keras
import numpy as np

from normswap.targets import register
from normswap.targets.base import Replacement, Target, assign, bn_numbers, built, keras_axis, like_bn


@register
class BatchRenorm(Target):
    name = "batchrenorm"
    summary = "Batch Renormalization (Ioffe 2017), every statistic carried; exact"
    exact = True

    def replace(self, site, params):
        bn = site.layer
        layer = built(site, keras.layers.BatchNormalization(
            axis=keras_axis(site), momentum=bn.momentum, epsilon=site.epsilon,
            center=site.center, scale=site.scale, renorm=True,
            renorm_clipping={"rmax": 3.0, "rmin": 1 / 3.0, "dmax": 5.0},
            **like_bn(site)))
        gamma, beta, mean, var = bn_numbers(bn)
        std = np.sqrt(var + site.epsilon)
        values = {"gamma": gamma, "beta": beta, "moving_mean": mean,
                  "moving_variance": var, "moving_stddev": std,
                  "renorm_mean": mean, "renorm_stddev": std}
        for variable in layer.weights:
            assign(variable, values[variable.path.split("/")[-1]])
        return Replacement(layers={site.layer: layer},
                           carried=["gamma", "beta", "moving_mean", "moving_variance", "epsilon"])
