"""Shared test fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def realmodels():
    """The folder of real trained legacy Keras models (read-only; never write into it).

    Found at `$NORMSWAP_REALMODELS`, else at `<repo root>/../shared/realmodels`. CI always
    has it, so a missing folder fails the tests that need it instead of skipping them.
    """
    env = os.environ.get("NORMSWAP_REALMODELS")
    repo_root = Path(__file__).resolve().parents[1]
    folder = Path(env) if env else repo_root.parent / "shared" / "realmodels"
    if not (folder / "README.md").is_file():
        pytest.fail(f"the real-models folder is missing: {folder} (set NORMSWAP_REALMODELS)")
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
