"""Python code stored in a model file: found before loading, run only when asked.

A Keras `Lambda` layer can store its function's bytecode in the file. Keras 2 (tf.keras)
stores *every* Python function that way, named or lambda, registered or not, and marks it
`function_type: "lambda"` (likewise `output_shape_type` and `mask_type`); only other
callables (builtins such as `abs`) are stored by name. Keras 3 stores a lambda expression
as a `__lambda__` object holding its bytecode, and a named function by name only. Loading
such a file rebuilds the function from the bytecode, and building the model calls it.
`code_carriers(config)` lists the layers that carry such code in a decoded model config,
without building anything, so that `load_model(..., safe_mode=True)` can refuse the file
before Keras sees it, naming them.
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


# The keys with which Keras 2 marks a function of a Lambda layer stored as bytecode.
_KERAS2_CODE_KEYS = ("function_type", "output_shape_type", "mask_type")


def _carries_code(obj):
    """Whether a serialized object holds a function as bytecode: a Keras 3 `__lambda__`
    object, or a Keras 2 config marking a function "lambda" (whatever the layer's class
    name, so that a subclass of Lambda is caught too)."""
    if obj["class_name"] == "__lambda__":
        return True
    config = obj["config"]
    return any(config.get(key) == "lambda" for key in _KERAS2_CODE_KEYS)


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
