"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def realmodels():
    """The folder of real trained legacy Keras models made by other people (read-only;
    never write into it): tests/data/ (see its README), or `$NORMSWAP_REALMODELS`."""
    env = os.environ.get("NORMSWAP_REALMODELS")
    folder = Path(env) if env else DATA
    if not (folder / "README.md").is_file():
        pytest.fail(f"the real-models folder is missing: {folder}")
    return folder


@pytest.fixture(scope="session")
def real_model(realmodels):
    """`real_model(file_name)`: that real model loaded with normswap.saving.load_model, once per
    session (loading is slow on JAX). Tests must not modify the returned model."""
    from normswap.saving import load_model

    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = load_model(realmodels / name)
        return cache[name]

    return load


@pytest.fixture(scope="module")
def trained():
    """The bundled demo CNN, 128 unlabelled digits to calibrate on, 128 others held out."""
    from normswap.demo_data import load_demo_digits, load_demo_model

    x, _ = load_demo_digits()
    return load_demo_model(), x[:128], x[128:256]
