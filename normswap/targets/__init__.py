"""The registry of swap targets: one module per target in this package, found by name.

Adding a target is adding one module here that subclasses `Target` and decorates an
instance with `@register`; every module of this package is imported on first use.
"""

import difflib
import importlib
import pkgutil

from normswap.errors import UsageError
from normswap.targets.base import IDENTITY, Replacement, Skip, Target

_REGISTRY = {}
_loaded = False


def register(target_class):
    """Class decorator: register one instance of a Target subclass under its `name`."""
    target = target_class()
    if not target.name or target.name in _REGISTRY:
        raise ValueError(f"Target name {target.name!r} is empty or registered twice.")
    _REGISTRY[target.name] = target
    return target_class


def _load_all():
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base" and not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True


def all_targets():
    """Registered targets by name, in name order."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_target(target):
    """A registered target from its name, its Target instance, or a layer class it builds."""
    targets = all_targets()
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        key = target.strip().lower()
        if key in targets:
            return targets[key]
        close = difflib.get_close_matches(key, targets, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"Unknown target '{target}'.{hint} Known targets: {', '.join(targets)}.")
    if isinstance(target, type):
        for candidate in targets.values():
            if any(target is cls for cls in candidate.layer_classes):
                return candidate
        usable = sorted({cls.__name__ for t in targets.values() for cls in t.layer_classes})
        raise UsageError(
            f"No target builds {target.__name__}. Layer classes normswap can swap in: "
            f"{', '.join(usable)}."
        )
    raise UsageError(f"A target is a name or a layer class, got {target!r}.")


__all__ = ["IDENTITY", "Replacement", "Skip", "Target", "all_targets", "get_target", "register"]
