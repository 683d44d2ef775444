"""Precise statistics: population statistics re-estimated as true averages over given data.

Batch-dependent layers (BatchNormalization, BatchRenormalization, SwitchNormalization's BN
branch, BatchLayerNormalization, EvoNorm-B0) infer with statistics tracked during training
by exponential moving averages. Those lag behind the weights, and at small batch sizes
they average noisy batch statistics. PreciseBN (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021) replaces them, with the weights frozen, by true averages over many
batches: `recompute_statistics(model, data)`, or `normswap restat MODEL --data FILE -o OUT`.
It is what Switchable Normalization's authors call the "batch average" and what the
Batch-Layer-Normalization seed's per-epoch callback computed.

One pass over the data, batch by batch, streaming: each batch goes through the model as it
did in training — every re-estimated layer normalizes with the batch's own statistics
(training-mode forward), every other layer runs at inference (no dropout) — and each
re-estimated layer's input is reduced into float64 sums (per channel: count, mean and
centred second moment, merged across batches with Chan et al.'s update). At the end each
layer gets the population mean and biased variance of its input over all the data:

    BatchNormalization, SwitchNormalization   moving_mean, moving_variance
    BatchRenormalization                     moving_mean, moving_stddev = √(variance + ε)
    EvoNormB0                                moving_variance
    BatchLayerNormalization                  moving_mean, moving_variance, and the averages
                                             of the per-sample (or per-position) feature
                                             mean and variance

Everything else is left as it was, including the training-time state of each layer (Batch
Renorm's step, BLN's mixing weight: what they record is the training batch size, not the
data). Layers with `trainable=False` run at inference in training too (the frozen-BN
convention), so their statistics are left alone and reported as such. Use the training
batch size: statistics are what the training-mode forward at that batch size produces.
"""

import fnmatch

import keras
import numpy as np
from keras import ops, tree

from normswap.calibration.affine_fit import AffineStats, channel_rows
from normswap.carry import assign, set_population_statistics
from normswap.defaults import BATCH_SIZE
from normswap.layers import (
    BatchLayerNormalization,
    BatchRenormalization,
    EvoNormB0,
    SwitchNormalization,
)
from normswap.replay import Replay
from normswap.samples import input_batches

BATCH_LAYERS = (keras.layers.BatchNormalization, BatchRenormalization, SwitchNormalization,
                BatchLayerNormalization, EvoNormB0)


class _Estimate:
    """The sums of one layer's input over every batch and call."""

    def __init__(self, layer):
        self.layer = layer
        self.channels = None
        self.feature_sums = np.zeros(2)  # Σ per-sample feature mean, Σ feature variance
        self.feature_count = 0

    def observe(self, x):
        rank = len(x.shape)
        axis = _axis(self.layer, rank)
        if self.channels is None:
            self.channels = AffineStats(x.shape[axis])
        rows = channel_rows(x, axis)
        self.channels.add(rows, rows)
        if isinstance(self.layer, BatchLayerNormalization):
            self._observe_features(ops.cast(x, "float32"), axis, rank)

    def _observe_features(self, x, axis, rank):
        every = tuple(range(1, rank))
        feature_axes = every if self.layer.feature_statistics == "sample" else (axis,)
        mean, variance = ops.moments(x, feature_axes)
        self.feature_sums += [float(ops.convert_to_numpy(ops.sum(mean))),
                              float(ops.convert_to_numpy(ops.sum(variance)))]
        self.feature_count += int(np.prod(mean.shape))

    def assign(self):
        mean = self.channels.mean_n
        variance = self.channels.cnn / self.channels.count
        layer = self.layer
        if isinstance(layer, EvoNormB0):
            assign(layer.moving_variance, variance)
        else:
            set_population_statistics(layer, mean, variance, float(layer.epsilon))
        if isinstance(layer, BatchLayerNormalization) and self.feature_count:
            feature_mean, feature_variance = self.feature_sums / self.feature_count
            assign(layer.moving_feature_mean, feature_mean)
            assign(layer.moving_feature_variance, feature_variance)


def _axis(layer, rank):
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    return axis + rank if axis < 0 else axis


def estimates_statistics(layer):
    """Whether `recompute_statistics` re-estimates `layer`: a batch-dependent layer that
    trains its statistics (SwitchNormalization only with its BN branch)."""
    if not isinstance(layer, BATCH_LAYERS) or not layer.trainable:
        return False
    return getattr(layer, "using_bn", True)


class _StatisticsPass(Replay):
    """Training-mode forward for the estimated layers, inference for the others."""

    def __init__(self, estimates):
        self.estimates = estimates  # id(layer) -> _Estimate

    def call_operation(self, node, args, kwargs):
        operation = node.operation
        if isinstance(operation, keras.layers.Layer):
            estimate = self.estimates.get(id(operation))
            if estimate is not None:
                estimate.observe(tree.flatten(args)[0])
            kwargs = {**kwargs, "training": estimate is not None}
        return tree.flatten(operation(*args, **kwargs))


def _selected(model, layers):
    """The layers to re-estimate: every eligible one, or those named by `layers` (layer
    objects or name globs)."""
    found = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, BATCH_LAYERS)]
    if layers is not None:
        wanted = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
        found = [layer for layer in found if any(
            layer is w or (isinstance(w, str) and fnmatch.fnmatchcase(layer.name, w))
            for w in wanted)]
    return found


def recompute_statistics(model, data, *, batch_size=BATCH_SIZE, samples=None, layers=None):
    """Re-estimate the population statistics of `model`'s batch-dependent layers on `data`.

    Args:
        model: a Functional or Sequential model (nested models included); changed in place:
            only the statistics of the re-estimated layers.
        data: unlabelled samples — an array, a tuple of arrays (several inputs), a
            tf.data.Dataset or an iterable of batches (each batch is normalized as one).
        batch_size: how an array is cut into batches: use the training batch size.
        samples: use at most this many samples.
        layers: only these layers (layer objects or name globs); default every
            BatchNormalization, BatchRenormalization, SwitchNormalization,
            BatchLayerNormalization and EvoNormB0.

    Returns a summary: samples, batches, the names of the layers re-estimated, and of those
    left alone with the reason (frozen, or a SwitchNormalization without its BN branch).
    """
    batches = input_batches(model, data, samples=samples, batch_size=batch_size,
                            what="statistics data")
    chosen = _selected(model, layers)
    left = {layer.name: ("frozen (trainable=False)" if not layer.trainable else
                         "no batch statistics (using_bn=False)")
            for layer in chosen if not estimates_statistics(layer)}
    estimates = {id(layer): _Estimate(layer) for layer in chosen if estimates_statistics(layer)}
    saved = [(v, v.numpy()) for e in estimates.values() for v in e.layer.non_trainable_weights]
    replay = _StatisticsPass(estimates)
    try:
        for batch in batches:
            replay.run(model, [ops.convert_to_tensor(a) for a in batch])
    finally:
        for variable, value in saved:  # training-mode calls moved them; restore first
            variable.assign(value)
    observed = [e for e in estimates.values() if e.channels is not None]
    for estimate in observed:
        estimate.assign()
    return {"samples": int(sum(len(b[0]) for b in batches)), "batches": len(batches),
            "layers": [e.layer.name for e in observed], "left_alone": left}
