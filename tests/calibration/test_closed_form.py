"""Response statistics in closed form (calibration/closed_form.py), against running the
layer and fitting γ·n + β ≈ y per channel with NumPy's least squares."""

import keras
import numpy as np
import pytest

from normswap.calibration.closed_form import frn_stats, group_norm_stats, slice_moments
from normswap.layers import FilterResponseNormalization


def samples(seed, shape, mean, split):
    """Inputs x and targets y (a per-channel tanh of x, plus noise), in two batches split
    at sample `split`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, 2.0, size=shape).astype("float32")
    y = (np.tanh(x) * rng.uniform(0.5, 2, shape[-1])
         + rng.normal(0, 0.1, x.shape)).astype("float32")
    return x, y, slice_moments([x[:split], x[split:]], [y[:split], y[split:]], axis=3)


def assert_fit_as_by_least_squares(stats, response, y):
    """`stats` give, per channel, the least-squares γ, β of the layer's `response` to `y`,
    and the R² of that fit over all channels."""
    channels = y.shape[-1]
    n, target = response.reshape(-1, channels), y.reshape(-1, channels)
    gamma, beta = stats.fit(True, True)
    sse = sst = 0.0
    for c in range(channels):
        design = np.stack([n[:, c], np.ones(len(n))], axis=1)
        coef, *_ = np.linalg.lstsq(design, target[:, c], rcond=None)
        sse += np.sum((design @ coef - target[:, c]) ** 2)
        sst += np.sum((target[:, c] - target[:, c].mean()) ** 2)
        np.testing.assert_allclose([gamma[c], beta[c]], coef, rtol=1e-4, atol=1e-5)
    assert stats.r2(gamma, beta) == pytest.approx(1 - sse / sst, abs=1e-4)


@pytest.mark.parametrize("epsilon", [1e-6, 0.1, 3.0])
def test_frn_stats_are_those_of_running_the_layer(epsilon):
    x, y, moments = samples(7, (12, 5, 5, 6), mean=0.5, split=5)
    response = np.asarray(FilterResponseNormalization(epsilon=epsilon, use_tlu=False)(x))
    assert_fit_as_by_least_squares(frn_stats(moments, epsilon), response, y)


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16])
def test_group_norm_stats_are_those_of_running_the_layer(groups):
    x, y, moments = samples(6, (24, 5, 5, 16), mean=1.0, split=12)
    layer = keras.layers.GroupNormalization(groups=groups, epsilon=1e-3, center=False,
                                            scale=False)
    assert_fit_as_by_least_squares(group_norm_stats(moments, groups, 1e-3),
                                   layer(x).numpy(), y)
