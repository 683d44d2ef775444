"""The initializer, regularizer and constraint of each weight, handled the Keras way.

A Keras layer takes, for each of its weights `w`, the arguments `w_initializer` (and, for
trainable weights, `w_regularizer` and `w_constraint`), resolves them with
`keras.initializers.get` & co. in `__init__`, passes them to `add_weight` in `build` and
serializes them in `get_config`. The bundled layers do this for γ, β, τ, v, the switch
logits and the moving statistics; these three functions write it once:

    set_weight_options(self, gamma_initializer=..., gamma_regularizer=..., ...)
    self.gamma = add_configured_weight(self, "gamma", (channels,))
    config.update(weight_options_config(self))
"""

import keras

_KINDS = {
    "initializer": (keras.initializers.get, keras.initializers.serialize),
    "regularizer": (keras.regularizers.get, keras.regularizers.serialize),
    "constraint": (keras.constraints.get, keras.constraints.serialize),
}


def _kind(key):
    kind = key.rsplit("_", 1)[-1]
    if kind not in _KINDS:
        raise TypeError(f"{key!r} is not a `<weight>_initializer/regularizer/constraint`.")
    return kind


def weight_arguments(statistics=(), **initializers):
    """The `<weight>_<kind>` arguments a layer takes, with their defaults, for
    `ChannelLayer.weight_options`: `<w>_initializer` for every weight w given (its
    default initializer as value), and `<w>_regularizer`, `<w>_constraint` (None) for the
    trainable ones — all but the moving `statistics`."""
    defaults = {f"{name}_initializer": value for name, value in initializers.items()}
    trainable = [name for name in initializers if name not in statistics]
    for kind in ("regularizer", "constraint"):
        defaults.update({f"{name}_{kind}": None for name in trainable})
    return defaults


def set_weight_options(layer, **options):
    """Resolve and store `<weight>_<kind>` arguments as attributes of `layer`, in order.

    Each value goes through `keras.<kind>s.get` (so names, configs and instances all
    work) and is remembered for `weight_options_config`. May be called more than once
    (a base class, then its subclass); the config keeps the order of the calls.
    """
    names = list(getattr(layer, "_weight_option_names", ()))
    for key, value in options.items():
        getter, _ = _KINDS[_kind(key)]
        setattr(layer, key, getter(value))
        if key not in names:
            names.append(key)
    layer._weight_option_names = tuple(names)


def weight_options_config(layer):
    """{argument: serialized value} of every option stored by `set_weight_options`."""
    return {key: _KINDS[_kind(key)][1](getattr(layer, key))
            for key in getattr(layer, "_weight_option_names", ())}


def add_configured_weight(layer, name, shape, trainable=True, dtype=None):
    """`layer.add_weight(name=...)` with the layer's `<name>_initializer` and, when it has
    them, `<name>_regularizer` and `<name>_constraint`; kept float32 under mixed
    precision (`autocast=False`), as Keras's normalization layers keep theirs."""
    return layer.add_weight(
        name=name, shape=shape, dtype=dtype, trainable=trainable, autocast=False,
        initializer=getattr(layer, f"{name}_initializer"),
        regularizer=getattr(layer, f"{name}_regularizer", None),
        constraint=getattr(layer, f"{name}_constraint", None),
    )
