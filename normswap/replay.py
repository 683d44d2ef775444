"""One walk through a model's graph, call by call: the primitive every stage replays.

A Functional or Sequential Keras model is a graph of calls ("nodes"): each node calls one
operation — a layer, a nested model, or a raw `keras.ops` operation such as the `x + 3.0`
inside MobileNetV3 — on tensors made by earlier nodes. `Replay.run(model, inputs)` walks
those nodes in topological order, fills each call's arguments with the values standing for
its input tensors, asks the caller what the call produces, and hands back the values of
the model's outputs. What a "value" is belongs to the caller:

- `graph.py` (finding BN sites): which graph node produced each tensor;
- `rewrite.py` (the rebuild): new symbolic tensors, through replacement layers;
- `calibration/lockstep.py`: per batch, what the original and the new model compute;
- `verify.py` packs its probe inputs with `pack_inputs`.

As with Keras's own `Function._run_through_graph(inputs, operation_fn, call_fn)` and
torch.fx's `Transformer.call_module`, the walk is fixed and the caller decides per call:
override `call_operation` (a layer or a raw operation) and `call_model` (a nested graph
model; by default its own graph is replayed on the call's arguments). Both return a flat
list with one value per output tensor of the node. Values nobody needs any more are
dropped as the walk goes, so a replay holds only the graph's live frontier.
"""

import collections
import inspect

import keras
from keras import tree


class _Identity:
    """The replacement that drops a call: the call returns its first input unchanged."""

    __slots__ = ()

    def __repr__(self):
        return "IDENTITY"

    def __reduce__(self):
        return "IDENTITY"


#: A replacement meaning "drop this call" (test it with `is IDENTITY`).
IDENTITY = _Identity()


def graph_model_of(model):
    """The Functional graph of a model: the model itself, a built Sequential's inner graph,
    or None for a subclassed model (whose calls are Python code, not a graph)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def is_graph_model(operation):
    """True for models normswap can replay: Functional, or Sequential built on an input."""
    return isinstance(operation, keras.Model) and graph_model_of(operation) is not None


def model_nodes(model):
    """The call nodes of a graph model, inputs first (a topological order)."""
    functional = graph_model_of(model)
    nodes = []
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        nodes.extend(n for n in functional._nodes_by_depth[depth] if not n.is_input)
    return nodes


def model_inputs(model):
    """The input tensors of a graph model, flat, in the order `Replay.run` takes values."""
    return list(graph_model_of(model).inputs)


def model_outputs(model):
    """The output tensors of a graph model, flat, in the order `Replay.run` returns values."""
    return list(graph_model_of(model).outputs)


def pack_inputs(model, values):
    """A flat list of values (one per model input) in the structure the model's call takes:
    one value, a list, or a dict, as the model was built."""
    values = list(values)
    if len(values) != len(model_inputs(model)):
        raise ValueError(f"{len(values)} value(s) given for the {len(model_inputs(model))} "
                         f"input(s) of '{model.name}'.")
    structure = getattr(graph_model_of(model), "_inputs_struct", None)
    if structure is not None:
        return tree.pack_sequence_as(structure, values)
    return values[0] if len(values) == 1 else values


def pack_outputs(model, values):
    """A flat list of values (one per model output) in the model's output structure."""
    return tree.pack_sequence_as(graph_model_of(model)._outputs_struct, list(values))


def accepted_kwargs(layer, kwargs):
    """The call keyword arguments `layer` takes (plus `training`, which Keras routes).

    Keras records `mask=None` on BatchNormalization calls; a replacement whose `call` has
    no `mask` argument would reject it.
    """
    parameters = inspect.signature(layer.call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters or k == "training"}


def call_values(node, args, kwargs):
    """The values among a call's filled-in arguments, flat, in argument order."""
    wanted = {id(t) for t in node.input_tensors}
    flat_tensors = tree.flatten((node.arguments.args, node.arguments.kwargs))
    flat_values = tree.flatten((args, kwargs))
    return [v for t, v in zip(flat_tensors, flat_values)
            if isinstance(t, keras.KerasTensor) and id(t) in wanted]


class Replay:
    """Walks a graph model call by call; subclasses decide what each call computes."""

    def run(self, model, inputs):
        """Replay `model` on `inputs` (one value per model input, flat); return one value
        per model output, flat."""
        functional = graph_model_of(model)
        values = {id(t): v for t, v in zip(functional.inputs, inputs)}
        return self.run_nodes(model_nodes(model), values, functional.outputs)

    def run_nodes(self, nodes, values, outputs):
        """Replay `nodes` — calls of one graph, in topological order — starting from
        `values` ({id(tensor): value} of the tensors they read from outside); return the
        values of the tensors `outputs`, in order. `run` replays a whole model this way;
        a caller can replay a part of one (a block of calls between two tensors)."""
        values = dict(values)
        uses = collections.Counter(id(t) for n in nodes for t in n.input_tensors)
        uses.update(id(t) for t in outputs)
        for node in nodes:
            args, kwargs = node.arguments.fill_in(values)
            operation = node.operation
            if is_graph_model(operation):
                results = self.call_model(node, operation, args, kwargs)
            else:
                results = self.call_operation(node, args, kwargs)
            for tensor, value in zip(node.outputs, results):
                if uses[id(tensor)]:
                    values[id(tensor)] = value
            for tensor in node.input_tensors:
                uses[id(tensor)] -= 1
                if uses[id(tensor)] == 0:
                    values.pop(id(tensor), None)
        return [values[id(t)] for t in outputs]

    def call_operation(self, node, args, kwargs):
        """The outputs of one call of a layer or a raw operation (default: the call)."""
        return tree.flatten(node.operation(*args, **kwargs))

    def call_model(self, node, model, args, kwargs):
        """The outputs of one call of a nested graph model (default: replay its graph)."""
        return self.run(model, call_values(node, args, kwargs))
