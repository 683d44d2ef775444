"""Hypothesis strategies: small random Keras models with BatchNormalization in them.

A strategy draws a `Recipe` — plain data that prints readably when a property fails — and
`build_model(recipe)` turns it into a Functional model. A recipe fixes the rank (Dense
features, Conv1D sequences or Conv2D images, 6 positions per spatial axis), the data format
(channels_first puts the channels, and the BN axis, at 1), one or two inputs, then a list of
steps that each read tensors from the pool of tensors made so far (indices taken modulo the
pool size, so shrinking never breaks a recipe) and add one:

    conv, depthwise, dense     Conv1D/Conv2D (Dense on rank 2), DepthwiseConv1D/2D, Dense
    bn                         BatchNormalization on the channel axis (spelled -1 or as an
                               index) or on another axis; center/scale on or off; optionally
                               the same layer as an earlier BN (a shared BN, two call sites)
    block                      conv (Dense on rank 2) + BN + optionally ReLU
    shared_bn                  one BN layer called on two conv branches of the same width
    residual                   x + conv(x), then a BN (whose producer is the Add)
    relu, add, concat          ReLU or Activation("relu"), Add, Concatenate on the channels
    mul, addc, ops_relu,       raw keras.ops between layers: x * c, x + c, ops.relu(x), and
    reshape                    ops.reshape merging the spatial axes and back
    nested                     a sub-recipe as a nested Functional model (which may nest
                               again), or a chain of layers as a nested Sequential
    custom                     a custom layer whose own Python code calls a Conv2D and a BN

The outputs are one to three tensors of the pool (the last one always), each returned as
it is, averaged over its spatial axes, or flattened into a Dense layer. Every model holds at
least one BatchNormalization. Shapes stay small: at most 8 channels per layer (16 after a
Concatenate), 6 positions per spatial axis, about 8 steps.

Profiles: "ci" (the default: derandomized, no deadline, a fixed number of examples per
property) and "deep" (many more, randomized). Pick one with HYPOTHESIS_PROFILE=deep, e.g.

    HYPOTHESIS_PROFILE=deep pytest tests/test_properties.py
"""

import dataclasses
import os

import keras
import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from keras import ops

from tests.models import randomize_biases, randomize_bn

SPATIAL = 6
MAX_CHANNELS = 8
MAX_STEPS = 8

settings.register_profile(
    "ci", max_examples=120, derandomize=True, deadline=None, print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "deep", max_examples=1500, derandomize=False, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A small model as data: see the module docstring."""

    rank: int  # 2 (features), 3 (sequence), 4 (image); batch axis included
    channels_first: bool
    inputs: tuple  # channel count of each input
    steps: tuple  # (kind, *arguments) per step
    outputs: tuple  # (pool index, head) per output
    seed: int = 0
    sequential: bool = False  # the whole model is a Sequential (one input, layer steps)

    @property
    def channel_axis(self):
        return 1 if self.channels_first else self.rank - 1


# ---------------------------------------------------------------------------------------
# Strategies

channels = st.integers(1, MAX_CHANNELS)
#: Which tensor of the pool a step reads: 0 is the newest, 1 the one before, ... (modulo
#: the pool size), so small values — what Hypothesis draws and shrinks to — make chains.
index = st.integers(0, 50)
bn_axis = st.sampled_from(["channel", "channel", "channel", "-1", "other"])
relu_kind = st.sampled_from(["none", "relu", "activation"])


def _layer_steps(rank, channels_first):
    """Steps that are single layers, or a conv-BN-ReLU block (what a Sequential holds)."""
    kinds = [
        st.tuples(st.just("block"), index, channels, st.sampled_from([1, 3]), st.booleans(),
                  bn_axis, st.booleans(), st.booleans(), relu_kind),
        st.tuples(st.just("conv"), index, channels, st.sampled_from([1, 3]), st.booleans(),
                  st.sampled_from(["linear", "linear", "relu"])),
        st.tuples(st.just("bn"), index, bn_axis, st.booleans(), st.booleans(), st.booleans(),
                  st.sampled_from([1e-3, 1e-5])),
        st.tuples(st.just("relu"), index, st.booleans()),
    ]
    if rank > 2:
        kinds.append(st.tuples(st.just("depthwise"), index, st.sampled_from([1, 2]),
                               st.booleans()))
    if not channels_first:
        kinds.append(st.tuples(st.just("dense"), index, channels, st.booleans()))
    return st.one_of(kinds)


def _steps(rank, channels_first, depth):
    kinds = [
        _layer_steps(rank, channels_first),
        st.tuples(st.just("shared_bn"), index, st.booleans(), st.booleans()),
        st.tuples(st.just("residual"), index, st.booleans(), st.booleans()),
        st.tuples(st.just("add"), index, index),
        st.tuples(st.just("concat"), index, index),
        st.tuples(st.just("mul"), index, st.sampled_from([0.5, 2.0, -1.0])),
        st.tuples(st.just("addc"), index, st.sampled_from([0.5, -1.0, 3.0])),
        st.tuples(st.just("ops_relu"), index),
    ]
    if rank > 2:
        kinds.append(st.tuples(st.just("reshape"), index))
    if rank == 4:
        kinds.append(st.tuples(st.just("custom"), index, channels))
    if depth < 2:
        sub = st.lists(_steps(rank, channels_first, depth + 1), min_size=1, max_size=3)
        chain = st.lists(_layer_steps(rank, channels_first), min_size=1, max_size=3)
        kinds.append(st.tuples(st.just("nested"), index, sub.map(tuple)))
        kinds.append(st.tuples(st.just("sequential"), index, chain.map(tuple)))
    return st.one_of(kinds)


@st.composite
def recipes(draw):
    """A `Recipe` for a small model with at least one BatchNormalization."""
    rank = draw(st.sampled_from([2, 3, 4, 4]))
    channels_first = rank > 2 and draw(st.booleans())
    sequential = draw(st.integers(0, 7)) == 0
    if sequential:
        inputs = (draw(channels),)
        steps = draw(st.lists(_layer_steps(rank, channels_first), min_size=1,
                              max_size=MAX_STEPS // 2))
    else:
        inputs = tuple(draw(st.lists(channels, min_size=1, max_size=2)))
        steps = draw(st.lists(_steps(rank, channels_first, 0), min_size=1, max_size=MAX_STEPS))
        if draw(st.integers(0, 5)) == 0:  # a BN reading a model input: first in the model
            steps.insert(0, ("bn", 0, "channel", True, True, False, 1e-3))
        if draw(st.integers(0, 7)) == 0:  # one BN layer at two call sites
            steps.append(("shared_bn", draw(index), draw(st.booleans()), True))
    steps = tuple(steps)
    if not _has_bn(steps):
        steps += (("bn", 0, "channel", True, True, False, 1e-3),)
    heads = st.sampled_from(["identity", "pool", "dense"])
    extra = () if sequential else tuple(draw(st.lists(st.tuples(index, heads), max_size=2)))
    outputs = ((0, draw(heads)),) + extra
    return Recipe(rank, channels_first, inputs, steps, outputs, seed=draw(st.integers(0, 99)),
                  sequential=sequential)


def _has_bn(steps):
    return any(s[0] in ("bn", "block", "shared_bn", "residual", "custom")
               or (s[0] in ("nested", "sequential") and _has_bn(s[2])) for s in steps)


# ---------------------------------------------------------------------------------------
# Building


@keras.saving.register_keras_serializable(package="normswap_tests")
class ConvBNBlock(keras.layers.Layer):
    """A custom layer whose Python `call` runs a Conv2D and a BatchNormalization of its own
    (as KerasHub's MobileNet blocks do): out of normswap's reach, a skipped site."""

    def __init__(self, filters, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.data_format = filters, data_format
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", data_format=data_format)
        self.bn = keras.layers.BatchNormalization(
            axis=1 if data_format == "channels_first" else -1)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x):
        return keras.ops.relu(self.bn(self.conv(x)))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "data_format": self.data_format}


class _Builder:
    def __init__(self, recipe):
        self.recipe = recipe
        self.data_format = "channels_first" if recipe.channels_first else "channels_last"
        self.axis = recipe.channel_axis
        self.bns = []  # built BN layers, for sharing

    def shape(self, x):
        return tuple(x.shape)

    def spatial_axes(self):
        return [a for a in range(1, self.recipe.rank) if a != self.axis]

    def channels_of(self, x):
        return x.shape[self.axis]

    def linear(self, filters, kernel=1, bias=True, activation="linear"):
        """Dense on features, else Conv1D/Conv2D with "same" padding."""
        rank = self.recipe.rank
        if rank == 2:
            return keras.layers.Dense(filters, use_bias=bias, activation=activation)
        conv = keras.layers.Conv1D if rank == 3 else keras.layers.Conv2D
        return conv(filters, kernel, padding="same", use_bias=bias, activation=activation,
                    data_format=self.data_format)

    def layers(self, step, x):
        """The layers of one layer step applied to `x`, in order."""
        kind, rank = step[0], self.recipe.rank
        if kind == "block":
            _, _, filters, kernel, bias, where, center, scale, relu = step
            layers = [self.linear(filters, kernel, bias)]
            layers.append(self.batchnorm(where, center, scale, False, 1e-3, filters))
            if relu != "none":
                layers.append(keras.layers.ReLU() if relu == "relu"
                              else keras.layers.Activation("relu"))
            return layers
        if kind == "conv":
            _, _, filters, kernel, bias, activation = step
            return [self.linear(filters, kernel, bias, activation)]
        if kind == "depthwise":
            _, _, multiplier, bias = step
            if self.channels_of(x) * multiplier > MAX_CHANNELS * 2:
                multiplier = 1
            depthwise = (keras.layers.DepthwiseConv1D if rank == 3
                         else keras.layers.DepthwiseConv2D)
            return [depthwise(3, padding="same", depth_multiplier=multiplier, use_bias=bias,
                              data_format=self.data_format)]
        if kind == "dense":
            _, _, units, bias = step
            return [keras.layers.Dense(units, use_bias=bias)]
        if kind == "relu":
            return [keras.layers.ReLU() if step[2] else keras.layers.Activation("relu")]
        if kind == "bn":
            _, _, where, center, scale, share, epsilon = step
            return [self.batchnorm(where, center, scale, share, epsilon, None, x)]
        raise ValueError(kind)

    def batchnorm(self, where, center, scale, share, epsilon, channels=None, x=None):
        """A BN on the channel axis (spelled -1 where that is the last axis) or, for
        "other", on the first spatial axis; with `share`, an earlier BN that fits."""
        rank = self.recipe.rank
        if where == "other" and rank > 2:
            axis = self.spatial_axes()[0]
            size = SPATIAL
        else:
            axis = -1 if where == "-1" and self.axis == rank - 1 else self.axis
            size = channels if channels is not None else self.channels_of(x)
        if share:
            for bn in self.bns:
                if bn.axis == axis and bn.built and bn.moving_mean.shape[0] == size:
                    return bn
        bn = keras.layers.BatchNormalization(axis=axis, center=center, scale=scale,
                                             epsilon=epsilon)
        self.bns.append(bn)
        return bn

    def run(self, steps, pool, depth=0):
        """Apply `steps` to the tensors in `pool` (a list, extended in place)."""
        for step in steps:
            kind = step[0]
            x = pool[-1 - step[1] % len(pool)]
            if kind == "add":
                y = pool[-1 - step[2] % len(pool)]
                if self.shape(y) != self.shape(x) or y is x:
                    same = [t for t in pool if self.shape(t) == self.shape(x) and t is not x]
                    if not same:
                        continue
                    y = same[-1]
                pool.append(keras.layers.Add()([x, y]))
            elif kind == "concat":
                y = pool[-1 - step[2] % len(pool)]
                if self.channels_of(x) + self.channels_of(y) > 2 * MAX_CHANNELS:
                    continue
                pool.append(keras.layers.Concatenate(axis=self.axis)([x, y]))
            elif kind == "shared_bn":  # one BN called on two branches of the same width
                _, _, center, scale = step
                c = self.channels_of(x)
                bn = keras.layers.BatchNormalization(axis=self.axis, center=center,
                                                     scale=scale)
                a, b = bn(self.linear(c, 3)(x)), bn(self.linear(c, 1)(x))
                pool.extend([a, b, keras.layers.Concatenate(axis=self.axis)([a, b])])
            elif kind == "residual":  # x + conv(x), then a BN with no foldable producer
                _, _, center, scale = step
                y = keras.layers.Add()([x, self.linear(self.channels_of(x), 3)(x)])
                pool.extend([y, self.batchnorm("channel", center, scale, False, 1e-3, x=y)(y)])
            elif kind == "mul":
                pool.append(x * step[2])
            elif kind == "addc":
                pool.append(x + step[2])
            elif kind == "ops_relu":
                pool.append(ops.relu(x))
            elif kind == "reshape":
                shape = self.shape(x)[1:]
                flat = ops.reshape(x, (-1, int(np.prod(shape))))
                pool.append(ops.reshape(flat, (-1,) + shape))
            elif kind == "custom":
                pool.append(ConvBNBlock(step[2], data_format=self.data_format)(x))
            elif kind == "nested":
                pool.append(self.nested(step[2], x, depth))
            elif kind == "sequential":
                pool.append(self.sequential(step[2], x)(x))
            else:
                for layer in self.layers(step, x):
                    x = layer(x)
                    pool.append(x)
        return pool

    def nested(self, steps, x, depth):
        inner = keras.Input(batch_shape=self.shape(x))
        pool = self.run(steps, [inner], depth + 1)
        return keras.Model(inner, pool[-1])(x)

    def sequential(self, steps, x):
        inner = keras.Input(batch_shape=self.shape(x))
        layers, y = [], inner
        for step in steps:
            for layer in self.layers(step, y):
                if any(layer is other for other in layers):
                    continue  # a BN shared inside one Sequential: left out
                y = layer(y)
                layers.append(layer)
        return keras.Sequential([inner] + layers)


def _input_shape(recipe, channels):
    spatial = (SPATIAL,) * (recipe.rank - 2)
    return (channels,) + spatial if recipe.channels_first else spatial + (channels,)


def build_model(recipe):
    """The model a `Recipe` describes, with random BN statistics and biases."""
    keras.utils.set_random_seed(recipe.seed)
    builder = _Builder(recipe)
    if recipe.sequential:
        source = keras.Input(_input_shape(recipe, recipe.inputs[0]))
        model = builder.sequential(recipe.steps, source)
        return randomize_biases(randomize_bn(model, seed=recipe.seed), seed=recipe.seed)
    # unnamed inputs: an InputLayer's name ("input_layer") differs from its tensor's
    inputs = [keras.Input(_input_shape(recipe, c)) for c in recipe.inputs]
    pool = builder.run(recipe.steps, list(inputs))
    produced = pool[len(inputs):]
    outputs = []
    for position, head in recipe.outputs:
        x = produced[-1 - position % len(produced)]
        if head == "pool" and recipe.rank > 2:
            x = ops.mean(x, axis=builder.spatial_axes())
        elif head == "dense":
            x = keras.layers.Dense(3)(keras.layers.Flatten()(x))
        if not any(x is y for y in outputs):
            outputs.append(x)
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0],
                        outputs if len(outputs) > 1 else outputs[0])
    return randomize_biases(randomize_bn(model, seed=recipe.seed), seed=recipe.seed)
