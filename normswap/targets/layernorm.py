"""`layernorm`: per-sample statistics over every non-batch axis (Ba et al. 2016). Not exact.

For convolutional features this is the layer norm of the GroupNorm paper (one group over
spatial axes and channels) with per-channel γ and β, built as GroupNormalization(groups=1);
on rank-2 (Dense) inputs it is keras LayerNormalization. γ and β carry over.
"""

import keras

from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, carry_affine, like_bn
from normswap.targets.groupnorm import group_norm_for


@register
class LayerNorm(Target):
    name = "layernorm"
    summary = "LayerNorm: per-sample statistics over all features (GroupNorm with 1 group)"
    layer_classes = (keras.layers.LayerNormalization,)

    def replace(self, site, params):
        if site.rank > 2:
            return group_norm_for(site, 1)
        layer = built(site, keras.layers.LayerNormalization(
            axis=-1, epsilon=site.epsilon, center=site.center, scale=site.scale,
            **like_bn(site)))
        return Replacement(layers={site.layer: layer}, carried=carry_affine(site, layer))
