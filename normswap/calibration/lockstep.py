"""Run the original model and its conversion side by side, call by call, in one pass.

The original graph is replayed once (`replay.Replay`, nested models recursively). Each
tensor's value is a `Paired`: per batch, what the original model computes and what the
new model computes (through the layer map from `rewrite.rebuild`). A hook sees every
hooked call with both models' inputs before the new layer runs, so it can re-fit that
layer while everything upstream is already final: errors do not compound, and the cost is
one forward pass of each model, not one per site.
"""

import keras
from keras import tree

from normswap.replay import IDENTITY, Replay, accepted_kwargs


class Paired:
    """The value of one tensor in both models: `old[b]`, `new[b]` for batch b."""

    __slots__ = ("old", "new")

    def __init__(self, old, new):
        self.old, self.new = old, new


def _side(structure, side, batch):
    """A call's filled-in arguments with each Paired replaced by one side of one batch."""
    return tree.map_structure(
        lambda v: getattr(v, side)[batch] if isinstance(v, Paired) else v, structure)


class Lockstep(Replay):
    """`run_batches(model, batches)` → per-batch outputs of the original and the new model.

    `on_site(layer, old_inputs, new_inputs, old_outputs)` is called for every layer in
    `hooked` (ids), with lists (one entry per batch) of that call's first input in each
    model and of its first output in the original, before the new layer is applied.
    """

    def __init__(self, layer_map, hooked=(), on_site=None):
        self.layer_map = layer_map
        self.hooked = set(hooked)
        self.on_site = on_site
        self.calls = 0  # operation calls made, for tests of the one-pass property

    def run_batches(self, model, batches):
        """Outputs (flattened lists per batch) of the original and new model on `batches`
        (each batch a list of arrays, one per model input)."""
        inputs = [Paired([b[i] for b in batches], [b[i] for b in batches])
                  for i in range(len(batches[0]))]
        outputs = self.run(model, inputs)

        def per_batch(side):
            return [[getattr(o, side)[b] for o in outputs] for b in range(len(batches))]

        return per_batch("old"), per_batch("new")

    def call_operation(self, node, args, kwargs):
        operation = node.operation
        count = len(self._first_paired(args, kwargs).old)
        old_args = [_side((args, kwargs), "old", b) for b in range(count)]
        new_args = [_side((args, kwargs), "new", b) for b in range(count)]
        old_out = [self._call(operation, *a) for a in old_args]
        replacement = self.layer_map.get(id(operation), operation)
        if id(operation) in self.hooked:
            self.on_site(operation, [a[0][0] for a in old_args], [a[0][0] for a in new_args],
                         [o[0] for o in old_out])
        if replacement is IDENTITY:
            new_out = [[a[0][0]] for a in new_args]
        else:
            foreign = type(replacement) is not type(operation)
            new_out = [self._call(replacement, *a, filter_kwargs=foreign) for a in new_args]
        return [Paired([o[i] for o in old_out], [o[i] for o in new_out])
                for i in range(len(node.outputs))]

    @staticmethod
    def _first_paired(args, kwargs):
        return next(v for v in tree.flatten((args, kwargs)) if isinstance(v, Paired))

    def _call(self, operation, args, kwargs, filter_kwargs=False):
        if isinstance(operation, keras.layers.Layer):
            kwargs = {**kwargs, "training": False}
        if filter_kwargs:
            kwargs = accepted_kwargs(operation, kwargs)
        self.calls += 1
        return tree.flatten(operation(*args, **kwargs))
