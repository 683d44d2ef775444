"""Per-channel least-squares fit of an affine map γ·n + β to a target y, streamed.

The sums behind the fit are accumulated batch by batch: each batch's means and centred
second moments are computed on the backend in float32 and merged into float64 totals with
the pairwise update of Chan et al., which stays accurate when the means are large against
the spread (no E[x²] − E[x]² cancellation). The fit is closed form:

    γ_c = cov(n_c, y_c) / var(n_c),     β_c = ȳ_c − γ_c·n̄_c

and its quality R² = 1 − SSE/SST over all channels.
"""

import numpy as np
from keras import ops


class AffineStats:
    """Per-channel count, means and centred second moments of (n, y), merged batch by batch.

    Each batch's means and centred sums are computed on the backend in float32 and merged
    into float64 totals with the pairwise update of Chan et al., which stays accurate when
    the means are large against the spread (no E[x²] − E[x]² cancellation).
    """

    def __init__(self, channels):
        self.count = 0.0
        self.mean_n = np.zeros(channels)
        self.mean_y = np.zeros(channels)
        self.cnn = np.zeros(channels)  # Σ (n − n̄)²
        self.cny = np.zeros(channels)  # Σ (n − n̄)(y − ȳ)
        self.cyy = np.zeros(channels)  # Σ (y − ȳ)²

    def add(self, n, y):
        """Merge one batch of (positions, channels) float32 tensors."""
        k = float(n.shape[0])
        mean_n, mean_y = ops.mean(n, axis=0), ops.mean(y, axis=0)
        dn, dy = n - mean_n, y - mean_y
        batch = [np.asarray(ops.convert_to_numpy(v), np.float64) for v in (
            mean_n, mean_y, ops.sum(dn * dn, axis=0), ops.sum(dn * dy, axis=0),
            ops.sum(dy * dy, axis=0))]
        total = self.count + k
        delta_n, delta_y = batch[0] - self.mean_n, batch[1] - self.mean_y
        weight = self.count * k / total
        self.cnn += batch[2] + delta_n * delta_n * weight
        self.cny += batch[3] + delta_n * delta_y * weight
        self.cyy += batch[4] + delta_y * delta_y * weight
        self.mean_n += delta_n * k / total
        self.mean_y += delta_y * k / total
        self.count = total

    def fit(self, has_gamma, has_beta):
        """The least-squares (γ, β) per channel; γ fixed at 1 / β at 0 where absent."""
        n, mean_n, mean_y = self.count, self.mean_n, self.mean_y
        if has_gamma and has_beta:
            gamma = np.where(self.cnn > 1e-12 * n, self.cny / np.maximum(self.cnn, 1e-300), 0.0)
            return gamma, mean_y - gamma * mean_n
        if has_gamma:
            snn = self.cnn + n * mean_n ** 2
            sny = self.cny + n * mean_n * mean_y
            return np.where(snn > 0, sny / np.maximum(snn, 1e-300), 0.0), np.zeros_like(snn)
        if has_beta:
            return np.ones_like(mean_n), mean_y - mean_n
        return np.ones_like(mean_n), np.zeros_like(mean_n)

    def r2(self, gamma, beta):
        """1 − SSE/SST over all channels for the output γ·n + β."""
        residual_mean = self.mean_y - gamma * self.mean_n - beta
        sse = (self.cyy - 2 * gamma * self.cny + gamma ** 2 * self.cnn
               + self.count * residual_mean ** 2)
        return float(1.0 - max(sse.sum(), 0.0) / max(self.cyy.sum(), 1e-300))


def channel_rows(value, axis):
    """A tensor as a float32 (positions, channels) backend tensor, channels from `axis`."""
    value = ops.cast(value, "float32")
    value = ops.moveaxis(value, axis, -1)
    return ops.reshape(value, (-1, value.shape[-1]))
