"""Block-wise reconstruction: fit each block's new layers to the original, block by block.

Closed-form calibration re-fits only a per-channel affine, which cannot restore what
per-sample statistics remove. Reconstruction, as in post-training quantization (AdaRound,
Nagel et al. 2020; BRECQ, Li et al. 2021), trains the swapped layers of one block at a time
— the new normalization layers and the convs that feed them (plain or Weight-Standardized)
— by a few hundred gradient steps, so that the block's output in the new model matches the
original model's at the same point, on the calibration samples, with everything upstream
already converted and fitted. The original model is never trained.

It runs inside the calibration pass (`lockstep.py`): when the replay reaches the end of a
block (`blocks.py`), the block's input in the new model and its output in the original are
at hand for every batch; the block is fitted and the new model's output at the block's end
is recomputed with the fitted weights before the replay goes on. So the cost is one pass
of both models plus the training, linear in depth.

Per block: the loss is the mean squared error over the block's output divided by the
target's variance (1 − R²); Adam with each variable's learning rate scaled by that
variable's own root mean square (a stem kernel reading raw 0–255 pixels is ~100× smaller
than the others and a single rate would wreck it); 1/8 of the samples held out, checked
every `check_every` steps, the best weights kept, and the block's old weights kept when
training did not improve its held-out fit.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from normswap.calibration.blocks import find_blocks
from normswap.calibration.lockstep import Lockstep, Paired
from normswap.defaults import TRAINING_BATCH_SIZE
from normswap.replay import IDENTITY, Replay, accepted_kwargs, call_values, graph_model_of


@dataclasses.dataclass
class ReconstructOptions:
    """How hard each block is fitted (defaults chosen by measurement: benchmarks/)."""

    steps: int = 300  # gradient steps per block, at most
    learning_rate: float = 1e-2  # relative: times each variable's own RMS
    batch_size: int = TRAINING_BATCH_SIZE
    check_every: int = 50  # held-out check interval (early stopping)
    held_out: float = 0.125  # share of the samples held out for the checks
    seed: int = 0


class RMSScaledAdam(keras.optimizers.Adam):
    """Adam whose step for each variable is `learning_rate` × that variable's RMS at the
    start: a relative learning rate, the same for a kernel of 0.005s and one of 0.5s."""

    def __init__(self, scales, **kwargs):
        super().__init__(**kwargs)
        self.scales = dict(scales)  # variable path -> scale
        self._scale_of = []  # by the optimizer's variable index

    def build(self, variables):
        super().build(variables)
        self._scale_of = [self.scales.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        # The backend may hand over its own variable type: look it up by index.
        scale = self._scale_of[self._get_variable_index(variable)]
        return super().update_step(gradient, variable, learning_rate * scale)


def _rms(variable):
    value = np.asarray(ops.convert_to_numpy(variable), np.float64)
    rms = float(np.sqrt(np.mean(value ** 2))) if value.size else 0.0
    return rms if rms > 1e-8 else 1e-3  # a zero-initialised β or τ still moves


class _BlockModel(Replay):
    """The new model's layers of one block, as a Functional model from the block's start
    tensors to its end (layers shared with the new model, not copied)."""

    def __init__(self, layer_map):
        self.layer_map = layer_map

    def build(self, block):
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in block.starts]
        values = {id(t): x for t, x in zip(block.starts, inputs)}
        (output,) = self.run_nodes(block.nodes, values, [block.end])
        return keras.Model(inputs if len(inputs) > 1 else inputs[0], output)

    def call_operation(self, node, args, kwargs):
        operation = node.operation
        new = self.layer_map.get(id(operation), operation)
        if new is IDENTITY:
            return [args[0]]
        if type(new) is not type(operation):
            kwargs = accepted_kwargs(new, kwargs)
        return keras.tree.flatten(new(*args, **kwargs))

    def call_model(self, node, model, args, kwargs):
        return self.call_operation(node, args, kwargs)


def _model_input(arrays):
    return arrays if len(arrays) > 1 else arrays[0]


def _r2(prediction, target, variance):
    return 1.0 - float(np.mean((prediction - target) ** 2)) / variance


class _Fitter:
    """Fits one block: trainable = the sites' new layers and their exclusive producers."""

    def __init__(self, block, layer_map, sites_by_layer, options):
        self.block, self.options = block, options
        self.model = _BlockModel(layer_map).build(block)
        self.trainable = self._trainable_layers(layer_map, sites_by_layer)

    def _trainable_layers(self, layer_map, sites_by_layer):
        layers = []
        for bn in self.block.sites:
            site = sites_by_layer[id(bn)]
            layers.append(layer_map[id(bn)])
            if site.source is not None and site.source_exclusive:  # its conv, if in the block
                source = layer_map.get(id(site.source), site.source)
                if source is not IDENTITY and any(
                        n.operation is site.source for n in self.block.nodes):
                    layers.append(source)
        return [layer for layer in layers if layer is not IDENTITY and layer.weights]

    def fit(self, inputs, target):
        """Train on (inputs, target) arrays; returns (R² before, R² after, kept)."""
        options = self.options
        count = len(target)
        rng = np.random.default_rng(options.seed)
        order = rng.permutation(count)
        held = max(1, int(round(count * options.held_out))) if count > 8 else 0
        fit_rows, check_rows = order[held:], (order[:held] if held else order)
        variance = max(float(np.var(target[check_rows])), 1e-12)

        def check():
            prediction = self._predict([x[check_rows] for x in inputs])
            return _r2(prediction, target[check_rows], variance)

        weights = {id(layer): layer.get_weights() for layer in self.trainable}
        before = best = check()
        best_weights = weights
        if not self.trainable or not options.steps:
            return before, before, False
        flags = self._train_only_the_fitted_layers()
        try:
            trainer = self._compiled(variance)
            done, patience = 0, 2
            while done < options.steps and patience:
                steps = min(options.check_every, options.steps - done)
                rows = [rng.choice(fit_rows, size=min(options.batch_size, len(fit_rows)),
                                   replace=False) for _ in range(steps)]
                for batch in rows:
                    trainer.train_on_batch(_model_input([x[batch] for x in inputs]),
                                           target[batch])
                done += steps
                score = check()
                if score > best:
                    best, patience = score, 2
                    best_weights = {id(layer): layer.get_weights() for layer in self.trainable}
                else:
                    patience -= 1
        finally:
            for layer, flag in flags:
                layer.trainable = flag
        for layer in self.trainable:
            layer.set_weights(best_weights[id(layer)])
        return before, best, best > before

    def _train_only_the_fitted_layers(self):
        chosen = {id(layer) for layer in self.trainable}
        flags = []
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            if not layer.weights or layer._flatten_layers(include_self=False):
                continue
            flags.append((layer, layer.trainable))
            layer.trainable = id(layer) in chosen
        return flags

    def _compiled(self, variance):
        scales = {v.path: _rms(v) for layer in self.trainable for v in layer.trainable_weights}
        optimizer = RMSScaledAdam(scales, learning_rate=self.options.learning_rate)

        def relative_squared_error(target, prediction):  # 1 − R² on the batch
            return ops.mean(ops.square(prediction - target)) / variance

        self.model.compile(optimizer=optimizer, loss=relative_squared_error)
        return self.model

    def _predict(self, inputs):
        outputs = []
        size = 256
        for start in range(0, len(inputs[0]), size):
            part = [x[start:start + size] for x in inputs]
            outputs.append(np.asarray(ops.convert_to_numpy(
                self.model(_model_input(part), training=False))))
        return np.concatenate(outputs)


class Reconstruction(Lockstep):
    """The calibration pass with block-wise reconstruction (see the module doc).

    `sites_by_layer`: {id(BN layer): BNSite} of the inexact swapped sites to fit;
    `results` collects one dict per block fitted.
    """

    def __init__(self, layer_map, sites_by_layer, options=None, progress=None, **kwargs):
        super().__init__(layer_map, **kwargs)
        self.sites_by_layer = sites_by_layer
        self.options = options or ReconstructOptions()
        self.progress = progress
        self.blocks = {}  # id(end-producing node) -> Block
        self.starts = {}  # id(start tensor) -> Paired, captured when read
        self.results = []
        self._seen_graphs = set()

    def run(self, model, inputs):
        functional = graph_model_of(model)
        if id(functional) not in self._seen_graphs:
            self._seen_graphs.add(id(functional))
            for block in find_blocks(model, set(self.sites_by_layer)):
                producer = block.end._keras_history.operation._inbound_nodes[
                    block.end._keras_history.node_index]
                self.blocks[id(producer)] = block
            wanted = {id(t) for b in self.blocks.values() for t in b.starts}
            self.starts.update({id(t): v for t, v in zip(functional.inputs, inputs)
                                if id(t) in wanted})
        return super().run(model, inputs)

    def call_operation(self, node, args, kwargs):
        self._capture(node, args, kwargs)
        outputs = super().call_operation(node, args, kwargs)
        return self._after(node, outputs)

    def call_model(self, node, model, args, kwargs):
        self._capture(node, args, kwargs)
        return self._after(node, super().call_model(node, model, args, kwargs))

    def _capture(self, node, args, kwargs):
        wanted = {id(t) for b in self.blocks.values() for t in b.starts}
        for tensor, value in zip(node.input_tensors, call_values(node, args, kwargs)):
            if id(tensor) in wanted and isinstance(value, Paired):
                self.starts.setdefault(id(tensor), value)

    def _after(self, node, outputs):
        block = self.blocks.get(id(node))
        if block is None:
            return outputs
        starts = [self.starts.pop(id(t)) for t in block.starts]
        inputs = [np.concatenate([np.asarray(ops.convert_to_numpy(b)) for b in s.new])
                  for s in starts]
        index = [id(t) for t in node.outputs].index(id(block.end))
        end = outputs[index]
        target = np.concatenate([np.asarray(ops.convert_to_numpy(b)) for b in end.old])
        fitter = _Fitter(block, self.layer_map, self.sites_by_layer, self.options)
        before, after, improved = fitter.fit(inputs, target)
        self.results.append({"block": block.name,
                             "sites": [self.sites_by_layer[id(s)].name for s in block.sites],
                             "r2_before": before, "r2_after": after, "improved": improved})
        sizes = [len(ops.convert_to_numpy(b)) for b in end.old]
        prediction = fitter._predict(inputs)
        splits = np.cumsum(sizes)[:-1]
        outputs[index] = Paired(end.old, [ops.convert_to_tensor(p)
                                          for p in np.split(prediction, splits)])
        if self.progress is not None:
            self.progress(block.name, len(self.results))
        return outputs
