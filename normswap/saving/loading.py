"""`load_model`: the one loader — files, `keras:<Name>`, legacy fix-ups, seed layers, safe mode.

Files are looked at with h5py / zipfile first, so a file that cannot work (weights only,
not a model, a SavedModel directory, Python code in a Lambda layer, ...) gets a precise
one-line error instead of a Keras traceback. A legacy `.h5` that Keras 3 rejects for a
known, harmless reason is rebuilt from a fixed copy of its config (`legacy/`) with its
own weights. A legacy `.h5` holding layers of known third-party Keras 2 libraries
(`seeds/`) is rebuilt with those layers mapped onto normswap's or Keras's, with their
trained numbers; what changed is recorded with the model (`load_notes.py`). Input files
are only ever opened for reading.
"""

import contextlib
import io
import json
import logging
import os
import threading
import zipfile
from pathlib import Path

import h5py
import keras

from normswap.errors import InputFileError, UsageError
from normswap.saving import legacy, seeds
from normswap.saving.applications import PREFIX, load_application
from normswap.saving.file_info import read_h5_model_config
from normswap.saving.load_errors import error_text, explain_load_error
from normswap.saving.load_notes import record_load_notes
from normswap.saving.paths import KERAS_SUFFIXES, check_model_path
from normswap.saving.safety import refuse_stored_code

logger = logging.getLogger("normswap")


def load_model(source, *, weights="imagenet", custom_objects=None, safe_mode=True,
               group_norm_seed=None):
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
        group_norm_seed: for legacy files whose GroupNormalization layers come from a
            Keras 2 library: "titu1994" (titu1994/Keras-Group-Normalization) or
            "keras-contrib", the library that wrote them. Needed only where the two
            compute different functions for the file's weights (the load says so);
            None (the default) refuses to guess there.

    Layers of known third-party Keras 2 libraries in a legacy `.h5` file (SwitchNorm,
    BatchRenorm, FRN, GroupNorm, InstanceNorm and BLN layers, see `seeds/`) load as
    normswap's, Keras's or a `Keras2*` compatibility layer, with their trained numbers
    and no custom_objects; `load_notes(model)` says what each became.

    Returns:
        The model, uncompiled.

    Raises:
        InputFileError (UnsafeModelError for stored code) or UsageError: with a one-line
            message naming the file and what to do, when the source cannot be loaded.
    """
    try:
        seeds.check_group_norm_seed(group_norm_seed)
    except ValueError as error:
        raise UsageError(str(error)) from None
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
        archive_config = _keras_archive_config(path)
        if safe_mode:
            refuse_stored_code(path, archive_config)
        return _load_keras(path, custom_objects, safe_mode,
                           skip_random_init=_only_known_classes(archive_config))
    config = read_h5_model_config(path)
    if safe_mode:
        refuse_stored_code(path, config)
    config, early = legacy.apply_fixes(config, legacy.before_load_fixes())
    if early:
        used = ", ".join(dict.fromkeys(name for name, _ in early))
        logger.info("%s: Keras 2 conventions Keras 3 misreads; applied %s to %d layer(s) "
                    "before loading", path, used, len(early))
    with h5py.File(path, "r") as h5_file:
        try:
            found = seeds.find_seed_layers(h5_file, config, custom_objects, group_norm_seed)
        except seeds.SeedRefusal as error:
            raise InputFileError(f"{path}: {error}") from None
    if found:
        return _load_h5_seeds(path, config, found, custom_objects, safe_mode)
    return _load_h5(path, config, custom_objects, safe_mode, plain=not early)


def _keras_archive_config(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return {}  # Keras's own loader will say what is wrong


def _load_keras(path, custom_objects, safe_mode, skip_random_init=False):
    scope = _random_initializers_skipped() if skip_random_init else contextlib.nullcontext()
    try:
        with scope:
            return keras.models.load_model(path, compile=False,
                                           custom_objects=custom_objects,
                                           safe_mode=safe_mode)
    except Exception as error:
        raise explain_load_error(path, error) from error


# Modules whose layers load every variable they create from the file (Keras's default
# `load_own_variables`, which refuses a file holding fewer variables than the layer).
_KNOWN_MODULES = ("keras", "normswap")


def _only_known_classes(config):
    """Whether every object a `.keras` config deserializes comes from Keras or normswap."""
    if not isinstance(config, dict) or not config:
        return False
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module, name = node.get("module"), node.get("class_name")
            if isinstance(name, str) and not (
                    isinstance(module, str) and module.split(".", 1)[0] in _KNOWN_MODULES
                    or module is None and _is_marker(name)):
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _is_marker(name):
    """Keras's own serialization markers (`__keras_tensor__`, `__tuple__`, ...); a stored
    function (`__lambda__`) is not one."""
    return name.startswith("__") and name.endswith("__") and name != "__lambda__"


_skip_state = threading.local()
_skip_lock = threading.Lock()
_skip_users = 0
_skip_original = None


@contextlib.contextmanager
def _random_initializers_skipped():
    """While a `.keras` file of Keras and normswap layers loads in this thread, variables
    whose initializer is random start as zeros instead.

    Keras builds the model, drawing every kernel at random (a ResNet50's 25 M values cost
    about a sixth of its load), then overwrites each variable with the file's value; its
    loader refuses a file that lacks any variable of these layers, so the draws are never
    seen. Constant initializers (seed-generator states among them) are left alone. Other
    threads are not affected. Where Keras's variables do not look as expected, nothing is
    changed.
    """
    global _skip_users, _skip_original
    try:
        from keras.src.backend import Variable
        from keras.src.initializers import Zeros
        from keras.src.initializers.random_initializers import RandomInitializer
    except ImportError:  # pragma: no cover - a Keras laid out differently
        yield
        return
    if not callable(getattr(Variable, "_initialize_with_initializer", None)):
        yield  # pragma: no cover
        return
    with _skip_lock:
        if _skip_users == 0:
            original = Variable._initialize_with_initializer
            zeros = Zeros()

            def initialize(variable, initializer):
                if getattr(_skip_state, "active", False) and isinstance(initializer,
                                                                        RandomInitializer):
                    initializer = zeros
                return original(variable, initializer)

            _skip_original = (original, "_initialize_with_initializer" in vars(Variable))
            Variable._initialize_with_initializer = initialize
        _skip_users += 1
    previous = getattr(_skip_state, "active", False)
    _skip_state.active = True
    try:
        yield
    finally:
        _skip_state.active = previous
        with _skip_lock:
            _skip_users -= 1
            if _skip_users == 0:
                original, own = _skip_original
                if own:
                    Variable._initialize_with_initializer = original
                else:  # pragma: no cover - inherited: drop the override
                    del Variable._initialize_with_initializer
                _skip_original = None


def _load_h5(path, config, custom_objects, safe_mode, plain=True):
    """Keras's own load of the file (`plain`: `config` is the file's), else of `config`;
    then the legacy fixes if Keras rejects it."""
    def build(fixed):
        return _load_h5_with_config(path, fixed, custom_objects, safe_mode)

    if not plain:
        return _with_legacy_fixes(path, config, build)
    try:
        return keras.models.load_model(path, compile=False, custom_objects=custom_objects,
                                       safe_mode=safe_mode)
    except Exception as error:
        first_error = error
    return _load_h5_fixed(path, config, first_error, build)


def _load_h5_seeds(path, config, found, custom_objects, safe_mode):
    """Load a legacy file holding seed layers (`seeds/`): learn their input shapes from
    the model built with Identity layers in their place, map them, and load the file
    with the mapped layers' config and weights."""
    skeleton = _with_legacy_fixes(
        path, seeds.skeleton_config(config, found),
        lambda fixed: _model_from_config(fixed, custom_objects, safe_mode), log=False)
    try:
        mapped = seeds.map_seed_layers(seeds.with_input_shapes(found, skeleton))
    except seeds.SeedRefusal as error:
        raise InputFileError(f"{path}: {error}") from None
    weights = seeds.mapped_weights(mapped)
    model = _with_legacy_fixes(
        path, seeds.mapped_config(config, mapped),
        lambda fixed: _load_h5_with_config(path, fixed, custom_objects, safe_mode, weights))
    notes = seeds.seed_notes(mapped)
    record_load_notes(model, notes)
    for note in notes:
        logger.log(logging.INFO if note.exact else logging.WARNING, "%s: %s", path, note)
    return model


def _with_legacy_fixes(path, config, build, log=True):
    """`build(config)`, or, if Keras 3 rejects it, `_load_h5_fixed`."""
    try:
        return build(config)
    except Exception as error:
        first_error = error
    return _load_h5_fixed(path, config, first_error, build, log)


def _load_h5_fixed(path, config, error, build, log=True):
    """Keras 3 rejected the legacy file with `error`: rebuild it with `build(config)` from
    a fixed copy of its config, with the fixes that `error` calls for and those keyed on
    the config alone (`legacy/`); repeat while each new error calls for a fix not yet
    used."""
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
            model = build(config)
        except Exception as retry_error:
            error = retry_error
            continue
        used = list(dict.fromkeys(name for name, _ in changed))
        if log:
            logger.info("%s: Keras 3 rejected the legacy config; applied %s to %d layer(s)",
                        path, ", ".join(used), len(changed))
        return model
    raise explain_load_error(path, error) from error


def _model_from_config(model_config, custom_objects, safe_mode):
    """The model of a legacy config, built without weights, as Keras's legacy h5 loader
    builds it."""
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import serialization_lib

    with saving_options.keras_option_scope(use_legacy_config=True), \
            serialization_lib.SafeModeScope(safe_mode):
        return saving_utils.model_from_config(model_config, custom_objects=custom_objects)


def _load_h5_with_config(path, model_config, custom_objects, safe_mode, layer_weights=None):
    """Keras's legacy h5 loader, run on an in-memory copy of `path` with `model_config`.

    The copy keeps the file's weights byte for byte (the optimizer state is left out: the
    model is loaded uncompiled), except the layers in `layer_weights` ({layer name:
    [(weight name, array)]}), whose weights it replaces; the file on disk is only read.
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
        for name, weights in (layer_weights or {}).items():
            seeds.write_layer_weights(patched["model_weights"], name, weights)
        return legacy_h5_format.load_model_from_hdf5(
            patched, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
