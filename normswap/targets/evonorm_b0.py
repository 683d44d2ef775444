"""`evonorm-b0`: EvoNorm-B0 (Liu et al. 2020), the batch-statistics EvoNorm. Not exact.

y = x / max(√(s²_B + ε), v·x + √(s²_I(x) + ε)) · γ + β, with s²_B the per-channel batch
variance (its moving average at inference) and s²_I each sample's own. Nothing is
subtracted, so the carry starts it from the BN's output, as for `evonorm` (S0): where the
BN is foldable (see `fold`), the BN's whole inference affine goes into the producing conv
(`carry.start_from_bn_output`); B0's moving variance is then that of the BN's output,
s²_B = γ²·v/(v + ε), γ = √(s²_B + ε) and β = 0, so that the batch term reproduces the BN's
output exactly, and v starts at 0 (the paper: 1) so that the instance term only takes over
for a sample whose own spread exceeds the population's. Elsewhere γ, β and the moving
variance v are copied (the input is then not centred; the plan says so).

A following ReLU is kept: B0 with v = 0 is not a ReLU, and keeping it keeps the converted
model close to the original (the paper uses B0 alone, in place of BN + ReLU; remove the
ReLU in your code to get that layout once fine-tuning has moved v). Batch statistics in
training, like BN: it suits batch sizes where BN works; `recalibrate_stats` and
`normswap restat` re-estimate its moving variance.
"""

import numpy as np

from normswap.carry import assign, bn_numbers, carry_affine, foldable_reason, start_from_bn_output
from normswap.layers import EvoNormB0
from normswap.targets import register
from normswap.targets.base import Replacement, Target, built, keras_axis, like_bn


@register
class EvoNormB0Target(Target):
    name = "evonorm-b0"
    summary = "EvoNorm-B0 (Liu 2020): batch variance vs v·x + instance std; starts as the BN"
    layer_classes = (EvoNormB0,)
    needs_bn_statistics = True

    def parameters(self, site, options):
        return {"fold_affine": foldable_reason(site) is None}

    def replace(self, site, params):
        bn = site.layer
        layer = built(site, EvoNormB0(axis=keras_axis(site), momentum=bn.momentum,
                                      epsilon=site.epsilon, center=site.center,
                                      scale=site.scale, **like_bn(site)))
        gamma, _, _, variance = bn_numbers(bn)
        assign(layer.v, np.zeros_like(variance))
        layers, carried, notes = start_from_bn_output(site, layer, params["fold_affine"])
        if params["fold_affine"]:
            output_variance = gamma ** 2 * variance / (variance + site.epsilon)
            assign(layer.moving_variance, output_variance)
            if layer.gamma is not None:
                assign(layer.gamma, np.sqrt(output_variance + site.epsilon))
        else:
            assign(layer.moving_variance, variance)
            carried = carry_affine(site, layer) + ["moving_variance", "epsilon"]
            notes.append("not centred: the BN's mean could not be folded into its producer")
        layers[site.layer] = layer
        return Replacement(layers=layers, carried=carried, notes=notes)
