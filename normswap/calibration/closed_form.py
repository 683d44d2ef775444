"""Response statistics in closed form: what a fit needs, without running the layer.

A per-sample normalization (GroupNorm, LayerNorm as one group, InstanceNorm, FRN) maps
each (sample, channel) slice of its input by one affine map, n = (x − m)·a, whose m and a
depend only on that sample's per-channel moments over the spatial axes. So the per-channel
sums behind a least-squares fit γ·n + β ≈ y (`affine_fit.AffineStats`) follow from five
small (samples, channels) arrays — the means of x and y and the centred sums
Σ(x − x̄)², Σ(x − x̄)(y − ȳ), Σ(y − ȳ)² over each slice — for any group count or ε,
without running the layer once per candidate. Calibration then runs the chosen layer only
in its forward pass.

Precision: the slice moments are computed on the backend in float32, two passes (means,
then centred products), and everything after them in float64. Nothing is formed as
E[x²] − E[x]², so large means do not cancel; the first-order rounding is that of the
float32 slice means, as in the layers themselves.
"""

import numpy as np
from keras import ops

from normswap.calibration.affine_fit import AffineStats


class SliceMoments:
    """Per (sample, channel) over the spatial axes, as float64 (samples, channels) arrays:
    `mean_x`, `mean_y`, the centred sums `sxx`, `sxy`, `syy`; `positions` per slice."""

    def __init__(self, positions, mean_x, mean_y, sxx, sxy, syy):
        self.positions = float(positions)
        self.mean_x, self.mean_y = mean_x, mean_y
        self.sxx, self.sxy, self.syy = sxx, sxy, syy


def slice_moments(inputs, outputs, axis):
    """`SliceMoments` of the layer inputs `x` against the targets `y` (lists of backend
    tensors, one per batch, of the same shape; channel axis `axis` ≥ 1)."""
    parts = []
    for x, y in zip(inputs, outputs):
        x, y = ops.cast(x, "float32"), ops.cast(y, "float32")
        spatial = tuple(a for a in range(1, len(x.shape)) if a != axis)
        if spatial:
            mean_x = ops.mean(x, axis=spatial, keepdims=True)
            mean_y = ops.mean(y, axis=spatial, keepdims=True)
            dx, dy = x - mean_x, y - mean_y
            channels = x.shape[axis]
            values = [ops.reshape(mean_x, (-1, channels)), ops.reshape(mean_y, (-1, channels)),
                      ops.sum(dx * dx, axis=spatial), ops.sum(dx * dy, axis=spatial),
                      ops.sum(dy * dy, axis=spatial)]
        else:  # (N, C): one position per slice
            zeros = ops.zeros_like(x)
            values = [x, y, zeros, zeros, zeros]
        parts.append([np.asarray(ops.convert_to_numpy(v), np.float64) for v in values])
    shape = inputs[0].shape
    positions = np.prod([d for a, d in enumerate(shape) if a not in (0, axis)], dtype=float)
    return SliceMoments(positions, *(np.concatenate(arrays) for arrays in zip(*parts)))


def stats_of_slices(positions, mean_n, snn, sny, mean_y, syy):
    """`AffineStats` of n against y over all samples, from per-(sample, channel) means
    and centred sums (merged exactly: total = within slices + between slices)."""
    stats = AffineStats(mean_n.shape[1])
    stats.count = mean_n.shape[0] * positions
    stats.mean_n, stats.mean_y = mean_n.mean(0), mean_y.mean(0)
    dn, dy = mean_n - stats.mean_n, mean_y - stats.mean_y
    stats.cnn = snn.sum(0) + positions * (dn * dn).sum(0)
    stats.cny = sny.sum(0) + positions * (dn * dy).sum(0)
    stats.cyy = syy.sum(0) + positions * (dy * dy).sum(0)
    return stats


def group_norm_stats(moments, groups, epsilon):
    """`AffineStats` of GroupNormalization's normalized response (γ = 1, β = 0) with
    `groups` groups of consecutive channels: n = (x − μ_g)/√(σ²_g + ε) per sample and
    group, σ²_g the biased variance over the group's slices (law of total variance)."""
    m = moments
    samples, channels = m.mean_x.shape
    per = channels // groups
    grouped = m.mean_x.reshape(samples, groups, per)
    mean = grouped.mean(-1, keepdims=True)
    within = m.sxx.reshape(samples, groups, per).sum(-1, keepdims=True) / m.positions
    variance = (within + ((grouped - mean) ** 2).sum(-1, keepdims=True)) / per
    inv = 1.0 / np.sqrt(variance + epsilon)
    mean_n = ((grouped - mean) * inv).reshape(samples, channels)
    scale = np.broadcast_to(inv, grouped.shape).reshape(samples, channels)
    return stats_of_slices(m.positions, mean_n, m.sxx * scale * scale, m.sxy * scale,
                           m.mean_y, m.syy)


def frn_stats(moments, epsilon):
    """`AffineStats` of FRN's response (γ = 1, β = 0, TLU off): n = x/√(ν² + ε) per
    slice, ν² = the slice's mean square = variance + mean²."""
    m = moments
    nu2 = m.sxx / m.positions + m.mean_x ** 2
    scale = 1.0 / np.sqrt(nu2 + abs(epsilon))
    return stats_of_slices(m.positions, m.mean_x * scale, m.sxx * scale * scale,
                           m.sxy * scale, m.mean_y, m.syy)
