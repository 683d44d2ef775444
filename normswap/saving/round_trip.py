"""Files Keras writes but cannot load back, caught before they are renamed into place.

Keras 3 saves a layer that belongs to two graph models — a nested model and its parent,
or two nested models — without complaint, but cannot load the `.keras` file back: the
layer's weights are looked for under the other model ("expected 4 variables, but received
0 variables"), or its output is "not connected to `inputs`". The model that was
converted fails the same way. The legacy `.h5` format loads it with the same outputs, but
with one copy of the layer in each model (no longer shared in training). A model whose
nested model is called several times (a Siamese encoder) is not affected: its layers
belong to one model.

So when a model has such a layer, `check_loads_back` loads the written file with Keras
and compares its outputs with the model's on a probe batch; a file that does not load,
or loads with other numbers, is never renamed into place. Models without such a layer
(nearly all) pay nothing.
"""

import warnings

import keras

from normswap.errors import SaveError
from normswap.saving.load_errors import error_summary
from normswap.saving.paths import H5_SUFFIXES


def layers_shared_across_models(model):
    """The layers that belong to more than one of `model`'s graph models (itself and the
    models nested in it at any depth), each with the names of those models, in order."""
    owners = {}
    for graph in [model] + [layer for layer in model._flatten_layers(include_self=False)
                            if isinstance(layer, keras.Model)]:
        for layer in graph.layers:
            owners.setdefault(id(layer), (layer, []))[1].append(graph.name)
    return [(layer, names) for layer, names in owners.values() if len(names) > 1]


def _classes_of(model):
    """{class name: class} of every layer of `model`: a custom layer the user's code made
    is known to this process, registered or not, and the file is loaded back with it."""
    return {type(layer).__name__: type(layer)
            for layer in model._flatten_layers(include_self=True, recursive=True)}


def check_loads_back(model, path, display_path):
    """Raise SaveError unless the file at `path`, just written from `model`, loads back in
    Keras with the same outputs — checked only where a layer is shared across models."""
    shared = layers_shared_across_models(model)
    if not shared:
        return
    from normswap.verify import compare, exact_tolerance, outputs_of, probe_batch
    file_format = ".h5" if display_path.suffix.lower() in H5_SUFFIXES else ".keras"
    layer, owners = shared[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns before it raises
            reloaded = keras.models.load_model(path, compile=False, safe_mode=False,
                                               custom_objects=_classes_of(model))
        batch = probe_batch(model)
        moved = compare(outputs_of(model, batch), outputs_of(reloaded, batch)).relative
    except Exception as error:  # noqa: BLE001 - any failure to load back is the finding
        problem = f"cannot load this model back from a {file_format} file"
        detail = f" ({error_summary(error, limit=160)})"
    else:
        if moved <= exact_tolerance(model):
            return
        problem = (f"loads this model back from a {file_format} file with other outputs "
                   f"({moved:.2e} of their scale)")
        detail = ""
    advice = ("Try .keras" if file_format == ".h5" else
              "As .h5 it loads with the same outputs, with one copy of the layer per model "
              "(trained apart)")
    raise SaveError(
        f"did not write {display_path}: Keras {problem}: layer '{layer.name}' belongs to "
        f"{len(owners)} models, {', '.join(repr(o) for o in owners)}{detail}. {advice}. "
        "Nothing was written.")
