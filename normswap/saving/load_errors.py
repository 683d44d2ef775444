"""Keras load failures turned into one line that says what to do."""

import re

from normswap.errors import InputFileError, UnsafeModelError
from normswap.saving.file_info import describe_file
from normswap.saving.paths import H5_SUFFIXES


def error_chain(error):
    """`error` and the errors it was raised from, outermost first (at most 10)."""
    seen = []
    while error is not None and error not in seen and len(seen) < 10:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def error_text(error):
    """Every message of a chained error, one per line (what legacy fixers match on)."""
    return "\n".join(str(e) for e in error_chain(error))


def error_summary(error, limit=300):
    """The most specific line of a (possibly chained) Keras error, shortened."""
    innermost = error_chain(error)[-1]
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


def explain_load_error(path, error):
    """Turn a Keras load failure into a one-line InputFileError that says what to do."""
    text = error_text(error)
    for pattern in _UNKNOWN_OBJECT:
        match = pattern.search(text)
        if match:
            return _unknown_object(path, match.group(1).rsplit(">", 1)[-1])
    if "Lambda" in text and "safe_mode" in text:
        return UnsafeModelError(
            f"{path} contains a Lambda layer holding Python code, which is not run when "
            "loading a file unless asked; if you trust the file, pass --unsafe "
            "(safe_mode=False)")
    written_by = ""
    if path.suffix.lower() in H5_SUFFIXES:
        version = describe_file(path)["keras_version"]
        if version and not version.startswith("3."):
            written_by = f" (written by Keras {version})"
    return InputFileError(f"could not load {path}{written_by}: {error_summary(error)}")


def _unknown_object(path, name):
    if name in _TF_OP_LAYERS:
        return InputFileError(
            f"{path} records raw TensorFlow operations ({name} layers from tf.keras), "
            "which Keras 3 cannot rebuild; rebuild the model with Keras 3 layers, load "
            'the weights into it and save it with model.save("model.keras")')
    return InputFileError(
        f"{path} uses the custom layer or function '{name}', which is not registered; "
        "pass the Python file that defines it with --custom-objects module.py "
        f"(in Python: custom_objects={{'{name}': {name}}})")
