"""`keras:<Name>`: a keras.applications model by name, with its weights or without."""

import difflib
import os
from pathlib import Path

import keras

from normswap.errors import InputFileError, UsageError
from normswap.saving.load_errors import error_summary

PREFIX = "keras:"
_NAMES = None


def application_names():
    """The model constructors of keras.applications ("ResNet50", "MobileNetV2", ...)."""
    global _NAMES
    if _NAMES is None:
        _NAMES = sorted(name for name in dir(keras.applications)
                        if name[:1].isupper() and callable(getattr(keras.applications, name)))
    return _NAMES


def _check_name(name):
    names = application_names()
    if name in names:
        return
    by_case = {n.lower(): n for n in names}
    close = ([by_case[name.lower()]] if name.lower() in by_case else
             difflib.get_close_matches(name, names, n=3, cutoff=0.5))
    if close:
        hint = "did you mean " + " or ".join(f"keras:{n}" for n in close) + "?"
    else:
        hint = "available: " + ", ".join(names)
    raise UsageError(f"keras:{name} is not a keras.applications model; {hint}")


def _weights_argument(name, weights):
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise InputFileError(
                f"keras:{name}: weights file {weights_path} does not exist; use --weights "
                "imagenet, --weights none (random initialization) or the path of a weights file")
        return str(weights_path)
    raise UsageError(f"keras:{name}: weights must be 'imagenet', 'none' or a file path. "
                     f"Received: weights={weights!r}")


def load_application(name, weights="imagenet"):
    """`keras.applications.<name>(weights=...)`, or a one-line error saying what to do.

    `weights`: "imagenet" (downloaded by Keras, or taken from its cache), "none"/None for
    random initialization, or the path of a weights file.
    """
    _check_name(name)
    weights = _weights_argument(name, weights)
    try:
        return getattr(keras.applications, name)(weights=weights)
    except Exception as error:
        summary = error_summary(error)
        if weights == "imagenet":
            raise InputFileError(
                f"keras:{name}: could not get the ImageNet weights ({summary}); without network "
                "access use --weights none (random initialization) or --weights PATH to a "
                "weights file") from error
        if weights is not None:
            raise InputFileError(
                f"keras:{name}: could not load the weights file {weights} ({summary})"
            ) from error
        raise InputFileError(f"keras:{name}: could not build the model ({summary})") from error
