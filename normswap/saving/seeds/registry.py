"""The seed-layer registry: what identifies each known Keras-2 layer, and its mapper."""

import dataclasses
from typing import Callable, Optional

import keras

#: The values of `group_norm_seed` (`--group-norm-seed`).
GROUP_NORM_SEEDS = ("titu1994", "keras-contrib")

#: The first tf.keras with a GroupNormalization of its own (keras-team/keras-cv#1333:
#: "the first version that has the layer is in fact 2.11").
KERAS_GROUP_NORMALIZATION = (2, 11)


class SeedRefusal(Exception):
    """A seed layer normswap recognizes but will not load; the message is one line."""


@dataclasses.dataclass(frozen=True)
class SeedLayer:
    """One recognized layer of a legacy file, as a mapper sees it.

    Attributes:
        name: the layer's name.
        class_name: the class name the file recorded.
        config: the layer's config as the file holds it.
        weights: {short name: array} in the file's order; the short name drops the
            layer scope, ":0" and a "<layer name>_" prefix ("batch_renormalization_1/
            batch_renormalization_1_gamma:0" → "gamma").
        keras_version: (major, minor) of the Keras that wrote the file, or None.
        input_shape: the shape the layer is called on (batch dim None), once known.
        group_norm_seed: the caller's choice for GroupNormalization, or None.
    """

    name: str
    class_name: str
    config: dict
    weights: dict
    keras_version: Optional[tuple]
    input_shape: Optional[tuple] = None
    group_norm_seed: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Mapping:
    """What a mapper returns.

    Attributes:
        layer: the built Keras 3 layer, named like the seed layer, holding its numbers.
        exact: whether `layer` computes what the seed computed with training=False.
        detail: what differs (from the seed, or from the plain mapping), or "".
        source: the library, when the mapper's `source` names more than one.
    """

    layer: keras.layers.Layer
    exact: bool
    detail: str = ""
    source: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class SeedMapper:
    """One seed: the class name it was saved as and how to recognize and map it.

    Attributes:
        class_name: the bare class name in the file's config.
        source: the library it comes from.
        keys: config keys its layers always write.
        weights: weight short names its layers always have; `optional` those they may.
        applies: `applies(keras_version, group_norm_seed) -> bool`, which files can
            hold it (default: every Keras 1/2 file).
        map: `map(SeedLayer) -> Mapping`.
        doc: the first line of the mapper's docstring.
        exclusive: in the files it applies to, every layer of this class name must be
            this seed's: one that is not (other config keys or weights) is refused
            instead of being left to Keras, whose own class of that name computes
            another function.
    """

    class_name: str
    source: str
    keys: frozenset
    weights: frozenset
    optional: frozenset
    applies: Callable
    map: Callable
    doc: str
    exclusive: bool = False

    def claims(self, config, keras_version, group_norm_seed):
        """Whether a layer of this class name with `config` is this seed's (weights aside)."""
        return (isinstance(config, dict) and self.keys <= set(config)
                and self.applies(keras_version, group_norm_seed))

    def fits(self, weights):
        names = set(weights)
        return self.weights <= names <= self.weights | self.optional


_MAPPERS = {}


def seed_layer(class_name, *, source, keys, weights=(), optional=(), applies=None,
               exclusive=False):
    """Register `map(layer: SeedLayer) -> Mapping` for layers saved as `class_name`
    (the other arguments: the `SeedMapper` attributes)."""

    def register(function):
        if class_name in _MAPPERS:
            raise ValueError(f"A seed mapper for {class_name!r} is already registered.")
        doc = (function.__doc__ or "").strip().splitlines()
        _MAPPERS[class_name] = SeedMapper(
            class_name, source, frozenset(keys), frozenset(weights), frozenset(optional),
            applies or (lambda version, group_norm_seed: True), function,
            doc[0] if doc else "", exclusive)
        return function

    return register


def registered_seeds():
    """All registered seed mappers, in registration order."""
    return list(_MAPPERS.values())


def check_group_norm_seed(value):
    """`group_norm_seed` as given, if None or one of GROUP_NORM_SEEDS; else ValueError."""
    if value is not None and value not in GROUP_NORM_SEEDS:
        raise ValueError(
            "group_norm_seed must be None, 'titu1994' or 'keras-contrib' (the library that "
            f"wrote the file's GroupNormalization layers). Received: {value!r}")
    return value
