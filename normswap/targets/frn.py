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
        moments = channel_mean_squares(inputs, site.axis)
        typical = float(np.mean(moments[0]))
        return [params] + [{**params, "epsilon": float(scale * typical)}
                           for scale in EPSILON_SCALES if typical > 0]

    def rank_choices(self, site, layer, choices, inputs, outputs):
        """The ε whose least-squares fit to the target is best, in closed form: FRN's
        response is x·a with a = 1/√(ν² + ε) per (sample, channel)."""
        nu2, sums = channel_mean_squares(inputs, site.axis, outputs)
        scores = [_frn_fit_r2(nu2, sums, c.get("epsilon", layer.epsilon)) for c in choices]
        return int(np.argmax(np.round(scores, 6)))  # float32 ties: the earlier choice

    def apply_params(self, layer, params):
        layer.epsilon = params.get("epsilon", layer.epsilon)


def channel_mean_squares(inputs, axis, outputs=None):
    """ν² per (sample, channel) over the spatial axes and, with `outputs`, the float64
    sums P, Σx, Σx², Σx·y, Σy, Σy² per (sample, channel) that a fit needs."""
    nu2, sums = [], []
    for index, x in enumerate(inputs):
        x = ops.cast(x, "float32")
        spatial = [a for a in range(1, len(x.shape)) if a != axis]
        nu2.append(np.asarray(ops.convert_to_numpy(ops.mean(x * x, axis=spatial)), np.float64))
        if outputs is not None:
            y = ops.cast(outputs[index], "float32")
            sums.append([np.asarray(ops.convert_to_numpy(ops.sum(v, axis=spatial)), np.float64)
                         for v in (x, x * x, x * y, y, y * y)])
    positions = float(np.prod([d for a, d in enumerate(inputs[0].shape) if a not in (0, axis)]))
    joined = [np.concatenate(parts) for parts in zip(*sums)] if sums else None
    return np.concatenate(nu2), (positions, joined)


def _frn_fit_r2(nu2, sums, epsilon):
    positions, (sx, sxx, sxy, sy, syy) = sums
    a = 1.0 / np.sqrt(nu2 + abs(epsilon))
    n_total = nu2.shape[0] * positions
    sn, snn, sny = (a * sx).sum(0), (a * a * sxx).sum(0), (a * sxy).sum(0)
    sy_total, syy_total = sy.sum(0), syy.sum(0)
    cnn = snn - sn ** 2 / n_total
    cny = sny - sn * sy_total / n_total
    cyy = syy_total - sy_total ** 2 / n_total
    explained = np.where(cnn > 0, cny ** 2 / np.maximum(cnn, 1e-300), 0.0)
    return float(explained.sum() / max(cyy.sum(), 1e-300))


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
