"""`bln`: Batch-Layer Normalization (Ziaee & Çano 2022), every statistic carried. Exact.

The BN's γ, β, moving mean and variance (BLN's batch statistics) and ε carry over. BLN
mixes the feature-normalized and the batch-normalized input with weights w and 1 − w; in
training w = 1/B, and at inference w is the average of 1/B seen in training, which a
fresh conversion starts at 0. So the converted model equals the BN model at inference, and
fine-tuning brings the feature statistics in at the rate its batch size sets.
"""

from normswap.carry import carry_statistics
from normswap.layers import BatchLayerNormalization
from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, keras_axis, like_bn


@register
class BLN(Target):
    name = "bln"
    summary = "Batch-Layer Norm (Ziaee 2022): batch and feature statistics mixed by 1/B; exact"
    exact = True
    layer_classes = (BatchLayerNormalization,)
    needs_bn_statistics = True

    def replace(self, site, params):
        bn = site.layer
        layer = built(site, BatchLayerNormalization(
            axis=keras_axis(site), momentum=bn.momentum, epsilon=site.epsilon,
            center=site.center, scale=site.scale, **like_bn(site)))
        return Replacement(layers={bn: layer}, carried=carry_statistics(site, layer))
