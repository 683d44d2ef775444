"""Safe mode: a model file holding Python code (a Lambda layer's bytecode) is refused before
Keras sees it, in one line naming the layers; `safe_mode=False` / `--unsafe` loads it.

Whether code ran is shown, not assumed: the stored lambda writes a marker file when it is
called. Unmarshalling bytecode runs nothing; the code runs when Keras calls the layer on a
tensor while building the model, so a load that got that far leaves the marker.
"""

import hashlib
import json
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import normswap
from normswap.cli import main
from normswap.errors import InputFileError, UnsafeModelError
from normswap.saving import load_model, save_model
from normswap.saving.safety import code_carriers
from tests.models import small_cnn

MARKER = "ran_by_lambda_code"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_effect_lambda(marker):
    """A lambda whose bytecode writes `marker` when called (the path is a constant in it)."""
    return eval(f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]")


@pytest.fixture(scope="module")
def keras3_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras3_lambda")
    marker = folder / MARKER
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3, name="dense")(inputs))
    model = keras.Model(inputs, keras.layers.Lambda(side_effect_lambda(marker),
                                                    name="side_effect")(x))
    assert marker.read_text() == "ran"  # building the model called it: the marker works
    marker.unlink()
    model.save(folder / "lambda_code.keras")
    model.save(folder / "lambda_code.h5")
    assert not marker.exists()  # saving does not call it
    return folder


@pytest.fixture
def code_file(request, keras3_files, keras2_files):
    """(path, marker) of the file named by the test's parameter "keras2/…" or "keras3/…"."""
    writer, name = request.param.split("/")
    folder = keras2_files if writer == "keras2" else keras3_files
    marker = folder / MARKER
    marker.unlink(missing_ok=True)
    yield folder / name, marker
    marker.unlink(missing_ok=True)


CODE_FILES = ["keras3/lambda_code.keras", "keras3/lambda_code.h5", "keras2/lambda_code.h5"]


def dense_then_bn(model, x):
    """What the models above compute once their identity lambda is left out."""
    dense, bn = model.get_layer("dense"), model.get_layer("bn")
    return keras.ops.convert_to_numpy(bn(dense(x), training=False))


@pytest.mark.parametrize("code_file", CODE_FILES, indirect=True)
def test_code_is_refused_before_keras_sees_the_file(code_file, monkeypatch):
    path, marker = code_file
    before = digest(path)

    def keras_must_not_read(*args, **kwargs):
        raise AssertionError("Keras was given the file")

    monkeypatch.setattr(keras.models, "load_model", keras_must_not_read)
    monkeypatch.setattr(legacy_h5_format, "load_model_from_hdf5", keras_must_not_read)
    with pytest.raises(UnsafeModelError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "'side_effect'" in message and "1 Lambda layer" in message
    assert "--unsafe" in message and "safe_mode=False" in message
    assert caught.value.exit_code == 2
    assert not marker.exists()
    assert digest(path) == before


@pytest.mark.parametrize("code_file", CODE_FILES, indirect=True)
def test_unsafe_mode_loads_the_file_and_runs_its_code(code_file):
    path, marker = code_file
    model = load_model(path, safe_mode=False)
    assert marker.read_text() == "ran"  # the refusal test above would have seen this
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), dense_then_bn(model, x),
                               rtol=1e-6, atol=1e-6)


# --- functions stored by name carry no code ----------------------------------------------


def double(x):
    return 2 * x


@pytest.fixture
def registered_double(monkeypatch):
    """`double`, registered as "nstest>double" for this test only."""
    from keras.src.saving import object_registration

    monkeypatch.setitem(object_registration.GLOBAL_CUSTOM_OBJECTS, "nstest>double", double)
    monkeypatch.setitem(object_registration.GLOBAL_CUSTOM_NAMES, double, "nstest>double")
    return double


def saved_config(path):
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_named_function_is_stored_by_name_and_loads(registered_double, suffix,
                                                           tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(registered_double, name="named")(inputs))
    path = tmp_path / f"named{suffix}"
    model.save(path)
    function = saved_config(path)["config"]["layers"][1]["config"]["function"]
    assert function["class_name"] == "function" and function["config"] == "nstest>double"
    assert code_carriers(saved_config(path)) == []
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(np.ones((1, 3), "float32"), verbose=0),
                                  [[2.0, 2.0, 2.0]])


def test_keras2_stores_the_code_of_a_named_registered_function(keras2_files):
    # tf_keras serializes any Python function given to a Lambda as bytecode, named and
    # registered or not: the file does carry code, and is refused for it.
    path = keras2_files / "lambda_named.h5"
    config = saved_config(path)["config"]["layers"][-1]["config"]
    assert config["function_type"] == "lambda" and isinstance(config["function"], list)
    with pytest.raises(UnsafeModelError, match="'named'"):
        load_model(path)


def test_keras2_builtin_function_is_not_refused_as_code(keras2_files):
    # A non-Python-function callable (the builtin abs) is stored by name: no code. Keras 3
    # cannot resolve that name ("'abs' is not a callable object"), which is a load error,
    # not a safety refusal.
    path = keras2_files / "lambda_builtin.h5"
    assert code_carriers(saved_config(path)) == []
    with pytest.raises(InputFileError) as caught:
        load_model(path)
    assert not isinstance(caught.value, UnsafeModelError)


# --- what code_carriers finds in a config ---------------------------------------------------


def layer(class_name, name, **config):
    return {"class_name": class_name, "config": {"name": name, **config}}


def functional(*layers, name="model"):
    return {"class_name": "Functional", "config": {"name": name, "layers": list(layers)}}


@pytest.mark.parametrize("config, names", [
    (functional(layer("Lambda", "by_name", function="abs", function_type="function",
                      output_shape=None, output_shape_type="raw")), []),
    (functional(layer("Lambda", "code", function=["b64", None, None],
                      function_type="lambda")), ["code"]),
    # A Keras 2 lambda computing only the output shape, and a subclass of Lambda.
    (functional(layer("Lambda", "shape", function="abs", function_type="function",
                      output_shape=["b64", None, None], output_shape_type="lambda")), ["shape"]),
    (functional(layer("MyLambda", "sub", function=["b64", None, None],
                      function_type="lambda")), ["sub"]),
    (functional(layer("Lambda", "masked", function="abs", function_type="function",
                      mask=["b64", None, None], mask_type="lambda")), ["masked"]),
    # Keras 3: a lambda anywhere (function, output_shape), in a nested model.
    (functional(functional(layer("Lambda", "k3", function={"class_name": "function",
                                                           "config": "nstest>double"},
                                 output_shape={"class_name": "__lambda__",
                                               "config": {"code": "b64"}}),
                           name="inner")), ["k3"]),
    (functional(layer("Dense", "dense", units=3)), []),
])
def test_code_carriers(config, names):
    assert code_carriers(config) == names


def test_refusal_names_at_most_five_layers(tmp_path):
    config = functional(*[layer("Lambda", f"l{i}", function=["b64", None, None],
                                function_type="lambda") for i in range(7)])
    from normswap.saving.safety import refuse_stored_code

    with pytest.raises(UnsafeModelError, match=r"7 Lambda layer\(s\) \('l0', .*'l4' \.\.\.\)"):
        refuse_stored_code(tmp_path / "m.h5", config)


# --- the command line -----------------------------------------------------------------------


def run_here(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("code_file", ["keras2/lambda_code.h5", "keras3/lambda_code.keras"],
                         indirect=True)
def test_cli_refuses_code_in_one_line(code_file, capsys, tmp_path):
    path, marker = code_file
    output = tmp_path / "out.keras"
    for command in (["inspect", path], [path, "--to", "fold", "-o", output]):
        status, _, err = run_here(capsys, *command)
        assert status == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith("normswap: error: ") and "Traceback" not in err
        assert "'side_effect'" in lines[0] and "--unsafe" in lines[0]
        assert not marker.exists()
    assert not output.exists()


@pytest.mark.parametrize("code_file", ["keras2/lambda_code.h5"], indirect=True)
def test_cli_inspect_unsafe_loads_the_file(code_file, capsys):
    path, marker = code_file
    status, out, err = run_here(capsys, "inspect", path, "--unsafe", "--json")
    assert status == 0, err
    assert len(json.loads(out)["sites"]) == 1  # the BatchNormalization
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("code_file", ["keras2/lambda_code.h5"], indirect=True)
def test_cli_convert_unsafe_converts_the_file(code_file, capsys, tmp_path):
    path, marker = code_file
    output = tmp_path / "out.keras"
    status, _, err = run_here(capsys, path, "--to", "fold", "-o", output, "--unsafe")
    assert marker.read_text() == "ran"  # loaded
    assert status == 0, err
    assert output.is_file()


# --- nothing normswap writes needs unsafe loading -------------------------------------------


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("target, options", [
    ("fold", {}), ("frn", {}), ("evonorm", {}), ("switchnorm", {}), ("groupnorm", {"ws": True}),
])
def test_converted_models_load_in_safe_mode(cnn, target, options, suffix, tmp_path):
    assert normswap  # imported: its layers are registered, as for any user of the file
    converted = normswap.convert(cnn, target, **options).model
    path = save_model(converted, tmp_path / f"{target}{suffix}")
    assert code_carriers(saved_config(path)) == []
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), converted.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
