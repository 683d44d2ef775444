"""How far a converted model's outputs are from the original's (shared by the tests)."""

import numpy as np

from normswap.verify import outputs_of, probe_batch


def relative_gap(old, new, batch):
    """max |Δ| over all outputs on `batch`, relative to the original's largest output."""
    a, b = outputs_of(old, batch), outputs_of(new, batch)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / max(
        float(np.max(np.abs(x))) for x in a)


def gap(old, new, seed=3):
    """`relative_gap` of the first output on a generated probe batch."""
    batch = probe_batch(old, seed=seed)
    a, b = outputs_of(old, batch)[0], outputs_of(new, batch)[0]
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def mean_deviation(old, new, samples):
    """Mean |Δ| of the first output on `samples`."""
    a, b = outputs_of(old, samples)[0], outputs_of(new, samples)[0]
    return float(np.mean(np.abs(a - b)))
