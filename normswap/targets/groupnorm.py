"""`groupnorm`: Keras GroupNormalization with γ and β carried. Not exact.

Group count: `groups=N` for every site (sites whose channels N does not divide are skipped),
or automatic per site (`carry.auto_groups`): the largest divisor G of the channel count C
with G ≤ 32 and at least 16 channels per group (so C=16 → 1, C=64 → 4, C=512 → 32); with
calibration samples, the count whose output fits the BN's best. Automatic choice never makes
groups of one channel; on a rank-2 (Dense) input one channel per group would output β alone,
so it is refused even when asked.
"""

import keras
import numpy as np
from keras import ops

from normswap.calibration.hooks import AffineCalibration
from normswap.carry import auto_groups, carry_affine
from normswap.targets import register
from normswap.targets.base import Replacement, Skip, Target, built, keras_axis, like_bn


class GroupCountCalibration(AffineCalibration):
    """With groups='auto', calibration also picks each site's group count by fit."""

    def choices(self, site, params, inputs):
        """Every count in 1, 2, 4, …, 32 that divides the channels into groups of at least
        two; calibration keeps the one whose output fits the BN's best."""
        if not params.get("auto"):
            return [params]
        counts = [g for g in (1, 2, 4, 8, 16, 32)
                  if site.channels % g == 0 and site.channels // g >= 2]
        return [params] + [{**params, "groups": g} for g in counts if g != params["groups"]]

    def rank_choices(self, site, layer, choices, inputs, outputs):
        """The group count whose least-squares fit to the BN output is best, in closed form
        from per-(sample, channel) sums over the spatial axes (see `group_fit_r2`)."""
        moments = sample_channel_sums(inputs, outputs, site.axis)
        scores = [group_fit_r2(moments, c["groups"], layer.epsilon) for c in choices]
        return int(np.argmax(np.round(scores, 6)))  # float32 ties: the earlier choice

    def apply_params(self, layer, params):
        layer.groups = params["groups"]  # γ and β are per channel: any count fits them


@register
class GroupNorm(Target):
    name = "groupnorm"
    summary = "GroupNormalization (Wu & He 2018), γ/β carried; groups auto per layer or --groups"
    layer_classes = (keras.layers.GroupNormalization,)
    options = {"groups": None}
    calibration = GroupCountCalibration()

    def check(self, site, options):
        groups = self.option(options, "groups")
        if groups in (None, "auto"):
            return None
        if site.channels % groups:
            return Skip(f"{groups} groups do not divide {site.channels} channels")
        if site.rank == 2 and groups == site.channels:
            return Skip("one channel per group on a Dense output would leave only β")
        return None

    def parameters(self, site, options):
        groups = self.option(options, "groups")
        if groups in (None, "auto"):
            return {"groups": auto_groups(site.channels), "auto": True}
        return {"groups": int(groups)}

    def replace(self, site, params):
        layer = built(site, keras.layers.GroupNormalization(
            groups=params["groups"], axis=keras_axis(site), epsilon=site.epsilon,
            center=site.center, scale=site.scale, **like_bn(site)))
        return Replacement(layers={site.layer: layer}, carried=carry_affine(site, layer))


def sample_channel_sums(inputs, outputs, axis):
    """Per sample and channel, over the spatial axes: the position count P and float64 sums
    Σx, Σx², Σx·y, Σy, Σy² (reduced on the backend in float32, one batch at a time)."""
    parts = []
    for x, y in zip(inputs, outputs):
        x, y = ops.cast(x, "float32"), ops.cast(y, "float32")
        spatial = [a for a in range(1, len(x.shape)) if a != axis]
        sums = [ops.sum(v, axis=spatial) if spatial else v
                for v in (x, x * x, x * y, y, y * y)]
        parts.append([np.asarray(ops.convert_to_numpy(v), np.float64) for v in sums])
    positions = float(np.prod([d for a, d in enumerate(inputs[0].shape) if a not in (0, axis)]))
    return positions, [np.concatenate(arrays) for arrays in zip(*parts)]


def group_fit_r2(moments, groups, epsilon):
    """R² of the per-channel least-squares fit γ·GN_G(x) + β ≈ y, from `sample_channel_sums`.

    GN_G(x) = (x − μ_g)/√(σ²_g + ε) per sample and group; with the group's μ and 1/σ known,
    Σn, Σn² and Σn·y per channel follow from the sums without running the layer. The group
    variances come from raw sums in float64: accurate enough to rank group counts; the
    chosen count's fit is then measured on the layer itself.
    """
    positions, (sx, sxx, sxy, sy, syy) = moments
    samples, channels = sx.shape
    per = channels // groups
    count = positions * per
    mean = sx.reshape(samples, groups, per).sum(-1) / count
    var = np.maximum(sxx.reshape(samples, groups, per).sum(-1) / count - mean ** 2, 0.0)
    mu = np.repeat(mean, per, axis=1)
    inv = np.repeat(1.0 / np.sqrt(var + epsilon), per, axis=1)
    n_total = samples * positions
    sn = ((sx - positions * mu) * inv).sum(0)
    snn = ((sxx - 2 * mu * sx + positions * mu * mu) * inv * inv).sum(0)
    sny = ((sxy - mu * sy) * inv).sum(0)
    sy_total, syy_total = sy.sum(0), syy.sum(0)
    cnn = snn - sn ** 2 / n_total
    cny = sny - sn * sy_total / n_total
    cyy = syy_total - sy_total ** 2 / n_total
    explained = np.where(cnn > 0, cny ** 2 / np.maximum(cnn, 1e-300), 0.0)
    return float(explained.sum() / max(cyy.sum(), 1e-300))
