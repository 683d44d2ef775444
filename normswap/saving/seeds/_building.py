"""What the mappers share: building a target layer, filling it, reading config options."""


import keras
import numpy as np

from normswap.saving.seeds.config import _dtype


def _built(cls, layer, **kwargs):
    """`cls(**kwargs)` named, typed and (un)frozen like the seed layer, built on its input."""
    config = layer.config
    target = cls(name=layer.name, trainable=config.get("trainable", True),
                 dtype=_dtype(config) or "float32", **kwargs)
    target.build(layer.input_shape)
    return target


def _assign(target, values):
    """Set weights of `target` by attribute name: {"gamma": array, ...}."""
    for name, value in values.items():
        variable = getattr(target, name)
        value = np.asarray(value)
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"weight '{name}' has shape {value.shape} in the file, "
                             f"{tuple(variable.shape)} in {type(target).__name__}")
        variable.assign(value.astype(variable.dtype))


def _initializer(config, key):
    """The config's initializer for `key` if Keras 3 reads it, else None (the default).
    Initializers do not change a loaded layer's function."""
    value = config.get(key)
    try:
        keras.initializers.get(value)
    except (ValueError, TypeError):
        return None
    return value


def _weight_options(config, weights, constraint_suffix="_constraint"):
    """The initializer, regularizer and constraint arguments of `weights` found in a Keras
    2 config, under their Keras 3 names (`<w>_initializer` etc.)."""
    options = {}
    for weight in weights:
        initializer = _initializer(config, f"{weight}_initializer")
        if initializer is not None:
            options[f"{weight}_initializer"] = initializer
        for saved, argument in ((f"{weight}_regularizer", f"{weight}_regularizer"),
                                (f"{weight}{constraint_suffix}", f"{weight}_constraint")):
            if config.get(saved) is not None:
                options[argument] = config[saved]
    return options


def _present(weights, names):
    return {name: weights[name] for name in names if name in weights}
