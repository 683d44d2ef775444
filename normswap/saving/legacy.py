"""Fixers for model configs that Keras 2 (tf.keras) wrote and Keras 3 refuses to rebuild.

A legacy `.h5` file stores its architecture as JSON (`attrs["model_config"]`). A few
keyword arguments that Keras 2 recorded with a neutral value no longer exist in Keras 3, and
Keras 3 rejects the whole file because of them. Each known case is one small function
registered with `@legacy_fix`, together with the Keras error it cures; the loader
(`loading.py`) applies the fixers whose error matches, to a copy of the config, and rebuilds
the model with the file's own weights. A fixer only removes an argument when its value is
the neutral one, so the rebuilt layers compute exactly what the original ones did; any other
value is left in place and the load fails with Keras's own message.

Adding a case: write `fix(obj) -> bool` that edits one serialized object
(`{"class_name": ..., "config": {...}}`) in place and says whether it changed it, document
the error it fixes, and decorate it with `@legacy_fix(name=..., error=REGEX)`.
"""

import copy
import dataclasses
import re
from typing import Callable


@dataclasses.dataclass(frozen=True)
class LegacyFix:
    """One known Keras 2 → Keras 3 config incompatibility and its cure.

    Attributes:
        name: short identifier, shown in logs and reports.
        error: regex searched in the text of the Keras load error this fix cures.
        fix: `fix(obj) -> bool`, edits one serialized object in place, True if it changed.
        doc: one line saying what the fix does (the function's docstring summary).
    """

    name: str
    error: re.Pattern
    fix: Callable[[dict], bool]
    doc: str

    def matches(self, message):
        return self.error.search(message) is not None


_FIXES = {}


def legacy_fix(name, error):
    """Register `fix(obj) -> bool` as the cure for load errors matching the regex `error`."""

    def register(function):
        if name in _FIXES:
            raise ValueError(f"A legacy fix named {name!r} is already registered.")
        doc = (function.__doc__ or "").strip().splitlines()
        _FIXES[name] = LegacyFix(name, re.compile(error), function, doc[0] if doc else "")
        return function

    return register


def registered_fixes():
    """All registered fixes, in registration order."""
    return list(_FIXES.values())


def fixes_for(message):
    """The registered fixes whose error pattern occurs in `message` (a Keras error text)."""
    return [fix for fix in _FIXES.values() if fix.matches(message)]


def apply_fixes(model_config, fixes=None):
    """Apply `fixes` (default: all registered) to a copy of a decoded model config.

    Every serialized object in the config is visited (the model, its layers, layers of
    nested models, layers wrapped by Bidirectional / TimeDistributed, ...).

    Returns:
        (fixed_config, changes): the edited copy, and a list of (fix name, layer name) for
        every object a fix changed. `model_config` itself is never modified.
    """
    fixes = registered_fixes() if fixes is None else list(fixes)
    fixed = copy.deepcopy(model_config)
    changes = []
    for obj in _serialized_objects(fixed):
        for fix in fixes:
            if fix.fix(obj):
                config = obj.get("config")
                layer = config.get("name") if isinstance(config, dict) else None
                changes.append((fix.name, layer or obj.get("name") or obj["class_name"]))
    return fixed, changes


def _serialized_objects(node):
    """Yield every dict shaped like a serialized Keras object, depth first."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and isinstance(node.get("config"), dict):
            yield node
        for value in node.values():
            yield from _serialized_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _serialized_objects(value)


def _drop_neutral(obj, class_names, key, neutral):
    """Remove `config[key]` from objects of `class_names` when it holds the `neutral` value."""
    config = obj["config"]
    if obj["class_name"] in class_names and key in config and config[key] == neutral:
        del config[key]
        return True
    return False


# Keras 2 subclassed these from Conv and recorded Conv's `groups`; Keras 3's take no `groups`.
_CONV_WITHOUT_GROUPS = frozenset({
    "DepthwiseConv1D", "DepthwiseConv2D",
    "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "Convolution2DTranspose", "Convolution3DTranspose",
})


@legacy_fix(
    name="conv-groups",
    error=r"Unrecognized keyword arguments passed to \w+: \{[^}]*'groups'",
)
def drop_conv_groups(obj):
    """Drop `groups: 1` from depthwise, separable and transposed convolutions.

    Fixes: ValueError: Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}
    (tf.keras 2.3+ wrote Conv's `groups` into these layers' configs; with groups=1 it meant
    an ordinary convolution, which is what the Keras 3 layers compute without the argument.)
    """
    return _drop_neutral(obj, _CONV_WITHOUT_GROUPS, "groups", 1)


_RECURRENT = frozenset({"SimpleRNN", "GRU", "LSTM", "RNN", "ConvLSTM1D", "ConvLSTM2D",
                        "ConvLSTM3D"})


@legacy_fix(
    name="rnn-time-major",
    error=r"Unrecognized keyword arguments passed to \w+: \{[^}]*'time_major'",
)
def drop_rnn_time_major(obj):
    """Drop `time_major: False` from recurrent layers.

    Fixes: ValueError: Unrecognized keyword arguments passed to GRU: {'time_major': False}
    (Keras 3 removed the option; False, the batch-major layout, is what Keras 3 always uses.)
    """
    return _drop_neutral(obj, _RECURRENT, "time_major", False)
