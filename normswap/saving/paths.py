"""Checks of the paths normswap reads from and writes to, before any long work."""

import os
from pathlib import Path

from normswap.errors import InputFileError, UsageError
from normswap.saving.file_info import describe_file

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
MODEL_SUFFIXES = KERAS_SUFFIXES + H5_SUFFIXES

SAVE_HINT = 'save it with model.save("model.keras") from the code that built the model'

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


def check_model_path(path):
    """Raise a precise InputFileError unless `path` looks like a loadable model file."""
    path = Path(path)
    _check_readable(path)
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        what = _OTHER_FORMATS.get(suffix)
        shown = f"'{suffix}'" if suffix else "no extension"
        kind = f" ({what})" if what else ""
        raise InputFileError(
            f"{path}: unsupported file type {shown}{kind}; normswap reads Keras models "
            f"saved as .keras or .h5/.hdf5 — {SAVE_HINT}")
    info = describe_file(path)
    if suffix in KERAS_SUFFIXES:
        _check_keras_content(path, info)
    else:
        _check_h5_content(path, suffix, info)
    return path


def _check_readable(path):
    if not os.path.lexists(path):
        raise InputFileError(f"{path}: no such file; give the path of a .keras or .h5 model "
                             "file")
    if path.is_dir():
        if describe_file(path)["format"] == "savedmodel":
            raise InputFileError(
                f"{path} is a TensorFlow SavedModel directory: Keras 3 cannot rebuild layers "
                "from a SavedModel (it can only wrap it whole with keras.layers.TFSMLayer, "
                "leaving no BatchNormalization to swap); export a .keras file from the code "
                'that built the model: model.save("model.keras")')
        raise InputFileError(
            f"{path} is a directory, not a model file; give the path of a .keras or .h5 file")
    if not path.exists():
        raise InputFileError(f"{path}: broken symbolic link; give the path of a model file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{path} cannot be read (permission denied)")


def _check_keras_content(path, info):
    if info["format"] == "keras":
        return
    if info["format"] == "h5-model":
        raise InputFileError(f"{path} is a legacy HDF5 model named .keras; rename it to .h5")
    raise InputFileError(f"{path} is not a Keras model ({info['detail']}); {SAVE_HINT}")


def _check_h5_content(path, suffix, info):
    fmt = info["format"]
    if fmt == "h5-model":
        return
    if fmt == "h5-weights":
        raise InputFileError(
            f"{path} holds weights only, no architecture; normswap needs the architecture "
            "too: a .keras file or a full-model .h5 saved with model.save (build the model "
            f"in code, call model.load_weights(\"{path.name}\"), then "
            'model.save("model.keras"))')
    if fmt == "keras":
        raise InputFileError(f"{path} is a Keras 3 .keras archive named {suffix}; rename it "
                             "to .keras")
    if info["detail"].startswith("neither"):
        raise InputFileError(
            f"{path} is not an HDF5 file (truncated, or another kind of file renamed "
            f"{suffix}); {SAVE_HINT}")
    raise InputFileError(f"{path} is not a Keras model ({info['detail']}); {SAVE_HINT}")


def output_model_path(path):
    """The file a model saved at `path` lands in: `.keras` is added to a name without an
    extension."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name + ".keras")


def check_output_path(path, *, force=False, protected=()):
    """The path `save_model` would write (`.keras` added when it has no extension), or the
    UsageError it would raise; callers check before long work so a refusal costs nothing."""
    path = output_model_path(path)
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise UsageError(
            f"{path}: cannot save as '{suffix}'; use an output path ending in .keras (default) "
            "or .h5")
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"{path}: the directory {directory} does not exist; create it first")
    for other in protected:
        if other is not None and same_file(path, Path(other)):
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


def same_file(a, b):
    """Whether paths `a` and `b` name the same file (or would, once written)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_side_output(path, what, protected=()):
    """The path of a report, picture or graph normswap will write, or the UsageError that
    writing it would end in, checked before any long work: its directory exists and is
    writable, it is not a directory, and it is none of `protected` (the files the command
    reads or writes). An existing file there is replaced."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give the path of a file")
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"{what} {path}: the directory {directory} does not exist; create it "
                         "first")
    for other in protected:
        if other is not None and same_file(path, Path(other)):
            raise UsageError(f"refusing to write {what} {path} over {other}, which this "
                             "command reads or writes; choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: the directory {directory} is not writable")
    return path
