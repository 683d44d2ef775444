"""Rebuild a model with some layers replaced, leaving the original untouched.

`rebuild(model, edits)` replays the model's graph (`replay.Replay`) on new inputs. Every
call uses, for its layer, either the replacement from `edits` (keyed by the original
layer's id; `IDENTITY` drops the call) or a fresh clone with the same config and weights.
Raw keras.ops operations (`x + 3.0`, `ops.reshape`, ...) are stateless: the same operation
is called again. Nested models are rebuilt once and called as layers, so a model or layer
shared by several call sites maps to one new object and sharing survives; Sequential
models stay Sequential. Call keyword arguments a replacement's `call` does not take
(Keras records `mask=None` on BN calls) are not forwarded.
"""

import contextlib

import keras

from normswap.errors import UnsupportedModelError
from normswap.replay import (
    IDENTITY,
    Replay,
    accepted_kwargs,
    is_graph_model,
    model_inputs,
    pack_inputs,
    pack_outputs,
)


def _input_name(tensor):
    """The name of the InputLayer that made `tensor`: an unnamed `keras.Input()` names its
    layer "input_layer" but its tensor "keras_tensor", and the new model must keep the
    layer's name."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else tensor.name


def _new_inputs(model):
    return [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=_input_name(x))
            for x in model_inputs(model)]


class _Rebuilder(Replay):
    def __init__(self, edits):
        self.edits = edits  # id(original layer) -> new layer or IDENTITY
        self.clones = {}  # id(original layer or model) -> its new counterpart
        self.copies = []  # (original, clone) pairs whose weights are copied afterwards

    def counterpart(self, layer):
        """What stands for `layer` in the new model: its edit, else a clone made once."""
        key = id(layer)
        if key in self.edits:
            return self.edits[key]
        if key not in self.clones:
            self.clones[key] = self.model(layer) if is_graph_model(layer) else self._clone(layer)
        return self.clones[key]

    def _clone(self, layer):
        try:
            with _in_memory_deserialization():
                clone = layer.__class__.from_config(layer.get_config())
        except Exception as error:  # noqa: BLE001 - reported with the layer's name
            raise UnsupportedModelError(
                f"Could not recreate layer '{layer.name}' ({type(layer).__name__}) from its "
                f"config: {error}") from error
        self.copies.append((layer, clone))
        return clone

    def model(self, model):
        """The new counterpart of a whole graph model."""
        if isinstance(model, keras.Sequential):
            return _SequentialRebuild(self).build(model)
        inputs = _new_inputs(model)
        outputs = self.run(model, inputs)
        return keras.Model(pack_inputs(model, inputs), pack_outputs(model, outputs),
                           name=model.name, trainable=model.trainable)

    def call_operation(self, node, args, kwargs):
        operation = node.operation
        if not isinstance(operation, keras.layers.Layer):  # a raw keras.ops operation
            return super().call_operation(node, args, kwargs)
        return self._call(operation, args, kwargs)

    def call_model(self, node, model, args, kwargs):
        return self._call(model, args, kwargs)

    def _call(self, layer, args, kwargs):
        new = self.counterpart(layer)
        if new is IDENTITY:
            return [args[0]]
        if id(layer) in self.edits:
            kwargs = accepted_kwargs(new, kwargs)
        return keras.tree.flatten(new(*args, **kwargs))

    def copy_weights(self):
        for original, clone in self.copies:
            weights = original.get_weights()
            if weights:
                clone.set_weights(weights)


def _in_memory_deserialization():
    """Keras's safe mode switched off while a live layer is re-created from its own config.

    Safe mode guards files: it refuses the Python code a Lambda layer stores. A layer that
    is already in memory was built by the user's code or loaded from a file they trusted
    (normswap's loader applies safe mode itself), so its clone runs nothing new.
    """
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - a Keras without the scope
        return contextlib.nullcontext()
    return SafeModeScope(safe_mode=False)


class _SequentialRebuild(Replay):
    """A Sequential's calls in order, through the rebuilder's counterparts, as a new
    Sequential (dropped calls leave no layer)."""

    def __init__(self, rebuilder):
        self.rebuilder = rebuilder
        self.layers = []

    def build(self, model):
        source = model_inputs(model)[0]
        self.run(model, [None])
        first = keras.Input(batch_shape=source.shape, dtype=source.dtype,
                            name=_input_name(source))
        return keras.Sequential([first] + self.layers, name=model.name,
                                trainable=model.trainable)

    def call_operation(self, node, args, kwargs):
        new = self.rebuilder.counterpart(node.operation)
        if new is not IDENTITY:
            self.layers.append(new)
        return [None] * len(node.outputs)

    def call_model(self, node, model, args, kwargs):
        return self.call_operation(node, args, kwargs)


def rebuild(model, edits):
    """A new model in which each layer whose id is in `edits` is replaced (see module doc).

    Returns (new model, layer map): the map takes id(original layer) to the layer that
    stands for it in the new model (a replacement, a clone, or IDENTITY).
    """
    rebuilder = _Rebuilder(edits)
    new_model = rebuilder.model(model)
    rebuilder.copy_weights()
    return new_model, {**rebuilder.clones, **rebuilder.edits}
