"""Run the original model and its conversion side by side, call by call, in one pass.

The original graph is walked once in topological order (nested models recursively). Each
tensor carries two values per batch: what the original model computes and what the new
model computes (through the layer map from `rewrite.rebuild`). A hook sees every swapped
BN call with both models' inputs before the new layer runs, so it can re-fit that layer
while everything upstream is already final: errors do not compound, and the cost is one
forward pass of each model, not one per site.
"""

import collections

from keras import tree

from normswap.graph import _functional_of, is_graph_model, model_nodes
from normswap.rewrite import accepted_kwargs
from normswap.targets import IDENTITY


class Lockstep:
    """`run(model, batches)` → per-batch outputs of the original and the new model.

    `on_site(layer, old_inputs, new_inputs)` is called for every layer in `hooked` (ids),
    with lists (one entry per batch) of that call's first input in each model, before the
    new layer is applied.
    """

    def __init__(self, layer_map, hooked=(), on_site=None):
        self.layer_map = layer_map
        self.hooked = set(hooked)
        self.on_site = on_site
        self.calls = 0  # layer calls made, for tests of the one-pass property

    def run(self, model, batches):
        """Outputs (flattened lists per batch) of the original and new model on `batches`."""
        return self._model(model, batches, batches)

    def _model(self, model, old_batches, new_batches):
        functional = _functional_of(model)
        count = len(old_batches)
        old = {id(t): [b[i] for b in old_batches] for i, t in enumerate(functional.inputs)}
        new = {id(t): [b[i] for b in new_batches] for i, t in enumerate(functional.inputs)}
        uses = collections.Counter(id(t) for n in model_nodes(model) for t in n.input_tensors)
        uses.update(id(t) for t in functional.outputs)
        for node in model_nodes(model):
            old_out, new_out = self._node(node, old, new, count)
            for i, tensor in enumerate(node.outputs):
                old[id(tensor)] = [outs[i] for outs in old_out]
                new[id(tensor)] = [outs[i] for outs in new_out]
            for tensor in node.input_tensors:
                uses[id(tensor)] -= 1
                if uses[id(tensor)] == 0:
                    old.pop(id(tensor), None)
                    new.pop(id(tensor), None)
        def per_batch(values):
            return [[values[id(t)][b] for t in functional.outputs] for b in range(count)]

        return per_batch(old), per_batch(new)

    def _node(self, node, old, new, count):
        layer = node.operation
        old_args = [node.arguments.fill_in({id(t): old[id(t)][b] for t in node.input_tensors})
                    for b in range(count)]
        new_args = [node.arguments.fill_in({id(t): new[id(t)][b] for t in node.input_tensors})
                    for b in range(count)]
        if is_graph_model(layer):
            return self._model(layer, _flat(old_args), _flat(new_args))
        old_out = [self._call(layer, *args) for args in old_args]
        replacement = self.layer_map.get(id(layer), layer)
        if id(layer) in self.hooked:
            self.on_site(layer, [a[0][0] for a in old_args], [a[0][0] for a in new_args])
        if replacement is IDENTITY:
            new_out = [[a[0][0]] for a in new_args]
        else:
            foreign = type(replacement) is not type(layer)
            new_out = [self._call(replacement, *args, filter_kwargs=foreign) for args in new_args]
        return old_out, new_out

    def _call(self, layer, args, kwargs, filter_kwargs=False):
        kwargs = {**kwargs, "training": False}
        if filter_kwargs:
            kwargs = accepted_kwargs(layer, kwargs)
        self.calls += 1
        return tree.flatten(layer(*args, **kwargs))


def _flat(arguments):
    """Per batch, the tensors a nested model's call received, in input order."""
    return [tree.flatten(args) for args, _ in arguments]
