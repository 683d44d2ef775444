"""Python code stored in a model file: found before loading, run only when asked.

A Keras `Lambda` layer saved from a lambda expression stores that function's bytecode in
the file (Keras 2 `.h5` as marshalled bytecode, `.keras` as a `__lambda__` object). Loading
the file would rebuild and later run that code. `code_carriers(config)` lists the layers
that carry such code in a decoded model config, without building anything, so that
`load_model(..., safe_mode=True)` can refuse the file before Keras sees it, naming them.
"""

from normswap.errors import UnsafeModelError


def _serialized_objects(node, inside=None):
    """Yield (object, name of the enclosing layer) for every serialized Keras object."""
    if isinstance(node, dict):
        config = node.get("config")
        if isinstance(node.get("class_name"), str) and isinstance(config, dict):
            inside = config.get("name", inside)
            yield node, inside
        for value in node.values():
            yield from _serialized_objects(value, inside)
    elif isinstance(node, list):
        for value in node:
            yield from _serialized_objects(value, inside)


def _carries_code(obj):
    config = obj["config"]
    if obj["class_name"] == "__lambda__":
        return True
    return obj["class_name"] == "Lambda" and (
        config.get("function_type") == "lambda"
        or (isinstance(config.get("function"), dict)
            and config["function"].get("class_name") == "__lambda__"))


def code_carriers(model_config):
    """Names of the layers in a decoded model config whose loading would run stored code."""
    names = []
    for obj, layer_name in _serialized_objects(model_config):
        if _carries_code(obj):
            name = layer_name or obj["class_name"]
            if name not in names:
                names.append(name)
    return names


def refuse_stored_code(path, model_config):
    """Raise UnsafeModelError naming the layers of `model_config` that carry Python code."""
    names = code_carriers(model_config)
    if names:
        shown = ", ".join(f"'{n}'" for n in names[:5]) + (" ..." if len(names) > 5 else "")
        raise UnsafeModelError(
            f"{path} holds Python code in {len(names)} Lambda layer(s) ({shown}) that would "
            "run when the model is loaded; normswap did not load it. If you trust the file's "
            "author, pass --unsafe (Python: safe_mode=False)")
