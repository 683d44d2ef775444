"""The groupnorm target: group counts (automatic, explicit, chosen by calibration)."""

import keras
import numpy as np
import pytest

import normswap
from tests.models import small_cnn


def test_groups_auto_rule_and_explicit_groups():
    from normswap.targets.groupnorm import auto_groups

    channels = (8, 16, 24, 64, 72, 144, 512, 2048)
    assert [auto_groups(c) for c in channels] == [1, 1, 1, 4, 4, 9, 32, 32]
    for channels in range(1, 600):
        groups = auto_groups(channels)
        assert channels % groups == 0 and (groups == 1 or channels // groups >= 16)
    the_plan = normswap.plan(small_cnn(), "groupnorm", groups=3)
    assert all(s.action == "skip" and "do not divide" in s.reason for s in the_plan.sites)
    report = normswap.convert(small_cnn(), "groupnorm", groups=4).report
    assert all(s.params == {"groups": 4} for s in report.sites)


def test_group_counts_are_ranked_in_closed_form_as_by_running_the_layer():
    from normswap.calibration.closed_form import group_norm_stats, slice_moments

    rng = np.random.default_rng(6)
    x = rng.normal(1.0, 2.0, size=(24, 5, 5, 16)).astype("float32")
    y = (np.tanh(x) * rng.uniform(0.5, 2, 16) + rng.normal(0, 0.1, x.shape)).astype("float32")
    moments = slice_moments([x[:12], x[12:]], [y[:12], y[12:]], axis=3)
    for groups in (1, 2, 4, 8, 16):
        stats = group_norm_stats(moments, groups, 1e-3)
        n = keras.layers.GroupNormalization(groups=groups, epsilon=1e-3, center=False,
                                            scale=False)(x).numpy().reshape(-1, 16)
        target = y.reshape(-1, 16)
        sse = sst = 0.0
        for c in range(16):
            design = np.stack([n[:, c], np.ones(len(n))], axis=1)
            coef, *_ = np.linalg.lstsq(design, target[:, c], rcond=None)
            sse += np.sum((design @ coef - target[:, c]) ** 2)
            sst += np.sum((target[:, c] - target[:, c].mean()) ** 2)
            gamma, beta = stats.fit(True, True)
            np.testing.assert_allclose([gamma[c], beta[c]], coef, rtol=1e-4, atol=1e-5)
        assert stats.r2(*stats.fit(True, True)) == pytest.approx(1 - sse / sst, abs=1e-4)
