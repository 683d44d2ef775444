"""Rebuild a model with some layers replaced, leaving the original untouched.

`rebuild(model, edits)` replays the model's graph (`replay.Replay`) on new inputs. Every
call uses, for its layer, either the replacement from `edits` (keyed by the original
layer's id; `IDENTITY` drops the call) or a fresh clone with the same config and weights.
Raw keras.ops operations (`x + 3.0`, `ops.reshape`, ...) are stateless: the same operation
is called again. Nested models are rebuilt once and called as layers, so a model or layer
shared by several call sites maps to one new object and sharing survives; Sequential
models stay Sequential. Call keyword arguments a replacement's `call` does not take
(Keras records `mask=None` on BN calls) are not forwarded.

A clone's variables are created straight from copies of the original's values
(`_build_from_values`): no initializer runs — a ResNet50's random kernels would cost more
than the rest of the rebuild — and no second copy is assigned over them. Where that cannot
be done safely (a layer that makes its own variables outside `build`, a backend other than
TensorFlow or JAX), the clone is built on its first call as usual and its weights are
copied with `set_weights` once the graph is replayed. Either way every weight of the clone
equals the original's bit for bit and shares no storage with it.
"""

import contextlib

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import StatelessScope

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
                if _build_from_values(layer, clone):
                    return clone
                clone = layer.__class__.from_config(layer.get_config())  # a fresh one
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


_FAST_BACKENDS = ("tensorflow", "jax")


def _value_copy(variable):
    """A backend tensor holding a copy of `variable`'s value, for a new variable to start
    from.

    TensorFlow: a read of the variable. A new variable may share its buffer, but TensorFlow
    buffers are copy-on-write (an update to either variable copies a shared buffer first),
    so the two stay independent. JAX: a copy in a new buffer. JAX arrays are immutable, but
    Keras's JAX trainer donates the buffers of the model it trains to the compiled step,
    which deletes them: a buffer shared with the original model would leave the original
    with deleted weights once the new model is trained (by `fit`, or by reconstruction).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.identity(variable.value)
    return keras.ops.copy(variable.value)


def _build_from_values(original, clone):
    """Build `clone` (made from `original`'s config) with its variables created from copies
    of `original`'s values, skipping their initializers; True when done.

    The build runs in a Keras StatelessScope, which defers each variable's initializer
    (the variables are created empty and registered for later initialization); each is
    then initialized from the original variable at the same position of `layer.weights`,
    the order `set_weights` uses. Returns False, leaving `clone` unusable, where this does
    not apply — unbuilt or weightless layers, no build config, a build that fails in the
    scope, weights that do not match by number, shape and dtype, another backend — and
    the caller then builds a fresh clone the usual way.
    """
    weights = original.weights
    if (keras.backend.backend() not in _FAST_BACKENDS or not original.built or not weights
            or clone.built or global_state.get_global_attribute("stateless_scope") is not None):
        return False
    build_config = original.get_build_config()
    if not build_config:
        return False
    pending = global_state.get_global_attribute("uninitialized_variables")
    pending = list(pending) if pending else []
    try:
        with StatelessScope(initialize_variables=False):
            clone.build_from_config(build_config)
    except Exception:  # noqa: BLE001 - the usual build will say what is wrong, if anything
        return False
    finally:  # forget the deferred variables: they are initialized below or dropped
        global_state.set_global_attribute("uninitialized_variables", pending)
    new_weights = clone.weights
    if not clone.built or len(new_weights) != len(weights) or any(
            tuple(n.shape) != tuple(o.shape) or n.dtype != o.dtype
            for o, n in zip(weights, new_weights)):
        return False
    try:
        for source, variable in zip(weights, new_weights):
            if getattr(variable, "_value", None) is None:  # deferred: start from the value
                variable._initializer = None
                variable._initialize(_value_copy(source))
            else:  # made outside the stateless build (e.g. in __init__): assign
                variable.assign(_value_copy(source))
    except Exception:  # noqa: BLE001 - a Keras whose variables work otherwise
        return False
    return all(getattr(v, "_value", None) is not None for v in new_weights)


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
