"""Finding seed layers in a legacy model config and putting their mapped layers in place."""

import dataclasses

import keras

from normswap.saving.load_notes import SeedNote
from normswap.saving.seeds.h5_weights import keras_version, read_layer_weights
from normswap.saving.seeds.registry import _MAPPERS, SeedLayer, SeedRefusal


def _layer_entries(model_config):
    """The serialized layers of a Functional or Sequential model config (top level)."""
    config = model_config.get("config") if isinstance(model_config, dict) else None
    if isinstance(config, list):  # Sequential, Keras 2.0-2.1
        return config
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return config["layers"]
    return []


def _entry_name(entry):
    config = entry.get("config")
    return (config.get("name") if isinstance(config, dict) else None) or entry.get("name")


def _inner_objects(node):
    """Every serialized object below `node` (a serialized layer), depth first: the layers
    of a nested model, the layer of a wrapper (TimeDistributed, Bidirectional), ..."""
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("class_name"), str) \
                and isinstance(value.get("config"), dict):
            yield value
        yield from _inner_objects(value)


def _nested_seed(entries, keras_version, group_norm_seed, skip):
    """(outer layer name, layer name, class name) of a seed layer inside a nested model or
    a wrapper, or None (for an exclusive mapper: any layer of its class name there, in
    the files it applies to)."""
    for entry in entries:
        for inner in _inner_objects(entry.get("config") if isinstance(entry, dict) else None):
            mapper = _MAPPERS.get(inner["class_name"])
            if mapper is not None and mapper.class_name not in skip and (
                    mapper.claims(inner["config"], keras_version, group_norm_seed)
                    or mapper.exclusive and mapper.applies(keras_version, group_norm_seed)):
                return _entry_name(entry), _entry_name(inner), mapper.class_name
    return None


def find_seed_layers(h5_file, model_config, custom_objects=None, group_norm_seed=None):
    """The seed layers of a legacy file's top-level model, as SeedLayers in config order.

    Empty for a file written by Keras 3. A class name in `custom_objects` is the caller's
    own class and is left alone.

    Raises:
        SeedRefusal: a seed layer sits inside a nested model or a wrapper; or a layer of
            an exclusive mapper's class name is not its seed's.
    """
    version = keras_version(h5_file)
    if version is not None and version[0] >= 3:
        return []
    skip = set(custom_objects or ())
    entries = _layer_entries(model_config)
    nested = _nested_seed(entries, version, group_norm_seed, skip)
    if nested:
        model, layer, class_name = nested
        raise SeedRefusal(
            f"layer '{layer}' (a Keras 2 {class_name}) sits inside the nested model or "
            f"wrapper '{model}'; normswap maps such layers only at the top level of a model: "
            "load the file with Keras 2, move the layer to the top level, and save it")
    found = []
    for entry in entries:
        mapper = _MAPPERS.get(entry.get("class_name"))
        if mapper is None or mapper.class_name in skip:
            continue
        name = _entry_name(entry)
        claimed = mapper.claims(entry.get("config"), version, group_norm_seed)
        weights = read_layer_weights(h5_file, name) if claimed else {}
        if claimed and mapper.fits(weights):
            found.append(SeedLayer(name, mapper.class_name, entry["config"], weights, version,
                                   group_norm_seed=group_norm_seed))
        elif mapper.exclusive and mapper.applies(version, group_norm_seed):
            written = "a Keras version" if version is None else f"Keras {version[0]}.{version[1]}"
            raise SeedRefusal(
                f"layer '{name}' is a {mapper.class_name} saved by {written}, which had no "
                f"such layer of its own, and not the one of {mapper.source} (its config keys "
                f"or weights differ); Keras 3's own {mapper.class_name} computes another "
                "function: pass the class that wrote it with --custom-objects module.py "
                f"(Python: custom_objects={{'{mapper.class_name}': ...}})")
    return found


def _dtype(config):
    """A Keras 2 layer's dtype as Keras 3 takes it: a name ("float32", "mixed_float16")."""
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        return (dtype.get("config") or {}).get("name")
    return dtype


def _replaced(model_config, replacements):
    """A copy of `model_config` with top-level layers replaced: {name: (class, config)}."""
    copy = dict(model_config)
    inner = copy["config"]
    if isinstance(inner, dict):
        inner = dict(inner)
        copy["config"] = inner
        entries = inner["layers"] = list(inner["layers"])
    else:
        entries = copy["config"] = list(inner)
    for i, entry in enumerate(entries):
        name = _entry_name(entry)
        if name in replacements:
            class_name, config = replacements[name]
            if "batch_input_shape" in entry["config"]:  # the first layer of a Sequential
                config = {**config, "batch_input_shape": entry["config"]["batch_input_shape"]}
            entries[i] = {**entry, "class_name": class_name, "config": config}
    return copy


def skeleton_config(model_config, layers):
    """`model_config` with each of `layers` (SeedLayers) replaced by an `Identity`: every
    seed layer keeps its input's shape, so the model builds and shows what each gets."""
    return _replaced(model_config, {
        layer.name: ("Identity", {"name": layer.name, "trainable": True,
                                  "dtype": _dtype(layer.config)})
        for layer in layers})


def with_input_shapes(layers, skeleton):
    """`layers` with `input_shape` set from the model built from `skeleton_config`.

    Raises:
        SeedRefusal: a layer is called on inputs of different shapes, or never called.
    """
    shaped = []
    for layer in layers:
        nodes = skeleton.get_layer(layer.name)._inbound_nodes
        shapes = {tuple(node.input_tensors[0].shape) for node in nodes if node.input_tensors}
        if len(shapes) != 1:
            raise SeedRefusal(
                f"layer '{layer.name}' ({layer.class_name}) is called on "
                f"{'inputs of ' + str(len(shapes)) + ' different shapes' if shapes else 'no input'}"
                "; normswap maps such a layer only when it has one input shape")
        shaped.append(dataclasses.replace(layer, input_shape=shapes.pop()))
    return shaped


def map_seed_layers(layers):
    """[(SeedLayer, SeedMapper, Mapping)] for `layers` with their input shapes.

    Raises:
        SeedRefusal: a mapper refuses, or cannot build its layer from the file's numbers.
    """
    mapped = []
    for layer in layers:
        mapper = _MAPPERS[layer.class_name]
        try:
            mapping = mapper.map(layer)
        except SeedRefusal:
            raise
        except (ValueError, TypeError, KeyError) as error:
            message = " ".join(str(error).split())
            raise SeedRefusal(
                f"layer '{layer.name}' ({layer.class_name} of {mapper.source}) could not be "
                f"mapped onto a Keras 3 layer: {type(error).__name__}: {message}") from error
        mapped.append((layer, mapper, mapping))
    return mapped


def _legacy_order(layer):
    # The order Keras's legacy h5 format saves and loads a layer's weights in.
    return layer.trainable_weights + layer.non_trainable_weights


def mapped_config(model_config, mapped):
    """`model_config` with each mapped layer's entry replaced by its new layer's."""
    return _replaced(model_config, {
        layer.name: (keras.saving.get_registered_name(type(mapping.layer)),
                     mapping.layer.get_config())
        for layer, _, mapping in mapped})


def mapped_weights(mapped):
    """{layer name: [(weight name, array)]}: the new layers' weights, in load order."""
    return {layer.name: [(f"{layer.name}/{w.name}", keras.ops.convert_to_numpy(w))
                         for w in _legacy_order(mapping.layer)]
            for layer, _, mapping in mapped}


def seed_notes(mapped):
    """One SeedNote per mapped layer."""
    return [SeedNote(layer=layer.name, saved_as=layer.class_name,
                     source=mapping.source or mapper.source,
                     loaded_as=keras.saving.get_registered_name(type(mapping.layer)),
                     exact=mapping.exact, detail=mapping.detail)
            for layer, mapper, mapping in mapped]
