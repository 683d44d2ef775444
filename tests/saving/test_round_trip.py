"""A file Keras cannot load back is never written: a layer shared across models.

Keras 3 writes a `.keras` file of a model in which one layer belongs to two graph models
(a nested model and its parent, or two nested models) but fails to load it; `.h5` loads it
with the same outputs (one copy of the layer per model). normswap loads such a file back
before renaming it into place. (The command cannot meet such a model: Keras loads neither
file with the layer still shared.)"""

import keras
import numpy as np
import pytest

import normswap
from normswap.saving import round_trip, save_model
from normswap.saving.round_trip import layers_shared_across_models
from tests.models import randomize_bn

L = keras.layers


def nested_and_parent():
    """BN 'shared' called inside the nested model 'inner' and again by its parent."""
    keras.utils.set_random_seed(3)
    inputs, inner_inputs = keras.Input((8, 4)), keras.Input((8, 4))
    shared = L.BatchNormalization(name="shared")
    inner = keras.Model(inner_inputs, shared(L.Conv1D(4, 1, name="conv")(inner_inputs)),
                        name="inner")
    outputs = L.Dense(2, name="head")(shared(inner(inputs)))
    return randomize_bn(keras.Model(inputs, outputs, name="outer"), seed=3)


def two_siblings():
    """One Dense layer inside two nested models that the parent calls side by side."""
    inputs = keras.Input((8, 4))
    shared = L.Dense(4, name="shared")
    a_in, b_in = keras.Input((8, 4)), keras.Input((8, 4))
    a = keras.Model(a_in, shared(L.Dense(4)(a_in)), name="a")
    b = keras.Model(b_in, shared(L.Dense(4)(b_in)), name="b")
    return keras.Model(inputs, L.Add()([a(inputs), b(inputs)]), name="outer")


def siamese():
    """One nested encoder called on two inputs: its layers belong to it alone."""
    x_in = keras.Input((8, 4))
    encoder = keras.Model(x_in, L.BatchNormalization()(L.Conv1D(4, 1)(x_in)), name="encoder")
    left, right = keras.Input((8, 4)), keras.Input((8, 4))
    return randomize_bn(keras.Model([left, right], L.Subtract()([encoder(left), encoder(right)])))


def test_layers_shared_across_models_are_found_at_any_depth():
    model = nested_and_parent()
    [(layer, owners)] = layers_shared_across_models(model)
    assert layer.name == "shared" and owners == ["outer", "inner"]
    [(layer, owners)] = layers_shared_across_models(two_siblings())
    assert layer.name == "shared" and owners == ["a", "b"]
    wrapped = keras.Sequential([keras.Input((8, 4)), model], name="wrapper")
    assert [(x.name, o) for x, o in layers_shared_across_models(wrapped)] == [
        ("shared", ["outer", "inner"])]
    assert layers_shared_across_models(siamese()) == []


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # plain Keras, below
def test_a_keras_file_that_would_not_load_back_is_not_written_and_h5_is(tmp_path):
    model = nested_and_parent()
    with pytest.raises(normswap.SaveError) as raised:
        normswap.convert(model, "frozenbn", output=tmp_path / "out.keras")
    message = str(raised.value)
    assert "cannot load this model back from a .keras file" in message
    assert "'shared' belongs to 2 models, 'outer', 'inner'" in message
    assert "expected 2 variables" in message
    assert "As .h5 it loads with the same outputs, with one copy of the layer per model" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    with pytest.raises(ValueError):  # the reason: plain Keras fails on the original too
        model.save(tmp_path / "original.keras")
        keras.models.load_model(tmp_path / "original.keras")
    (tmp_path / "original.keras").unlink()

    result = normswap.convert(model, "frozenbn", output=tmp_path / "out.h5")
    reloaded = keras.models.load_model(result.output, compile=False)
    x = np.random.default_rng(0).normal(size=(3, 8, 4)).astype("float32")
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]
    assert layers_shared_across_models(reloaded) == []  # Keras's .h5: two copies now
    assert len(reloaded.weights) == len(result.model.weights) + 2


def test_a_file_that_loads_with_other_numbers_is_not_written(tmp_path, monkeypatch):
    """Keras may also load such a file and keep freshly initialized weights ("Affected
    layers will retain their freshly-initialized weights"): the outputs are compared."""
    model = two_siblings()
    fresh = keras.models.clone_model(model)  # same structure, other weights
    monkeypatch.setattr(round_trip.keras.models, "load_model", lambda *a, **k: fresh)
    with pytest.raises(normswap.SaveError, match=r"\.h5 file with other outputs \(.* of their "
                       r"scale\): layer 'shared' belongs to 2 models, 'a', 'b'.*Try "
                       r"\.keras\. Nothing was written\.$"):
        save_model(model, tmp_path / "model.h5")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(round_trip.keras.models, "load_model", lambda *a, **k: model)
    assert save_model(model, tmp_path / "model.h5").exists()


def test_models_without_shared_layers_are_not_loaded_back(tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded back a model that needs no check")

    monkeypatch.setattr(round_trip.keras.models, "load_model", must_not_load)
    path = save_model(siamese(), tmp_path / "siamese.keras")
    monkeypatch.undo()
    assert keras.models.load_model(path).count_params() > 0


class Shift(keras.layers.Layer):
    """A custom layer that no registry knows."""

    def call(self, x):
        return x + 1.0


def test_a_custom_layer_of_this_process_loads_back(tmp_path):
    """The file is loaded back with the classes of the model's own layers."""
    keras.utils.set_random_seed(4)
    inputs, inner_inputs = keras.Input((8, 4)), keras.Input((8, 4))
    shared = L.Dense(4, name="shared")
    inner = keras.Model(inner_inputs, shared(Shift(name="shift")(inner_inputs)), name="inner")
    model = keras.Model(inputs, shared(inner(inputs)), name="outer")
    path = save_model(model, tmp_path / "model.h5")
    reloaded = keras.models.load_model(path, compile=False, custom_objects={"Shift": Shift})
    x = np.ones((2, 8, 4), "float32")
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-6)
