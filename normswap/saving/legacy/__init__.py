"""Fixers for model configs that Keras 2 (tf.keras) wrote and Keras 3 refuses to rebuild.

A legacy `.h5` file stores its architecture as JSON (`attrs["model_config"]`). Some things
Keras 2 recorded mean the same in Keras 3 but are written differently (a keyword argument
with a neutral value that no longer exists, a class renamed, nodes numbered from 1), and
Keras 3 rejects the whole file because of them. Each known case is one small function
registered with `@legacy_fix`, together with the Keras error it cures; the loader
(`loading.py`) applies the fixers whose error matches, to a copy of the config, and rebuilds
the model with the file's own weights. A fixer only rewrites what means exactly the same in
Keras 3 (an argument is only removed when its value is the neutral one), so the rebuilt
layers compute exactly what the original ones did; anything else is left in place and the
load fails with Keras's own message.

A few Keras 2 conventions make Keras 3 fail late, with an error that names a symptom far
from the cause. Their fixers are registered with `error=None`: they recognize their case
from the config alone, and the loader tries them whenever Keras 3 rejects a legacy file.
Those registered with `before_load=True` as well fix a convention Keras 3 may misread
without any error; the loader applies them before Keras first sees the config.

The fixers themselves are in `fixers.py`. Adding a case: write `fix(obj) -> bool` there,
which edits one serialized object (`{"class_name": ..., "config": {...}}`) in place and
says whether it changed it, document
the error it fixes ("Fixes: <error>"), and decorate it with
`@legacy_fix(name=..., error=REGEX)`.
"""

import copy
import dataclasses
import re
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class LegacyFix:
    """One known Keras 2 → Keras 3 config incompatibility and its cure.

    Attributes:
        name: short identifier, shown in logs and reports.
        error: regex searched in the text of the Keras load error this fix cures, or None
            for a fix that recognizes its case from the config alone.
        fix: `fix(obj) -> bool`, edits one serialized object in place, True if it changed.
        doc: one line saying what the fix does (the function's docstring summary).
        before_load: applied before Keras first sees the config (a fix keyed on the
            config for a convention Keras 3 can misread without an error).
    """

    name: str
    error: Optional[re.Pattern]
    fix: Callable[[dict], bool]
    doc: str
    before_load: bool = False

    def matches(self, message):
        return self.error is not None and self.error.search(message) is not None


_FIXES = {}


def legacy_fix(name, error, before_load=False):
    """Register `fix(obj) -> bool` as the cure for load errors matching the regex `error`.

    `error=None` registers a fix keyed on the config alone, tried whenever Keras 3 rejects
    a legacy file: for a Keras 2 convention whose Keras 3 error names only a symptom.
    With `before_load=True` (and `error=None`) it is also applied before the first try:
    for a convention Keras 3 can misread without an error.
    """
    if before_load and error is not None:
        raise ValueError("before_load fixes are keyed on the config alone (error=None).")

    def register(function):
        if name in _FIXES:
            raise ValueError(f"A legacy fix named {name!r} is already registered.")
        doc = (function.__doc__ or "").strip().splitlines()
        pattern = None if error is None else re.compile(error)
        _FIXES[name] = LegacyFix(name, pattern, function, doc[0] if doc else "", before_load)
        return function

    return register


def registered_fixes():
    """All registered fixes, in registration order."""
    return list(_FIXES.values())


def fixes_for(message):
    """The registered fixes whose error pattern occurs in `message` (a Keras error text)."""
    return [fix for fix in _FIXES.values() if fix.matches(message)]


def config_fixes():
    """The registered fixes keyed on the config alone (`error=None`), in registration order."""
    return [fix for fix in _FIXES.values() if fix.error is None]


def before_load_fixes():
    """The registered fixes applied before Keras first sees a legacy config."""
    return [fix for fix in _FIXES.values() if fix.before_load]


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


from normswap.saving.legacy import fixers  # noqa: E402,F401 - registers the fixers
