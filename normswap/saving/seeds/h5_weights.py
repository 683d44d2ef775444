"""Reading and writing one layer's weights in a legacy .h5 file (in `weight_names` order)."""

import re

import numpy as np


def _text(value):
    return value.decode("utf-8") if hasattr(value, "decode") else str(value)


def keras_version(h5_file):
    """(major, minor) of the `keras_version` a legacy h5 file records, or None."""
    weights = h5_file.get("model_weights")
    value = h5_file.attrs.get("keras_version")
    if value is None and weights is not None:
        value = weights.attrs.get("keras_version")
    match = re.match(r"\s*(\d+)\.(\d+)", _text(value)) if value is not None else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _attribute_list(group, name):
    """A list attribute of an h5 group, also when Keras split it into name0, name1, ..."""
    if name in group.attrs:
        return [_text(v) for v in group.attrs[name]]
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_text(v) for v in group.attrs[f"{name}{chunk}"])
        chunk += 1
    return values


def _short_name(weight_name, layer_name):
    short = weight_name.split("/")[-1].split(":")[0]
    prefix = f"{layer_name}_"
    return short[len(prefix):] if short.startswith(prefix) else short


def read_layer_weights(h5_file, layer_name):
    """{short name: array} of one top-level layer's weights, in the file's order."""
    model_weights = h5_file.get("model_weights")
    if model_weights is None or layer_name not in model_weights:
        return {}
    group = model_weights[layer_name]
    return {_short_name(name, layer_name): np.asarray(group[name])
            for name in _attribute_list(group, "weight_names")}


def write_layer_weights(model_weights, layer_name, weights):
    """Replace a layer's group in `model_weights` (an h5 group opened for writing) by
    `weights`, [(weight name, array)] in the order Keras loads them."""
    if layer_name in model_weights:
        del model_weights[layer_name]
    group = model_weights.create_group(layer_name)
    group.attrs["weight_names"] = [name.encode("utf-8") for name, _ in weights]
    for name, value in weights:
        group.create_dataset(name, data=value)
