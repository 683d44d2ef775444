"""The calibration protocol: what a target tells calibration about its replacement layer.

Planning and replacing (`targets/base.py`) decide what a BN becomes; this protocol says how
calibration (`calibrate.py`) re-fits what was built. A target names its hooks as its
`calibration` attribute; the default, `AffineCalibration`, suits a layer whose output is
γ·x̂ + β with per-channel weights named `gamma` and `beta`. A target overrides a hook by
subclassing it in its own module:

    class FRNCalibration(AffineCalibration):
        def weights(self, layer):
            return layer.gamma, layer.beta, [(layer.tau, -1e30)]   # TLU off while measuring

    @register
    class FRN(Target):
        calibration = FRNCalibration()
"""

import keras
from keras import ops

from normswap.calibration.closed_form import group_norm_stats, slice_moments


class AffineCalibration:
    """How calibration re-fits a replacement whose output is γ·(normalized input) + β."""

    def weights(self, layer):
        """(γ variable or None, β variable or None, [(variable, value that switches it off
        while the normalized response is measured), ...])."""
        return getattr(layer, "gamma", None), getattr(layer, "beta", None), []

    def target_output(self, site, params, bn_output):
        """What the replacement's output should match: by default the BN's output."""
        return bn_output

    def choices(self, site, params, inputs):
        """Parameter sets calibration may choose between; the first is the planned one.
        `inputs`: per batch, the new layer's input on the samples (for choices that
        depend on the data's scale)."""
        return [params]

    def response_stats(self, site, layer, choices, inputs, outputs):
        """For each of `choices`, the `affine_fit.AffineStats` of the layer's normalized
        response against `outputs`, computed without running the layer (closed form), or
        None (the default) to have calibration run the layer with γ = 1, β = 0, once per
        choice.
        `inputs` / `outputs`: per batch, the new layer's inputs and what it should output."""
        return None

    def apply_params(self, layer, params):
        """Make a built replacement use `params` (one of `choices`)."""


class AbsorbedReluCalibration(AffineCalibration):
    """For a normalization-activation layer that replaced BN + ReLU (EvoNorm): where it
    absorbed the ReLU, its output should match the BN's output after that ReLU."""

    def target_output(self, site, params, bn_output):
        return ops.relu(bn_output) if params.get("absorbs_relu") else bn_output


class GroupNormCalibration(AffineCalibration):
    """For keras GroupNormalization replacements (groupnorm, layernorm, instancenorm): the
    response statistics of every candidate group count in closed form from per-(sample,
    channel) moments (`closed_form.group_norm_stats`), so the layer runs only once, in
    the forward pass, with the fitted γ and β. Other layers: the default."""

    def response_stats(self, site, layer, choices, inputs, outputs):
        if not isinstance(layer, keras.layers.GroupNormalization):
            return None
        moments = slice_moments(inputs, outputs, site.axis)
        return [group_norm_stats(moments, params.get("groups", layer.groups), layer.epsilon)
                for params in choices]
