"""Rebuild a model with some layers replaced, leaving the original untouched.

`rebuild(model, edits)` replays the model's graph call by call (nested models recursively,
Sequential models as Sequential), using for every layer either its replacement from `edits`
(keyed by the original layer's id; IDENTITY drops the call) or a fresh clone with the same
config and weights. A layer shared by several call sites, or by several nested models, maps
to one new layer, so sharing survives. Call keyword arguments a replacement's `call` does not
take (Keras records `mask=None` on BN calls) are not forwarded.
"""

import inspect

import keras
from keras import tree

from normswap.errors import UnsupportedModelError
from normswap.graph import _functional_of, is_graph_model, model_nodes
from normswap.targets import IDENTITY


class _Rebuilder:
    def __init__(self, edits):
        self.edits = edits  # id(original layer) -> new layer or IDENTITY
        self.clones = {}  # id(original layer) -> new layer
        self.copies = []  # (original, clone) pairs whose weights are copied afterwards

    def layer_for(self, layer):
        key = id(layer)
        if key in self.edits:
            return self.edits[key]
        if key not in self.clones:
            self.clones[key] = self._clone(layer)
        return self.clones[key]

    def _clone(self, layer):
        if is_graph_model(layer):
            return self.model(layer)
        try:
            clone = layer.__class__.from_config(layer.get_config())
        except Exception as error:  # noqa: BLE001 - reported with the layer's name
            raise UnsupportedModelError(
                f"Could not recreate layer '{layer.name}' ({type(layer).__name__}) from its "
                f"config: {error}") from error
        self.copies.append((layer, clone))
        return clone

    def model(self, model):
        if isinstance(model, keras.Sequential):
            return self._sequential(model)
        return self._functional(model)

    def _sequential(self, model):
        source = model.inputs[0]
        layers = [keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)]
        for layer in model.layers:
            new = self.layer_for(layer)
            if new is not IDENTITY:
                layers.append(new)
        return keras.Sequential(layers, name=model.name, trainable=model.trainable)

    def _functional(self, model):
        functional = _functional_of(model)
        new_inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name)
                      for x in functional.inputs]
        tensors = {id(old): new for old, new in zip(functional.inputs, new_inputs)}
        for node in model_nodes(model):
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = self._call(node.operation, args, kwargs)
            for old, new in zip(node.outputs, tree.flatten(outputs)):
                tensors[id(old)] = new
        outputs = tree.pack_sequence_as(functional._outputs_struct,
                                        [tensors[id(x)] for x in functional.outputs])
        inputs = tree.pack_sequence_as(functional._inputs_struct, new_inputs)
        return keras.Model(inputs, outputs, name=model.name, trainable=model.trainable)

    def _call(self, layer, args, kwargs):
        new = self.layer_for(layer)
        if new is IDENTITY:
            return args[0]
        if id(layer) in self.edits:
            kwargs = _accepted_kwargs(new, kwargs)
        return new(*args, **kwargs)

    def copy_weights(self):
        for original, clone in self.copies:
            weights = original.get_weights()
            if weights:
                clone.set_weights(weights)


def _accepted_kwargs(layer, kwargs):
    parameters = inspect.signature(layer.call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters or k == "training"}


def accepted_kwargs(layer, kwargs):
    """The call keyword arguments `layer` takes (plus `training`, which Keras routes)."""
    return _accepted_kwargs(layer, kwargs)


def rebuild(model, edits):
    """A new model in which each layer whose id is in `edits` is replaced (see module doc).

    Returns (new model, layer map): the map takes id(original layer) to the layer that
    stands for it in the new model (a replacement, a clone, or IDENTITY).
    """
    rebuilder = _Rebuilder(edits)
    new_model = rebuilder.model(model)
    rebuilder.copy_weights()
    return new_model, {**rebuilder.clones, **rebuilder.edits}
