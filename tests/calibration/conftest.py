"""Fixtures of the calibration tests."""

import pytest

from normswap.demo_data import load_demo_digits, load_demo_model


@pytest.fixture(scope="module")
def trained():
    """The bundled demo CNN, 128 unlabelled digits to calibrate on, 128 others held out."""
    x, _ = load_demo_digits()
    return load_demo_model(), x[:128], x[128:256]
