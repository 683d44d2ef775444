"""Loading and saving models: Keras's own loaders, h5py to look inside, clear errors.

- `load_model(source)` takes a live `keras.Model`, a `.keras` file, a legacy full-model
  `.h5`/`.hdf5` file (Keras 2 / tf.keras era included) or `keras:<Application>`. Files are
  looked at with h5py / zipfile first, so a file that cannot work (weights only, not a
  model, a SavedModel directory, ...) gets a precise one-line `UsageError` instead of a
  Keras traceback. A legacy file that Keras 3 rejects for a known, harmless reason is
  rebuilt from a fixed copy of its config (`normswap.legacy`) with its own weights.
- `save_model(model, path)` writes `.keras` (or `.h5`) to a temporary file beside the
  target and renames it into place: a failure never leaves a half-written file, and the
  input model and existing files are never overwritten unless asked.
- `describe_file(path)` says what a file is without loading it (`normswap inspect`).
- `load_custom_objects(py_file)` imports a user's Python file for `--custom-objects`.

Input files are only ever opened for reading.
"""

import difflib
import importlib.util
import inspect
import io
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import h5py
import keras

from normswap import legacy
from normswap.errors import NormswapError, UsageError

logger = logging.getLogger("normswap")

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
MODEL_SUFFIXES = KERAS_SUFFIXES + H5_SUFFIXES

_SAVE_HINT = 'save it with model.save("model.keras") from the code that built the model'

# What users sometimes pass instead of a Keras model file, and what to tell them.
_OTHER_FORMATS = {
    ".pb": "a TensorFlow graph / SavedModel file, which Keras 3 cannot rebuild into layers",
    ".tflite": "a TensorFlow Lite model, which cannot be turned back into Keras layers",
    ".onnx": "an ONNX model, not a Keras model",
    ".pt": "a PyTorch file, not a Keras model",
    ".pth": "a PyTorch file, not a Keras model",
    ".npz": "a NumPy archive of arrays, not a model",
    ".npy": "a NumPy array, not a model",
    ".json": "an architecture without weights (model.to_json())",
}


# ---------------------------------------------------------------------------------------
# Looking at a file without loading it


def describe_file(path):
    """What kind of model file `path` is, found without building the model.

    Returns a dict with:
        path: the path as given (str).
        format: "keras" (Keras 3 zip), "h5-model" (legacy full model: architecture and
            weights), "h5-weights" (weights only: Keras 2 `save_weights` or Keras 3
            `.weights.h5`), "savedmodel" (TensorFlow SavedModel directory) or "unknown".
        keras_version: the Keras version that wrote the file, when recorded, else None.
        backend: the backend recorded in the file (legacy h5 only), else None.
        model_class: the class of the saved model ("Functional", "Sequential", ...) or None.
        size_bytes: the file size (total size of a directory's files).
        detail: a short human-readable note on what was found.

    The format comes from the content, not the extension. Raises UsageError only if the
    path does not exist.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise UsageError(f"{path}: no such file or directory")
    info = {"path": str(path), "format": "unknown", "keras_version": None, "backend": None,
            "model_class": None, "size_bytes": _size(path), "detail": ""}
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            info.update(format="savedmodel", detail="TensorFlow SavedModel directory")
        else:
            info["detail"] = "a directory without a model"
        return info
    try:
        if zipfile.is_zipfile(path):
            info.update(_describe_zip(path))
        elif h5py.is_hdf5(path):
            info.update(_describe_h5(path))
        else:
            info["detail"] = "neither a .keras zip archive nor an HDF5 file"
    except OSError as error:
        info["detail"] = f"unreadable: {error}"
    return info


def _size(path):
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _describe_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            return {"detail": "a zip archive without config.json (not a Keras model)"}
        info = {"format": "keras", "detail": "Keras 3 model archive"}
        if "metadata.json" in names:
            try:
                info["keras_version"] = json.loads(archive.read("metadata.json")).get(
                    "keras_version")
            except (ValueError, AttributeError):
                pass
        try:
            info["model_class"] = json.loads(archive.read("config.json")).get("class_name")
        except (ValueError, AttributeError):
            pass
    return info


def _attr_text(value):
    if value is None:
        return None
    if hasattr(value, "decode"):
        return value.decode("utf-8")
    return str(value)


def _describe_h5(path):
    with h5py.File(path, "r") as f:
        attrs = f.attrs
        weights = f.get("model_weights")
        weight_attrs = weights.attrs if isinstance(weights, h5py.Group) else {}
        info = {
            "keras_version": _attr_text(attrs.get("keras_version",
                                                  weight_attrs.get("keras_version"))),
            "backend": _attr_text(attrs.get("backend", weight_attrs.get("backend"))),
        }
        if "model_config" in attrs:
            info.update(format="h5-model", detail="legacy HDF5 model (architecture + weights)")
            try:
                info["model_class"] = json.loads(_attr_text(attrs["model_config"])).get(
                    "class_name")
            except (ValueError, AttributeError):
                pass
        elif "layer_names" in attrs or isinstance(weights, h5py.Group):
            info.update(format="h5-weights", detail="weights only (Keras 2 save_weights)")
        elif isinstance(f.get("layers"), h5py.Group) and "vars" in f:
            info.update(format="h5-weights", detail="weights only (Keras 3 .weights.h5)")
        else:
            info["detail"] = "an HDF5 file without a Keras model or weights"
    return info


# ---------------------------------------------------------------------------------------
# Loading


def load_model(source, *, weights="imagenet", custom_objects=None):
    """Load a Keras model from a file, a keras.applications name, or return a live one.

    Args:
        source: a `keras.Model` (returned as is); a path (str or Path) to a `.keras` file
            or a legacy full-model `.h5`/`.hdf5` file; or `"keras:<Name>"` for
            `keras.applications.<Name>` (e.g. "keras:ResNet50").
        weights: for `keras:` names only: "imagenet" (downloaded by Keras, or taken from
            its cache), "none"/None for random initialization, or a path to a weights file.
        custom_objects: {name: class or function} for custom layers the file uses
            (see `load_custom_objects`).

    Returns:
        The model, uncompiled.

    Raises:
        UsageError: with a one-line message naming the file and what to do, when the source
            cannot be loaded.
    """
    if isinstance(source, keras.Model):
        return source
    if isinstance(source, str) and source.startswith("keras:"):
        return _load_application(source[len("keras:"):], weights)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "load_model expects a keras.Model, a file path or 'keras:<Name>'. "
            f"Received: {type(source).__name__}")
    path = Path(source)
    _check_readable_model_path(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        return _load_keras(path, custom_objects)
    return _load_h5(path, custom_objects)


def _check_readable_model_path(path):
    """Raise a precise UsageError unless `path` looks like a loadable model file."""
    if not os.path.lexists(path):
        raise UsageError(f"{path}: no such file; give the path of a .keras or .h5 model file")
    if path.is_dir():
        if describe_file(path)["format"] == "savedmodel":
            raise UsageError(
                f"{path} is a TensorFlow SavedModel directory: Keras 3 cannot rebuild layers "
                "from a SavedModel (it can only wrap it whole with keras.layers.TFSMLayer, "
                "leaving no BatchNormalization to swap); export a .keras file from the code "
                'that built the model: model.save("model.keras")')
        raise UsageError(
            f"{path} is a directory, not a model file; give the path of a .keras or .h5 file")
    if not path.exists():
        raise UsageError(f"{path}: broken symbolic link; give the path of a model file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path} cannot be read (permission denied)")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        what = _OTHER_FORMATS.get(suffix)
        shown = f"'{suffix}'" if suffix else "no extension"
        kind = f" ({what})" if what else ""
        raise UsageError(
            f"{path}: unsupported file type {shown}{kind}; normswap reads Keras models "
            f"saved as .keras or .h5/.hdf5 — {_SAVE_HINT}")
    info = describe_file(path)
    fmt = info["format"]
    if suffix in KERAS_SUFFIXES and fmt != "keras":
        if fmt == "h5-model":
            raise UsageError(f"{path} is a legacy HDF5 model named .keras; rename it to .h5")
        raise UsageError(
            f"{path} is not a Keras model ({info['detail']}); {_SAVE_HINT}")
    if suffix in H5_SUFFIXES and fmt != "h5-model":
        if fmt == "h5-weights":
            raise UsageError(
                f"{path} holds weights only, no architecture; normswap needs the architecture "
                "too: a .keras file or a full-model .h5 saved with model.save (build the model "
                f"in code, call model.load_weights(\"{path.name}\"), then "
                'model.save("model.keras"))')
        if fmt == "keras":
            raise UsageError(f"{path} is a Keras 3 .keras archive named {suffix}; rename it "
                             "to .keras")
        if info["detail"].startswith("neither"):
            raise UsageError(
                f"{path} is not an HDF5 file (truncated, or another kind of file renamed "
                f"{suffix}); {_SAVE_HINT}")
        raise UsageError(f"{path} is not a Keras model ({info['detail']}); {_SAVE_HINT}")


def _load_keras(path, custom_objects):
    try:
        return keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as error:
        raise _explain_load_error(path, error) from error


def _load_h5(path, custom_objects):
    try:
        return keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as error:
        first_error = error
    # Keras 3 rejected the file. If the error is a known legacy incompatibility, rebuild
    # from a fixed copy of the config; repeat while each new error has a fix not yet used.
    error = first_error
    config = None
    applied, changed = [], []
    while True:
        fixes = [fix for fix in legacy.fixes_for(_error_text(error)) if fix.name not in applied]
        if not fixes:
            break
        if config is None:
            config = _read_model_config(path)
        config, changes = legacy.apply_fixes(config, fixes)
        if not changes:
            break
        applied.extend(fix.name for fix in fixes)
        changed.extend(changes)
        try:
            model = _load_h5_with_config(path, config, custom_objects)
        except Exception as retry_error:
            error = retry_error
            continue
        logger.info("%s: Keras 3 rejected the legacy config; applied %s to %d layer(s)",
                    path, ", ".join(applied), len(changed))
        return model
    raise _explain_load_error(path, error) from error


def _read_model_config(path):
    with h5py.File(path, "r") as f:
        return json.loads(_attr_text(f.attrs["model_config"]))


def _load_h5_with_config(path, model_config, custom_objects):
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
            patched, custom_objects=custom_objects, compile=False)


def _error_chain(error):
    seen = []
    while error is not None and error not in seen and len(seen) < 10:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _error_text(error):
    return "\n".join(str(e) for e in _error_chain(error))


def _error_summary(error, limit=300):
    """The most specific line of a (possibly chained) Keras error, shortened."""
    innermost = _error_chain(error)[-1]
    text = str(innermost)
    if "Exception encountered:" in text:
        text = text.rsplit("Exception encountered:", 1)[1]
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(innermost).__name__}: {text}"


_UNKNOWN_OBJECT = (
    re.compile(r"Could not locate (?:class|function) '([^']+)'"),
    re.compile(r"Unknown [a-z ]+: '([^']+)'"),
)
_TF_OP_LAYERS = {"TFOpLambda", "SlicingOpLambda"}


def _explain_load_error(path, error):
    """Turn a Keras load failure into a one-line UsageError that says what to do."""
    text = _error_text(error)
    for pattern in _UNKNOWN_OBJECT:
        match = pattern.search(text)
        if match:
            name = match.group(1).rsplit(">", 1)[-1]
            if name in _TF_OP_LAYERS:
                return UsageError(
                    f"{path} records raw TensorFlow operations ({name} layers from tf.keras), "
                    "which Keras 3 cannot rebuild; rebuild the model with Keras 3 layers, load "
                    'the weights into it and save it with model.save("model.keras")')
            return UsageError(
                f"{path} uses the custom layer or function '{name}', which is not registered; "
                "pass the Python file that defines it with --custom-objects module.py "
                f"(in Python: custom_objects={{'{name}': {name}}})")
    if "Lambda" in text and "safe_mode" in text:
        return UsageError(
            f"{path} contains a Lambda layer holding Python code, which Keras refuses to load "
            "from a file by default; if you trust the file, load it yourself with "
            "keras.models.load_model(path, safe_mode=False) and pass the model to normswap")
    written_by = ""
    if path.suffix.lower() in H5_SUFFIXES:
        version = describe_file(path)["keras_version"]
        if version and not version.startswith("3."):
            written_by = f" (written by Keras {version})"
    return UsageError(f"could not load {path}{written_by}: {_error_summary(error)}")


_APPLICATION_NAMES = None


def application_names():
    """The model constructors of keras.applications ("ResNet50", "MobileNetV2", ...)."""
    global _APPLICATION_NAMES
    if _APPLICATION_NAMES is None:
        _APPLICATION_NAMES = sorted(
            name for name in dir(keras.applications)
            if name[:1].isupper() and callable(getattr(keras.applications, name)))
    return _APPLICATION_NAMES


def _load_application(name, weights):
    names = application_names()
    if name not in names:
        by_case = {n.lower(): n for n in names}
        close = ([by_case[name.lower()]] if name.lower() in by_case else
                 difflib.get_close_matches(name, names, n=3, cutoff=0.5))
        if close:
            hint = "did you mean " + " or ".join(f"keras:{n}" for n in close) + "?"
        else:
            hint = "available: " + ", ".join(names)
        raise UsageError(f"keras:{name} is not a keras.applications model; {hint}")
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        weights = None
    elif isinstance(weights, str) and weights == "imagenet":
        pass
    elif isinstance(weights, (str, os.PathLike)):
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise UsageError(
                f"keras:{name}: weights file {weights_path} does not exist; use --weights "
                "imagenet, --weights none (random initialization) or the path of a weights file")
        weights = str(weights_path)
    else:
        raise UsageError(f"keras:{name}: weights must be 'imagenet', 'none' or a file path. "
                         f"Received: weights={weights!r}")
    constructor = getattr(keras.applications, name)
    try:
        return constructor(weights=weights)
    except Exception as error:
        summary = _error_summary(error)
        if weights == "imagenet":
            raise UsageError(
                f"keras:{name}: could not get the ImageNet weights ({summary}); without network "
                "access use --weights none (random initialization) or --weights PATH to a "
                "weights file") from error
        if weights is not None:
            raise UsageError(
                f"keras:{name}: could not load the weights file {weights} ({summary})"
            ) from error
        raise UsageError(f"keras:{name}: could not build the model ({summary})") from error


_custom_module_ids = itertools.count()


def load_custom_objects(py_file):
    """Import a Python file by path and return the custom objects it provides.

    Returns {name: object} for every public class and function the file defines (not the
    ones it imports), or exactly the names listed in its `__all__` if it has one. Classes
    registered with `keras.saving.register_keras_serializable` are also listed under their
    registered name ("package>Name"). Used by `--custom-objects`.

    Raises:
        UsageError: the file is missing, not a .py file, fails to import, or defines nothing.
    """
    path = Path(py_file)
    if not path.is_file():
        raise UsageError(f"{path}: no such Python file (for --custom-objects)")
    if path.suffix != ".py":
        raise UsageError(f"{path}: --custom-objects expects a Python file ending in .py")
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_normswap_custom_objects_{next(_custom_module_ids)}_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(module_name, None)
        raise UsageError(f"{path}: syntax error on line {error.lineno}: {error.msg}") from error
    except BaseException as error:
        sys.modules.pop(module_name, None)
        if isinstance(error, KeyboardInterrupt):
            raise
        raise UsageError(
            f"{path}: importing it failed: {_error_summary(error)}") from error
    exported = getattr(module, "__all__", None)
    if exported is not None:
        missing = [name for name in exported if not hasattr(module, name)]
        if missing:
            raise UsageError(f"{path}: __all__ lists names it does not define: {missing}")
        names = list(exported)
    else:
        names = [
            name for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module_name
        ]
    objects = {}
    for name in names:
        value = getattr(module, name)
        objects[name] = value
        registered = keras.saving.get_registered_name(value)
        if registered != name and ">" in registered:
            objects[registered] = value
    if not objects:
        raise UsageError(f"{path} defines no public classes or functions to use as custom "
                         "objects")
    return objects


# ---------------------------------------------------------------------------------------
# Saving


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
        NormswapError: Keras failed to write the model (exit status 1).
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
        raise NormswapError(
            f"could not save the model to {path}: {_error_summary(error)}") from error
    return path


def check_output_path(path, *, force=False, protected=()):
    """The path `save_model` would write (`.keras` added when it has no extension), or the
    UsageError it would raise; callers check before long work so a refusal costs nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        path = path.with_name(path.name + ".keras")
        suffix = ".keras"
    if suffix not in MODEL_SUFFIXES:
        raise UsageError(
            f"{path}: cannot save as '{suffix}'; use an output path ending in .keras (default) "
            "or .h5")
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"{path}: the directory {directory} does not exist; create it first")
    for other in protected:
        if other is not None and _same_file(path, Path(other)):
            raise UsageError(
                f"refusing to write {path} over the input model {other}; choose another "
                "output path")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give the path of the model file to write")
    if os.path.lexists(path) and not force:
        raise UsageError(f"{path} already exists; use --force (force=True) to overwrite it")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: the directory {directory} is not writable")
    return path


def _same_file(a, b):
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _temporary_path(path):
    while True:
        # Keras picks the format from the (lower-case) extension of the name it is given.
        suffix = path.suffix.lower()
        candidate = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{suffix}")
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
