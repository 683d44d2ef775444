"""Keep TensorFlow's native start-up chatter off the normswap command's stderr.

TensorFlow's C++ runtime writes start-up lines (oneDNN, CUDA probes, cuInit failures on
machines without a GPU) straight to file descriptor 2, before any Python logging setting
applies. The command promises one clear line on stderr per failure, so while it imports
Keras and initialises the device it points descriptor 2 at /dev/null. Library users
(`import normswap` in their own program) see TensorFlow exactly as they would without us,
unless they set NORMSWAP_QUIET=1 before the import (the benchmarks do).
"""

import contextlib
import os
import sys


def running_as_command():
    """True in the `normswap` console command, unless --debug asks to see everything."""
    return os.path.basename(sys.argv[0] or "") == "normswap" and "--debug" not in sys.argv


def quiet_wanted():
    """Whether importing normswap should keep TensorFlow's native lines off stderr: in the
    command (`running_as_command`), or when the environment sets NORMSWAP_QUIET=1."""
    return running_as_command() or os.environ.get("NORMSWAP_QUIET") == "1"


@contextlib.contextmanager
def native_stderr_silenced(enabled=True):
    if not enabled:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras_quietly():
    """Import Keras (and its backend) and touch the device once, silently in the command."""
    quiet = quiet_wanted()
    with native_stderr_silenced(quiet):
        import keras

        if quiet:
            keras.ops.convert_to_numpy(keras.ops.zeros((1,)))
