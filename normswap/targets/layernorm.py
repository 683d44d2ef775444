"""`layernorm`: per-sample statistics over every non-batch axis (Ba et al. 2016). Not exact.

For convolutional features this is the layer norm of the GroupNorm paper (one group over
spatial axes and channels) with per-channel γ and β, built as GroupNormalization(groups=1);
on rank-2 (Dense) inputs it is keras LayerNormalization. γ and β carry over.
"""

import keras

from normswap.calibration.hooks import GroupNormCalibration
from normswap.carry import carry_affine
from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, keras_axis, like_bn


@register
class LayerNorm(Target):
    name = "layernorm"
    summary = "LayerNorm: per-sample statistics over all features (GroupNorm with 1 group)"
    layer_classes = (keras.layers.LayerNormalization,)
    calibration = GroupNormCalibration()  # fits in closed form, no extra layer runs

    def replace(self, site, params):
        common = dict(epsilon=site.epsilon, center=site.center, scale=site.scale,
                      **like_bn(site))
        if site.rank > 2:
            layer = keras.layers.GroupNormalization(groups=1, axis=keras_axis(site), **common)
        else:
            layer = keras.layers.LayerNormalization(axis=-1, **common)
        layer = built(site, layer)
        return Replacement(layers={site.layer: layer}, carried=carry_affine(site, layer))
