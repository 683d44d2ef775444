"""`--custom-objects module.py`: the custom layers a model file needs, from a user's file."""

import importlib.util
import inspect
import itertools
import re
import sys
from pathlib import Path

import keras

from normswap.errors import UsageError
from normswap.saving.load_errors import error_summary

_module_ids = itertools.count()


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
    module = _import_file(path)
    objects = {}
    for name in _exported_names(path, module):
        value = getattr(module, name)
        objects[name] = value
        registered = keras.saving.get_registered_name(value)
        if registered != name and ">" in registered:
            objects[registered] = value
    if not objects:
        raise UsageError(f"{path} defines no public classes or functions to use as custom "
                         "objects")
    return objects


def _import_file(path):
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_normswap_custom_objects_{next(_module_ids)}_{stem}"
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
        raise UsageError(f"{path}: importing it failed: {error_summary(error)}") from error
    return module


def _exported_names(path, module):
    exported = getattr(module, "__all__", None)
    if exported is not None:
        missing = [name for name in exported if not hasattr(module, name)]
        if missing:
            raise UsageError(f"{path}: __all__ lists names it does not define: {missing}")
        return list(exported)
    return [name for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__]
