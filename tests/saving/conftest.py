"""Fixtures of the saving tests: model files written by Keras 2 (tf_keras)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

WRITER = Path(__file__).with_name("keras2_writer.py")


@pytest.fixture(scope="session")
def keras2_files(tmp_path_factory):
    """A folder of .h5 files written by tf_keras, and expected.npz: what tf_keras computed on
    them (see keras2_writer.py). Written once per session, in a separate process: the tests
    never import tf_keras, so they load the files as a Keras 3 user would."""
    folder = tmp_path_factory.mktemp("keras2")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(WRITER), str(folder)], capture_output=True,
                            text=True, env=env, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"{WRITER.name} failed:\n{result.stderr[-4000:]}")
    return folder
