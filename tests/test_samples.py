"""Sample handling: which evaluation samples were calibration samples too."""

import numpy as np

from normswap.samples import samples_in_common


def test_samples_in_common_counts_value_equal_samples_across_batches_and_inputs():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 4, 4, 3)).astype("float32")
    extras = rng.normal(size=(10, 5)).astype("float32")
    calibration = [[images[:6], extras[:6]], [images[6:8], extras[6:8]]]  # samples 0-7
    changed = extras[7:10].copy()
    changed[0, 2] += 1e-6  # sample 7: same image, another second input
    evaluation = [[images[5:7], extras[5:7]], [images[7:10], changed]]  # samples 5-9
    assert samples_in_common(calibration, evaluation) == 2  # 5 and 6; not 7, 8 or 9
    assert samples_in_common(calibration, calibration) == 8
    assert samples_in_common(evaluation, calibration) == 2
    copies = [[images[5:6].copy(), extras[5:6].copy()]] * 3  # each copy counts
    assert samples_in_common(calibration, copies) == 3
    assert samples_in_common([[images[:3]]], [[images[3:]]]) == 0
