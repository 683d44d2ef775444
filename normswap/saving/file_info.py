"""What a model file is, found without building the model (h5py and zipfile only)."""

import json
import os
import zipfile
from pathlib import Path

import h5py

from normswap.errors import InputFileError


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

    The format comes from the content, not the extension. Raises InputFileError only if
    the path does not exist.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise InputFileError(f"{path}: no such file or directory")
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


def _json_member(archive, name):
    try:
        return json.loads(archive.read(name))
    except (KeyError, ValueError):
        return None


def _describe_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            return {"detail": "a zip archive without config.json (not a Keras model)"}
        info = {"format": "keras", "detail": "Keras 3 model archive"}
        metadata = _json_member(archive, "metadata.json")
        if isinstance(metadata, dict):
            info["keras_version"] = metadata.get("keras_version")
        config = _json_member(archive, "config.json")
        if isinstance(config, dict):
            info["model_class"] = config.get("class_name")
    return info


def attr_text(value):
    """An HDF5 attribute (bytes or str) as text, or None."""
    if value is None:
        return None
    if hasattr(value, "decode"):
        return value.decode("utf-8")
    return str(value)


def read_h5_model_config(path):
    """The decoded `model_config` JSON of a legacy full-model .h5 file."""
    with h5py.File(path, "r") as f:
        text = attr_text(f.attrs["model_config"])
    try:
        return json.loads(text)
    except ValueError as error:
        raise InputFileError(f"{path}: its model_config attribute is not valid JSON "
                             f"({error}); the file is damaged") from error


def _describe_h5(path):
    with h5py.File(path, "r") as f:
        attrs = f.attrs
        weights = f.get("model_weights")
        weight_attrs = weights.attrs if isinstance(weights, h5py.Group) else {}
        info = {
            "keras_version": attr_text(attrs.get("keras_version",
                                                 weight_attrs.get("keras_version"))),
            "backend": attr_text(attrs.get("backend", weight_attrs.get("backend"))),
        }
        if "model_config" in attrs:
            info.update(format="h5-model", detail="legacy HDF5 model (architecture + weights)")
            try:
                info["model_class"] = json.loads(attr_text(attrs["model_config"])).get(
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
