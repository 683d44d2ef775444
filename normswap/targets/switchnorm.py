"""`switchnorm`: Switchable Normalization (Luo et al. 2018) with the BN's statistics.

γ, β, moving mean and variance and ε carry straight in. The result equals the BN only when
the BN branch's softmax weight is 1, so the switch initialisation is the user's choice
(`switch_init`):
- "uniform": the paper's equal logits (IN, LN, BN weights 1/3 each); not exact.
- "bn" (default): BN logit 5 above the others, BN weight e⁵/(e⁵+2) ≈ 0.987 for both mean
  and variance; close to the BN and still trainable; not exact.
- "exact": BN logit 20 above the others (weight 1 − 4e−9, below float32 round-off):
  reproduces the BN at inference, but the switch is frozen (its gradient vanishes) until
  the logits are moved. `exact=True` selects it.
"""

import math

import numpy as np

from normswap.carry import assign, carry_statistics
from normswap.errors import UsageError
from normswap.layers import SwitchNormalization
from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, keras_axis, like_bn

BN_LOGIT_GAP = {"uniform": 0.0, "bn": 5.0, "exact": 20.0}


def bn_branch_weight(gap, branches=3):
    """Softmax weight of the BN branch whose logit is `gap` above the other branches'."""
    return math.exp(gap) / (math.exp(gap) + branches - 1)


@register
class SwitchNorm(Target):
    name = "switchnorm"
    summary = "Switchable Norm (Luo 2018): IN/LN/BN mix, statistics carried; exact with --exact"
    layer_classes = (SwitchNormalization,)
    needs_bn_statistics = True
    options = {"switch_init": "bn"}

    def exact_options(self, options):
        if self.option(options, "switch_init") not in ("bn", "exact"):
            raise UsageError(f"switch_init='{options['switch_init']}' cannot be exact; "
                             "exact=True uses switch_init='exact'.")
        return {**options, "switch_init": "exact"}

    def is_exact(self, params):
        return params["switch_init"] == "exact"

    def parameters(self, site, options):
        switch_init = self.option(options, "switch_init")
        if switch_init not in BN_LOGIT_GAP:
            raise UsageError(f"switch_init must be one of {', '.join(BN_LOGIT_GAP)}, "
                             f"got '{switch_init}'.")
        branches = 2 if site.rank == 2 else 3  # rank 2 mixes LN and BN only
        gap = BN_LOGIT_GAP[switch_init]
        return {"switch_init": switch_init, "bn_weight": round(bn_branch_weight(gap, branches), 4)}

    def replace(self, site, params):
        bn = site.layer
        layer = built(site, SwitchNormalization(
            axis=keras_axis(site), momentum=bn.momentum, epsilon=site.epsilon,
            center=site.center, scale=site.scale, **like_bn(site)))
        carried = carry_statistics(site, layer)
        logits = np.array([0.0, 0.0, BN_LOGIT_GAP[params["switch_init"]]])
        assign(layer.mean_weights, logits)
        assign(layer.variance_weights, logits)
        return Replacement(layers={bn: layer}, carried=carried)
