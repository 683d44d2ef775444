"""Atomic saving: a temporary file in the target directory, then a rename.

A failure at any point (Keras raising, the disk filling up, the process interrupted)
leaves no partial or temporary file, and an existing output untouched.
"""

import logging
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

import keras

from normswap.errors import SaveError
from normswap.saving.load_errors import error_summary
from normswap.saving.paths import H5_SUFFIXES, check_output_path


def save_model(model, path, *, force=False, protected=()):
    """Save `model` atomically and return the path written.

    The format follows the extension: `.keras` (also added when `path` has no extension)
    or legacy `.h5`/`.hdf5`. The model is written to a hidden temporary file in the target
    directory and renamed into place, so a failure never leaves a half-written file (the
    temporary file is removed).

    Args:
        model: the keras.Model to save.
        path: the output file.
        force: overwrite an existing output file.
        protected: paths never to write over (the input model), whatever `force` says.

    Raises:
        UsageError: bad extension, missing or read-only directory, the output is protected
            or exists (without force).
        SaveError: Keras failed to write the model (exit status 1).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"save_model expects a keras.Model. Received: {type(model).__name__}")
    path = check_output_path(path, force=force, protected=protected)
    temporary = _temporary_path(path)
    try:
        if path.suffix.lower() in H5_SUFFIXES:
            with _quiet_h5_legacy_warning():
                model.save(temporary)
        else:
            model.save(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        _remove_quietly(temporary)
        if not isinstance(error, Exception):
            raise
        raise SaveError(f"could not save the model to {path}: {error_summary(error)}") from error
    return path


def _temporary_path(path):
    while True:
        # Keras picks the format from the (lower-case) extension of the name it is given.
        suffix = path.suffix.lower()
        candidate = Path(path).with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{suffix}")
        if not os.path.lexists(candidate):
            return candidate


def _remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


class _DropMessage(logging.Filter):
    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.getMessage()).startswith(self.prefix)


@contextmanager
def _quiet_h5_legacy_warning():
    """Silence Keras's "You are saving your model as an HDF5 file ... legacy" warning.

    Saving .h5 is what the user asked for; Keras logs the warning through absl.
    """
    absl_logger = logging.getLogger("absl")
    drop = _DropMessage("You are saving your model as an HDF5 file")
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)
