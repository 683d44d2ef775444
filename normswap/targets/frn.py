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

from normswap.calibration.hooks import AffineCalibration
from normswap.carry import foldable_reason, start_from_bn_output
from normswap.layers import FilterResponseNormalization
from normswap.targets import register
from normswap.targets.base import IDENTITY, Replacement, Skip, Target, built, keras_axis, like_bn


class FRNCalibration(AffineCalibration):
    def weights(self, layer):
        """γ and β; the TLU's τ is switched off while the response is measured."""
        neutral = [(layer.tau, -1e30)] if layer.use_tlu else []
        return layer.gamma, layer.beta, neutral


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
