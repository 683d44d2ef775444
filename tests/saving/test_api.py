"""normswap.saving: loading (files, keras: names, live models), errors, atomic saving,
inspection."""

import hashlib
import logging
import os
import re
import socket
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from normswap import saving as nsio
from normswap.errors import NormswapError, UsageError

RESNET8 = "mlperftiny_ic01_resnet8_cifar10.h5"
AUTOENCODER = "mlperftiny_ad01_toycar_autoencoder.h5"
CREPE = "crepe_model-tiny_weights_only.h5"


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def expect_usage_error(source, *phrases, **kwargs):
    """load_model(source) must raise a one-line UsageError containing every phrase and
    leave the input's bytes as they were. Returns the message."""
    path = Path(source) if not str(source).startswith("keras:") else None
    before = digest(path) if path is not None and path.is_file() else None
    with pytest.raises(UsageError) as caught:
        nsio.load_model(source, **kwargs)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in message, message
    for phrase in phrases:
        assert phrase.lower() in message.lower(), f"{phrase!r} not in: {message}"
    if path is not None:
        assert str(path) in message, message
    if before is not None:
        assert digest(path) == before
    return message


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    # Non-trivial BN statistics, so a reload that dropped them would show.
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-1, 1, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2, 4).astype("float32"))
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def probe():
    return np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    model.save(folder / "tiny.keras")
    model.save(folder / "tiny.h5")
    return folder


# --- real models ----------------------------------------------------------------------


def test_every_real_model_with_an_architecture_loads(realmodels, real_model):
    sums = dict(line.split()[::-1] for line in (realmodels / "SHA256SUMS").read_text().splitlines()
                if line.strip())
    loaded = 0
    for path in sorted(realmodels.iterdir()):
        info = nsio.describe_file(path)
        if info["format"] not in ("keras", "h5-model"):
            continue
        model = real_model(path.name)
        assert isinstance(model, keras.Model)
        assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
        assert digest(path) == sums[path.name]  # loading never writes to the input
        loaded += 1
    assert loaded >= 3


def test_resnet8_reproduces_its_accuracy(realmodels):
    data = np.load(realmodels / "cifar10_test200_mlperftiny_ic01.npz")
    model = nsio.load_model(str(realmodels / RESNET8))  # a str path works too
    probabilities = model.predict(data["x"].astype("float32"), verbose=0)
    accuracy = np.mean(probabilities.argmax(axis=1) == data["y"].ravel())
    assert accuracy >= 0.85


def test_autoencoder_reproduces_reference_scores(realmodels, real_model):
    data = np.load(realmodels / "toyadmos_car_ad01_logmel_32files.npz")
    model = real_model(AUTOENCODER)
    frames = data["x"][:6]
    windows = np.stack([
        np.stack([clip[i:i + 5].reshape(-1) for i in range(len(clip) - 4)]) for clip in frames
    ])
    flat = windows.reshape(-1, windows.shape[-1])
    errors = ((model.predict(flat, verbose=0) - flat) ** 2).mean(axis=1)
    scores = errors.reshape(windows.shape[:2]).mean(axis=1)
    np.testing.assert_allclose(scores, data["ref_scores"][:6], rtol=1e-4)


def test_weights_only_h5_is_refused(realmodels):
    expect_usage_error(realmodels / CREPE, "weights only", "architecture", ".keras",
                       "model.save")


def test_describe_real_files(realmodels):
    crepe = nsio.describe_file(realmodels / CREPE)
    assert (crepe["format"], crepe["keras_version"], crepe["model_class"]) == (
        "h5-weights", "2.1.5", None)
    resnet = nsio.describe_file(realmodels / RESNET8)
    assert resnet["format"] == "h5-model"
    assert (resnet["keras_version"], resnet["backend"]) == ("2.4.0", "tensorflow")
    assert resnet["model_class"] == "Functional"
    assert resnet["size_bytes"] == (realmodels / RESNET8).stat().st_size
    npz = nsio.describe_file(realmodels / "cifar10_test200_mlperftiny_ic01.npz")
    assert npz["format"] == "unknown"


# --- loading synthetic files ------------------------------------------------------------


def test_live_model_is_returned_as_is(model):
    assert nsio.load_model(model) is model


@pytest.mark.parametrize("name", ["tiny.keras", "tiny.h5"])
def test_saved_files_load_with_the_same_function(saved, name, model, probe):
    loaded = nsio.load_model(saved / name)
    np.testing.assert_allclose(loaded.predict(probe, verbose=0), model.predict(probe, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_describe_synthetic_files(saved, tmp_path):
    keras_info = nsio.describe_file(saved / "tiny.keras")
    assert keras_info["format"] == "keras"
    assert keras_info["keras_version"] == keras.__version__
    assert keras_info["model_class"] == "Functional"
    h5_info = nsio.describe_file(saved / "tiny.h5")
    assert h5_info["format"] == "h5-model"
    assert h5_info["keras_version"] == keras.__version__
    assert h5_info["backend"] == keras.backend.backend()
    savedmodel = tmp_path / "exported"
    savedmodel.mkdir()
    (savedmodel / "saved_model.pb").write_bytes(b"\x08\x01")
    assert nsio.describe_file(savedmodel)["format"] == "savedmodel"
    with pytest.raises(UsageError, match="no such file"):
        nsio.describe_file(tmp_path / "missing.keras")


# --- error cases --------------------------------------------------------------------------


def test_missing_path(tmp_path):
    expect_usage_error(tmp_path / "nope.keras", "no such file")


def test_plain_directory(tmp_path):
    expect_usage_error(tmp_path, "is a directory", ".keras")


def test_savedmodel_directory(tmp_path):
    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    expect_usage_error(folder, "SavedModel", "TFSMLayer", 'model.save("model.keras")')


def test_keras3_weights_file_is_refused(model, tmp_path):
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    expect_usage_error(path, "weights only", "architecture")


def test_text_file_renamed_h5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not a model\n")
    expect_usage_error(path, "not an HDF5 file")


def test_text_file_renamed_keras(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("this is not a model\n")
    expect_usage_error(path, "not a Keras model")


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["values"] = np.arange(5)
    expect_usage_error(path, "not a Keras model")


def test_zip_without_config_named_keras(tmp_path):
    path = tmp_path / "arrays.keras"
    with open(path, "wb") as f:
        np.savez(f, a=np.arange(3))
    expect_usage_error(path, "not a Keras model", "config.json")


@pytest.mark.parametrize("suffix, phrase", [(".npz", "NumPy"), (".tflite", "TensorFlow Lite"),
                                            (".txt", "unsupported file type"),
                                            ("", "no extension")])
def test_unsupported_extension(tmp_path, suffix, phrase):
    path = tmp_path / f"thing{suffix}"
    path.write_bytes(b"PK\x03\x04 whatever")
    expect_usage_error(path, phrase, ".keras", ".h5")


def test_wrong_extension_for_the_content(saved, tmp_path):
    h5_named_keras = tmp_path / "model.keras"
    h5_named_keras.write_bytes((saved / "tiny.h5").read_bytes())
    expect_usage_error(h5_named_keras, "rename it to .h5")
    keras_named_h5 = tmp_path / "model.h5"
    keras_named_h5.write_bytes((saved / "tiny.keras").read_bytes())
    expect_usage_error(keras_named_h5, "rename it to .keras")


CUSTOM_LAYER_FILE = '''
import keras
import numpy as np                      # imported names are not custom objects
from keras.layers import Dense


@keras.saving.register_keras_serializable(package="nstest")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def scaled_relu(x):
    return 0.5 * keras.ops.relu(x)


class _Private:
    pass


CONSTANT = 3
'''


@pytest.fixture
def custom_objects(tmp_path, monkeypatch):
    """Load a custom-objects file; the test's registration is undone afterwards."""
    registry = keras.saving.get_custom_objects()
    monkeypatch.setitem(registry, "nstest>Doubler", None)  # restored (deleted) on teardown
    path = tmp_path / "my_layers.py"
    path.write_text(CUSTOM_LAYER_FILE)
    objects = nsio.load_custom_objects(path)
    return objects


def test_load_custom_objects_lists_what_the_file_defines(custom_objects):
    assert set(custom_objects) == {"Doubler", "nstest>Doubler", "scaled_relu"}
    assert custom_objects["Doubler"] is custom_objects["nstest>Doubler"]
    assert custom_objects["scaled_relu"](np.float32(-2.0)) == 0


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_layer_names_the_class(custom_objects, tmp_path, suffix, probe,
                                              monkeypatch):
    inputs = keras.Input((8, 8, 3))
    outputs = custom_objects["Doubler"]()(keras.layers.Conv2D(2, 1)(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / f"custom{suffix}"
    model.save(path)
    monkeypatch.delitem(keras.saving.get_custom_objects(), "nstest>Doubler")
    expect_usage_error(path, "'Doubler'", "--custom-objects")
    loaded = nsio.load_model(path, custom_objects=custom_objects)
    np.testing.assert_allclose(loaded.predict(probe, verbose=0), model.predict(probe, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_lambda_layer_is_explained(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    expect_usage_error(path, "Lambda", "safe_mode=False")


def test_custom_objects_file_with_all(tmp_path):
    path = tmp_path / "reexport.py"
    path.write_text("from keras.layers import Dense\n__all__ = ['Dense']\n")
    assert nsio.load_custom_objects(path) == {"Dense": keras.layers.Dense}


@pytest.mark.parametrize("name, text, phrase", [
    ("broken.py", "def f(:\n", "syntax error on line 1"),
    ("raises.py", "raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ("empty.py", "x = 1\n", "defines no public classes or functions"),
    ("layers.txt", "x = 1\n", "ending in .py"),
])
def test_custom_objects_file_errors(tmp_path, name, text, phrase):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(phrase)):
        nsio.load_custom_objects(path)
    with pytest.raises(UsageError, match="no such Python file"):
        nsio.load_custom_objects(tmp_path / "missing.py")


# --- keras: applications -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet_v2():
    return nsio.load_model("keras:MobileNetV2", weights="none")


def test_application_with_random_weights(mobilenet_v2):
    assert mobilenet_v2.name.startswith("mobilenetv2")
    assert tuple(mobilenet_v2.output.shape) == (None, 1000)
    assert sum(isinstance(layer, keras.layers.BatchNormalization)
               for layer in mobilenet_v2.layers) == 52


def test_application_with_a_weights_file(mobilenet_v2, tmp_path):
    path = tmp_path / "mnv2.weights.h5"
    mobilenet_v2.save_weights(path)
    loaded = nsio.load_model("keras:MobileNetV2", weights=str(path))
    for a, b in zip(mobilenet_v2.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    expect_usage_error("keras:MobileNetV2", "does not exist", "--weights none",
                       weights=str(tmp_path / "missing.weights.h5"))


def test_application_imagenet_without_network_fails_fast(tmp_path, monkeypatch):
    # An empty Keras cache and no name resolution: the download must fail, quickly.
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path))

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    start = time.monotonic()
    expect_usage_error("keras:MobileNetV2", "ImageNet weights", "--weights none",
                       weights="imagenet")
    assert time.monotonic() - start < 30
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no partial download left


@pytest.mark.parametrize("name, suggestion", [("ResNet05", "keras:ResNet50"),
                                              ("mobilenetv2", "keras:MobileNetV2"),
                                              ("Zebra", "available: ")])
def test_unknown_application(name, suggestion):
    expect_usage_error(f"keras:{name}", f"keras:{name} is not", suggestion, weights="none")


# --- saving ---------------------------------------------------------------------------------


def only_entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name", ["out.keras", "out.h5", "out.hdf5"])
def test_save_round_trip(model, probe, tmp_path, name):
    written = nsio.save_model(model, tmp_path / name)
    assert written == tmp_path / name
    assert only_entries(tmp_path) == [name]
    loaded = keras.models.load_model(written, compile=False)
    np.testing.assert_allclose(loaded.predict(probe, verbose=0), model.predict(probe, verbose=0),
                               rtol=1e-6, atol=1e-6)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_save_without_extension_writes_keras(model, tmp_path):
    written = nsio.save_model(model, tmp_path / "out")
    assert written == tmp_path / "out.keras"
    assert nsio.describe_file(written)["format"] == "keras"


def test_save_h5_does_not_log_the_legacy_warning(model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        nsio.save_model(model, tmp_path / "out.h5")
    assert not [r for r in caplog.records if "HDF5" in r.getMessage()]


def test_save_refuses_bad_extension_and_missing_directory(model, tmp_path):
    with pytest.raises(UsageError, match=r"cannot save as '\.pb'"):
        nsio.save_model(model, tmp_path / "out.pb")
    with pytest.raises(UsageError, match="does not exist"):
        nsio.save_model(model, tmp_path / "no" / "such" / "out.keras")
    assert only_entries(tmp_path) == []


def test_save_refuses_to_overwrite_the_input(model, saved, tmp_path):
    source = tmp_path / "in.keras"
    source.write_bytes((saved / "tiny.keras").read_bytes())
    before = digest(source)
    link = tmp_path / "link.keras"
    link.symlink_to(source)
    for target in (source, tmp_path / "." / "sub" / ".." / "in.keras", link):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(UsageError, match="over the input model"):
            nsio.save_model(model, target, force=True, protected=[str(source)])
    assert digest(source) == before
    assert only_entries(tmp_path) == ["in.keras", "link.keras", "sub"]


def test_save_refuses_existing_output_unless_forced(model, tmp_path):
    target = tmp_path / "out.keras"
    target.write_bytes(b"old")
    with pytest.raises(UsageError, match="already exists.*--force"):
        nsio.save_model(model, target)
    assert target.read_bytes() == b"old"
    nsio.save_model(model, target, force=True)
    assert nsio.describe_file(target)["format"] == "keras"
    assert only_entries(tmp_path) == ["out.keras"]


@pytest.mark.parametrize("name", ["out.keras", "out.h5"])
def test_failed_save_leaves_nothing_behind(model, tmp_path, monkeypatch, name):
    target = tmp_path / name
    target.write_bytes(b"previous output")

    def half_written_then_crash(path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save", half_written_then_crash)
    with pytest.raises(NormswapError) as caught:
        nsio.save_model(model, target, force=True)
    assert caught.value.exit_code == 1
    assert "No space left on device" in str(caught.value)
    assert str(target) in str(caught.value)
    assert only_entries(tmp_path) == [name]
    assert target.read_bytes() == b"previous output"


def test_saved_file_has_normal_permissions(model, tmp_path):
    written = nsio.save_model(model, tmp_path / "out.keras")
    umask = os.umask(0)
    os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask


# --- loading .keras files without random draws ------------------------------------------


def count_random_draws(monkeypatch):
    """Every call of a random initializer, by class name."""
    from keras.src.initializers.random_initializers import RandomInitializer

    draws = []
    for cls in {type(keras.initializers.get(name)) for name in
                ("glorot_uniform", "he_normal", "random_normal", "truncated_normal")}:
        assert issubclass(cls, RandomInitializer)
        real = cls.__call__
        monkeypatch.setattr(cls, "__call__", lambda self, *a, _real=real, **k:
                            draws.append(type(self).__name__) or _real(self, *a, **k))
    return draws


def test_a_keras_file_of_keras_layers_loads_without_random_draws(saved, model, probe,
                                                                 monkeypatch):
    draws = count_random_draws(monkeypatch)
    loaded = nsio.load_model(saved / "tiny.keras")
    assert draws == []
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))
    np.testing.assert_array_equal(loaded(probe), model(probe))
    keras.layers.Dense(3).build((None, 2))  # after the load, initializers draw again
    assert draws == ["GlorotUniform"]


def test_a_keras_file_with_a_foreign_layer_loads_the_usual_way(tmp_path, probe, monkeypatch):
    """A layer from another package may make variables its file does not hold: Keras then
    keeps their initial values, so they are drawn as usual."""
    from tests.saving.custom_layers import ScaleShift

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, ScaleShift(name="scale")(keras.layers.Conv2D(2, 3)(inputs)))
    model.save(tmp_path / "custom.keras")
    draws = count_random_draws(monkeypatch)
    loaded = nsio.load_model(tmp_path / "custom.keras", custom_objects={"ScaleShift": ScaleShift})
    assert "GlorotUniform" in draws
    np.testing.assert_array_equal(loaded(probe), model(probe))


def test_which_configs_count_as_only_keras_and_normswap():
    from normswap.saving.loading import _only_known_classes

    def layer(module, name="Dense"):
        return {"module": module, "class_name": name, "config": {}}

    model = {"module": "keras", "class_name": "Functional", "config": {"layers": [
        layer("keras.layers"), layer("normswap.layers", "EvoNormS0"),
        {"class_name": "__keras_tensor__", "config": {}}]}}
    assert _only_known_classes(model)
    model["config"]["layers"].append(layer("mypackage.layers", "Scale"))
    assert not _only_known_classes(model)
    lambda_layer = layer("keras.layers", "Lambda")
    lambda_layer["config"]["function"] = {"class_name": "__lambda__", "config": {}}
    assert not _only_known_classes({"module": "keras", "class_name": "Functional",
                                    "config": {"layers": [lambda_layer]}})
    assert not _only_known_classes({})
