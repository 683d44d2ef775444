"""`frn`: Filter Response Normalization + TLU (Singh & Krishnan 2019). Never exact.

FRN divides by the root mean square over the spatial axes, per sample, where BN used moving
statistics, and it never subtracts a mean. So where the BN is foldable (see `fold`), its
whole inference affine is folded into the producing conv: FRN then sees the BN's output
itself, centred as the network expects, and starts with γ = 1, β = 0
(`carry.start_from_bn_output`). Elsewhere γ and β are copied.

When a ReLU is the only consumer of the BN, the TLU (max(·, τ), τ = 0 at first: the same
function as that ReLU) takes its place and the ReLU leaves the graph. When no ReLU follows,
the TLU is off, since a TLU where no ReLU was would change the function.

Rank-2 (Dense) sites have no spatial axis: FRN would see one value per channel and output
≈ sign(x), discarding every magnitude, so they fall back to `layernorm` (also batch-free).
"""

import numpy as np
from keras import ops

from normswap.calibration.closed_form import frn_stats, slice_moments
from normswap.calibration.hooks import AffineCalibration
from normswap.carry import foldable_reason, start_from_bn_output
from normswap.layers import FilterResponseNormalization
from normswap.targets import register
from normswap.targets.base import IDENTITY, Replacement, Skip, Target, built, keras_axis, like_bn

EPSILON_SCALES = (1e-3, 1e-2, 1e-1, 1.0)


class FRNCalibration(AffineCalibration):
    """γ and β re-fitted, and ε chosen by the data: the paper's 1e-6 or a share of the
    site's mean square ν̄² (a larger ε keeps more of each sample's channel energy, which
    a global pooling after FRN would otherwise lose, by partly turning the per-sample
    normalization off; the report shows the ε chosen)."""

    def weights(self, layer):
        """γ and β; the TLU's τ is switched off while the response is measured."""
        neutral = [(layer.tau, -1e30)] if layer.use_tlu else []
        return layer.gamma, layer.beta, neutral

    def choices(self, site, params, inputs):
        typical = float(np.mean(channel_mean_squares(inputs, site.axis)))
        return [params] + [{**params, "epsilon": float(scale * typical)}
                           for scale in EPSILON_SCALES if typical > 0]

    def response_stats(self, site, layer, choices, inputs, outputs):
        """The fit of every ε in closed form: FRN's response is x·a with a = 1/√(ν² + ε)
        per (sample, channel) (`closed_form.frn_stats`); ε includes a learned ε_l."""
        moments = slice_moments(inputs, outputs, site.axis)
        learned = (0.0 if layer.epsilon_l is None
                   else abs(float(ops.convert_to_numpy(layer.epsilon_l))))
        return [frn_stats(moments, abs(c.get("epsilon", layer.epsilon)) + learned)
                for c in choices]

    def apply_params(self, layer, params):
        layer.epsilon = params.get("epsilon", layer.epsilon)


def channel_mean_squares(inputs, axis):
    """ν² per (sample, channel): the mean square over the spatial axes, float64."""
    nu2 = []
    for x in inputs:
        x = ops.cast(x, "float32")
        spatial = [a for a in range(1, len(x.shape)) if a != axis]
        nu2.append(np.asarray(ops.convert_to_numpy(ops.mean(x * x, axis=spatial)), np.float64))
    return np.concatenate(nu2)


@register
class FRN(Target):
    name = "frn"
    summary = "Filter Response Norm + TLU (Singh 2019); the TLU replaces a following ReLU"
    layer_classes = (FilterResponseNormalization,)
    calibration = FRNCalibration()
    per_sample_channel_statistics = True

    def check(self, site, options):
        if site.rank == 2:
            return Skip("FRN on a Dense output reduces each value to ≈ its sign",
                        fallback="layernorm")
        return None

    def parameters(self, site, options):
        spatial = [d for i, d in enumerate(site.input_shape[1:], 1) if i != site.axis]
        return {"tlu": site.relu is not None,
                "learned_epsilon": all(d == 1 for d in spatial),
                "fold_affine": foldable_reason(site) is None}

    def replace(self, site, params):
        layer = built(site, FilterResponseNormalization(
            axis=keras_axis(site), use_tlu=params["tlu"],
            learned_epsilon=params["learned_epsilon"], **like_bn(site)))
        layers, carried, notes = start_from_bn_output(site, layer, params["fold_affine"])
        layers[site.layer] = layer
        if params["tlu"]:
            layers[site.relu] = IDENTITY
            notes.append(f"TLU replaces ReLU '{site.relu.name}'")
        else:
            notes.append("no ReLU follows: TLU off")
        return Replacement(layers=layers, carried=carried, notes=notes)
