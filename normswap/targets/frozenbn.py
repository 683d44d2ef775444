"""`frozenbn`: the BN's inference map as a fixed per-channel affine. Exact."""

from normswap.carry import ALL_STATISTICS, assign, bn_affine
from normswap.layers import ChannelAffine
from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, keras_axis, like_bn


@register
class FrozenBN(Target):
    name = "frozenbn"
    summary = "per-channel affine γ/√(v+ε), β−μγ/√(v+ε): BN frozen at inference; exact"
    exact = True
    layer_classes = (ChannelAffine,)
    needs_bn_statistics = True

    def replace(self, site, params):
        layer = built(site, ChannelAffine(axis=keras_axis(site), **like_bn(site)))
        scale, offset = bn_affine(site.layer)
        assign(layer.scale, scale)
        assign(layer.offset, offset)
        return Replacement(layers={site.layer: layer}, carried=list(ALL_STATISTICS))
