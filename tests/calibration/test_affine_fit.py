"""The streaming least-squares fit γ·n + β ≈ y per channel, against NumPy on all rows at once."""

import numpy as np
import pytest
from keras import ops

from normswap.calibration.affine_fit import AffineStats, channel_rows

CHANNELS = 5


@pytest.fixture(scope="module")
def rows():
    """Rows of (n, y) with non-zero means and per-channel slopes, in three uneven batches;
    channel 4 of n is constant (nothing to fit a slope to)."""
    rng = np.random.default_rng(11)
    n = rng.normal(1.5, 2.0, size=(70, CHANNELS)) + np.arange(CHANNELS)
    n[:, 4] = 0.75
    slope, intercept = rng.uniform(0.5, 3.0, CHANNELS), rng.normal(2.0, 1.0, CHANNELS)
    y = n * slope + intercept + rng.normal(0, 0.3, size=n.shape) + 0.02 * n ** 2
    return n.astype("float32"), y.astype("float32")


@pytest.fixture(scope="module")
def stats(rows):
    n, y = rows
    stats = AffineStats(CHANNELS)
    for start, stop in ((0, 9), (9, 40), (40, 70)):  # batches of 9, 31 and 30 rows
        stats.add(ops.convert_to_tensor(n[start:stop]), ops.convert_to_tensor(y[start:stop]))
    return stats


def lstsq(columns, target):
    solution, *_ = np.linalg.lstsq(np.stack(columns, axis=1), target, rcond=None)
    return solution


def test_merged_batches_hold_the_moments_of_all_rows(rows, stats):
    n, y = (a.astype(np.float64) for a in rows)
    assert stats.count == len(n)
    np.testing.assert_allclose(stats.mean_n, n.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.mean_y, y.mean(0), rtol=1e-6)
    dn, dy = n - n.mean(0), y - y.mean(0)
    np.testing.assert_allclose(stats.cnn, (dn * dn).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.cny, (dn * dy).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.cyy, (dy * dy).sum(0), rtol=1e-5)


def test_gamma_and_beta_are_the_least_squares_fit(rows, stats):
    n, y = (a.astype(np.float64) for a in rows)
    gamma, beta = stats.fit(True, True)
    for c in range(CHANNELS - 1):
        np.testing.assert_allclose([gamma[c], beta[c]],
                                   lstsq([n[:, c], np.ones(len(n))], y[:, c]), rtol=1e-5)
    assert gamma[4] == 0.0  # a constant response: β alone carries the channel
    assert beta[4] == pytest.approx(y[:, 4].mean(), rel=1e-6)


def test_gamma_only_is_the_fit_through_the_origin(rows, stats):
    n, y = (a.astype(np.float64) for a in rows)
    gamma, beta = stats.fit(True, False)
    for c in range(CHANNELS):
        np.testing.assert_allclose(gamma[c], lstsq([n[:, c]], y[:, c])[0], rtol=1e-5)
    np.testing.assert_array_equal(beta, np.zeros(CHANNELS))


def test_beta_only_is_the_mean_residual(rows, stats):
    n, y = (a.astype(np.float64) for a in rows)
    gamma, beta = stats.fit(False, True)
    np.testing.assert_array_equal(gamma, np.ones(CHANNELS))
    np.testing.assert_allclose(beta, (y - n).mean(0), rtol=1e-5, atol=1e-6)


def test_neither_is_the_identity(stats):
    gamma, beta = stats.fit(False, False)
    np.testing.assert_array_equal(gamma, np.ones(CHANNELS))
    np.testing.assert_array_equal(beta, np.zeros(CHANNELS))


def test_an_all_zero_response_fits_no_slope_through_the_origin():
    stats = AffineStats(2)
    stats.add(ops.zeros((6, 2)), ops.ones((6, 2)))
    gamma, beta = stats.fit(True, False)
    np.testing.assert_array_equal(gamma, [0.0, 0.0])
    np.testing.assert_array_equal(beta, [0.0, 0.0])


@pytest.mark.parametrize("fit", [(True, True), (True, False), (False, True), (False, False)])
def test_r2_is_one_minus_sse_over_sst(rows, stats, fit):
    n, y = (a.astype(np.float64) for a in rows)
    gamma, beta = stats.fit(*fit)
    sse = ((gamma * n + beta - y) ** 2).sum()
    sst = ((y - y.mean(0)) ** 2).sum()
    assert stats.r2(gamma, beta) == pytest.approx(1 - sse / sst, abs=1e-6)


def test_a_fit_worse_than_the_mean_has_negative_r2(stats):
    gamma, beta = stats.fit(True, True)
    assert stats.r2(-gamma, beta) < 0


@pytest.mark.parametrize("axis", [1, 3, -1])
def test_channel_rows_put_the_channel_axis_last(axis):
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype("float64")
    expected = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]).astype("float32")
    rows = ops.convert_to_numpy(channel_rows(ops.convert_to_tensor(x), axis))
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, expected)


def test_an_exact_affine_relation_has_r2_one():
    rng = np.random.default_rng(4)
    n = rng.normal(0.3, 0.05, size=(40, 3)).astype("float32")
    stats = AffineStats(3)
    stats.add(ops.convert_to_tensor(n), ops.convert_to_tensor(2.0 * n + 1.0))
    gamma, beta = stats.fit(True, True)
    np.testing.assert_allclose(gamma, 2.0, rtol=1e-4)
    np.testing.assert_allclose(beta, 1.0, rtol=1e-4)
    assert stats.r2(gamma, beta) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("fit", [(True, True), (True, False), (False, True), (False, False)])
def test_tiny_activations_fit_as_well_as_large_ones(rows, fit):
    """Sums far below 1 (activations of order 1e-3) must not hit any floor: the same rows
    scaled down give the same γ, β scaled accordingly, per channel, and the same R²."""
    n, y = rows
    scale = 1e-3
    large, tiny = AffineStats(CHANNELS), AffineStats(CHANNELS)
    large.add(ops.convert_to_tensor(n), ops.convert_to_tensor(y))
    tiny.add(ops.convert_to_tensor(n * scale), ops.convert_to_tensor(y * scale))
    gamma, beta = tiny.fit(*fit)
    assert gamma.shape == beta.shape == (CHANNELS,)
    expected_gamma, expected_beta = large.fit(*fit)
    np.testing.assert_allclose(gamma, expected_gamma, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(beta, expected_beta * scale, rtol=1e-4, atol=1e-9)
    assert tiny.r2(gamma, beta) == pytest.approx(large.r2(expected_gamma, expected_beta),
                                                 abs=1e-5)
