"""`load_model`: the one loader — files, `keras:<Name>`, legacy fix-ups, safe mode.

Files are looked at with h5py / zipfile first, so a file that cannot work (weights only,
not a model, a SavedModel directory, Python code in a Lambda layer, ...) gets a precise
one-line error instead of a Keras traceback. A legacy `.h5` that Keras 3 rejects for a
known, harmless reason is rebuilt from a fixed copy of its config (`legacy.py`) with its
own weights. Input files are only ever opened for reading.
"""

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import h5py
import keras

from normswap.saving import legacy
from normswap.saving.applications import PREFIX, load_application
from normswap.saving.file_info import read_h5_model_config
from normswap.saving.load_errors import error_text, explain_load_error
from normswap.saving.paths import KERAS_SUFFIXES, check_model_path
from normswap.saving.safety import refuse_stored_code

logger = logging.getLogger("normswap")


def load_model(source, *, weights="imagenet", custom_objects=None, safe_mode=True):
    """Load a Keras model from a file, a keras.applications name, or return a live one.

    Args:
        source: a `keras.Model` (returned as is); a path (str or Path) to a `.keras` file
            or a legacy full-model `.h5`/`.hdf5` file; or `"keras:<Name>"` for
            `keras.applications.<Name>` (e.g. "keras:ResNet50").
        weights: for `keras:` names only: "imagenet" (downloaded by Keras, or taken from
            its cache), "none"/None for random initialization, or a path to a weights file.
        custom_objects: {name: class or function} for custom layers the file uses
            (see `load_custom_objects`).
        safe_mode: refuse a file holding Python code (a Lambda layer saved from a lambda)
            before any of it runs. False loads it: only for files you trust.

    Returns:
        The model, uncompiled.

    Raises:
        InputFileError (UnsafeModelError for stored code) or UsageError: with a one-line
            message naming the file and what to do, when the source cannot be loaded.
    """
    if isinstance(source, keras.Model):
        return source
    if isinstance(source, str) and source.startswith(PREFIX):
        return load_application(source[len(PREFIX):], weights)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "load_model expects a keras.Model, a file path or 'keras:<Name>'. "
            f"Received: {type(source).__name__}")
    path = check_model_path(Path(source))
    if path.suffix.lower() in KERAS_SUFFIXES:
        if safe_mode:
            refuse_stored_code(path, _keras_archive_config(path))
        return _load_keras(path, custom_objects, safe_mode)
    config = read_h5_model_config(path)
    if safe_mode:
        refuse_stored_code(path, config)
    return _load_h5(path, config, custom_objects, safe_mode)


def _keras_archive_config(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return {}  # Keras's own loader will say what is wrong


def _load_keras(path, custom_objects, safe_mode):
    try:
        return keras.models.load_model(path, compile=False, custom_objects=custom_objects,
                                       safe_mode=safe_mode)
    except Exception as error:
        raise explain_load_error(path, error) from error


def _load_h5(path, config, custom_objects, safe_mode):
    try:
        return keras.models.load_model(path, compile=False, custom_objects=custom_objects,
                                       safe_mode=safe_mode)
    except Exception as error:
        first_error = error
    return _load_h5_fixed(path, config, custom_objects, safe_mode, first_error)


def _load_h5_fixed(path, config, custom_objects, safe_mode, error):
    """Keras 3 rejected the legacy file with `error`: rebuild it from a fixed copy of its
    config, with the fixes that `error` calls for and those keyed on the config alone
    (`legacy.py`); repeat while each new error calls for a fix not yet used."""
    applied, changed = [], []
    while True:
        candidates = legacy.fixes_for(error_text(error)) + legacy.config_fixes()
        fixes = [fix for fix in candidates if fix.name not in applied]
        config, changes = legacy.apply_fixes(config, fixes)
        applied.extend(fix.name for fix in fixes)
        if not changes:
            break
        changed.extend(changes)
        try:
            model = _load_h5_with_config(path, config, custom_objects, safe_mode)
        except Exception as retry_error:
            error = retry_error
            continue
        used = list(dict.fromkeys(name for name, _ in changed))
        logger.info("%s: Keras 3 rejected the legacy config; applied %s to %d layer(s)",
                    path, ", ".join(used), len(changed))
        return model
    raise explain_load_error(path, error) from error


def _load_h5_with_config(path, model_config, custom_objects, safe_mode):
    """Keras's legacy h5 loader, run on an in-memory copy of `path` with `model_config`.

    The copy keeps the file's weights byte for byte (the optimizer state is left out: the
    model is loaded uncompiled); the file on disk is only read.
    """
    from keras.src.legacy.saving import legacy_h5_format

    buffer = io.BytesIO()
    with h5py.File(path, "r") as source, h5py.File(buffer, "w") as patched:
        for key, value in source.attrs.items():
            patched.attrs[key] = value
        patched.attrs["model_config"] = json.dumps(model_config)
        for name in source:
            if name != "optimizer_weights":
                source.copy(source[name], patched, name=name)
        return legacy_h5_format.load_model_from_hdf5(
            patched, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
