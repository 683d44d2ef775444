"""Nothing lost: a real Keras 2 model, converted and saved by normswap as .keras and .h5,
reloads with every weight of every layer that was not swapped bit-identical to the
original's, with the same names, dtypes, trainable flags and dtype policies; and every
weight of the converted model (swapped layers included) bit-identical to what was saved."""

import keras
import numpy as np
import pytest

import normswap
from normswap.saving import save_model

RESNET8 = "mlperftiny_ic01_resnet8_cifar10.h5"


@pytest.fixture(scope="module")
def original(real_model):
    return real_model(RESNET8)


# Targets that replace the BatchNormalization layers and leave every other layer as it was;
# others also change a neighbour (frn and fold carry the BN's affine into the convolution).
ONLY_BN_REPLACED = ["groupnorm", "switchnorm"]
NEIGHBOURS_CHANGED = ["frn", "fold"]


@pytest.fixture(scope="module")
def round_trip(original, tmp_path_factory):
    """`round_trip(target, suffix)`: (converted model, the model reloaded from its file
    saved by normswap), made once per module."""
    folder, cache, converted = tmp_path_factory.mktemp("lossless"), {}, {}

    def make(target, suffix):
        if target not in converted:
            converted[target] = normswap.convert(original, target).model
        if (target, suffix) not in cache:
            path = save_model(converted[target], folder / f"{target}{suffix}")
            cache[target, suffix] = converted[target], keras.models.load_model(path,
                                                                               compile=False)
        return cache[target, suffix]

    return make


def layers_with_weights(model):
    return {layer.name: layer for layer in model._flatten_layers(include_self=False)
            if layer.weights}


def description(layer):
    """Everything about a layer's weights that a save could lose, values included."""
    return {
        "class": type(layer).__name__,
        "trainable": layer.trainable,
        "policy": layer.dtype_policy.name,
        "weights": [(v.path, v.dtype, v.trainable, tuple(v.shape)) for v in layer.weights],
    }


def values(layer):
    return [keras.ops.convert_to_numpy(v) for v in layer.weights]


def assert_bit_identical(a, b, what):
    assert len(a) == len(b), what
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, what
        assert x.tobytes() == y.tobytes(), what


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("target", ONLY_BN_REPLACED)
def test_layers_not_swapped_are_bit_identical_to_the_original(original, round_trip, target,
                                                               suffix):
    _, loaded = round_trip(target, suffix)
    kept = {name: layer for name, layer in layers_with_weights(original).items()
            if not isinstance(layer, keras.layers.BatchNormalization)}
    assert len(kept) >= 10  # the convolutions and the classifier
    new = layers_with_weights(loaded)
    for name, layer in kept.items():
        assert name in new, f"{target}: layer {name} is missing after the round trip"
        assert description(new[name]) == description(layer), name
        assert_bit_identical(values(new[name]), values(layer), f"{target}: {name}")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("target", ONLY_BN_REPLACED + NEIGHBOURS_CHANGED)
def test_every_weight_of_the_converted_model_survives(round_trip, target, suffix):
    model, loaded = round_trip(target, suffix)
    saved, new = layers_with_weights(model), layers_with_weights(loaded)
    assert set(new) == set(saved)
    for name, layer in saved.items():
        assert description(new[name]) == description(layer), name
        assert_bit_identical(values(new[name]), values(layer), f"{target}: {name}")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("target", ONLY_BN_REPLACED + NEIGHBOURS_CHANGED)
def test_the_reloaded_model_computes_what_was_saved(realmodels, round_trip, target, suffix):
    model, loaded = round_trip(target, suffix)
    with np.load(realmodels / "cifar10_test200_mlperftiny_ic01.npz") as data:
        x = data["x"][:16].astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
