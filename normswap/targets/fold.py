"""`fold`: the BN folded into the Conv/Dense that feeds it. Exact at inference.

With s = γ/√(v+ε) per output channel: W' = W·s and b' = (b − μ)·s + β (`carry.fold_weights`).
The BN disappears. A site folds only when its producer is a linear-activation Conv/Dense
whose output channels are the BN's channels, called once and feeding nothing but this BN —
folding a conv whose output also takes another path would corrupt that path
(`carry.foldable_reason`). Other sites fall back to `frozenbn`.
"""

from normswap.carry import ALL_STATISTICS, fold_into_producer, foldable_reason
from normswap.targets import register
from normswap.targets.base import IDENTITY, Replacement, Skip, Target


@register
class Fold(Target):
    name = "fold"
    summary = "BN folded into the preceding Conv/Dense kernel and bias; exact; else frozenbn"
    exact = True
    normalizes = False
    needs_bn_statistics = True

    def check(self, site, options):
        reason = foldable_reason(site)
        return Skip(f"cannot fold: {reason}", fallback="frozenbn") if reason else None

    def replace(self, site, params):
        producer = site.producer
        folded, notes = fold_into_producer(site)
        return Replacement(
            layers={site.layer: IDENTITY, producer: folded},
            carried=list(ALL_STATISTICS),
            notes=[f"folded into '{producer.name}'"
                   + ("" if producer.use_bias else " (bias added)")] + notes,
        )
