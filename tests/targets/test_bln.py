"""The bln target: Batch-Layer Normalization, exact at conversion, trainable after."""

import numpy as np

import normswap
from tests.checks import gap
from tests.models import small_cnn


def test_bln_is_exact_at_inference_and_trains():
    model = small_cnn()
    result = normswap.convert(model, "bln", exact=True)
    assert result.report.exact and gap(model, result.model) <= 1e-4
    new = result.model
    new.compile("sgd", "mse")
    new.fit(np.random.default_rng(0).normal(size=(8, 12, 12, 3)), np.zeros((8, 5)), verbose=0)
    assert float(new.get_layer("b1_bn").moving_inverse_batch_size.numpy()) > 0
