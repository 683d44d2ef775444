"""Legacy `.h5` files of the five seed libraries load with normswap.load_model, with no
custom_objects, and compute what the seed's own code computed (tests/seeds/,
docs/seed-layers.md; the mapping: normswap/saving/seeds/).

The files are written once per module by tf_keras in a separate process (the tests never
import tf_keras, as in test_keras2_files.py): every variant of tests/seeds/make_files.py,
plus a few models of our own (`WRITER`). The compatibility layers are also checked alone
against the NumPy formulas of tests/seeds/reference.py.
"""

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import normswap
from normswap.errors import InputFileError, UsageError
from normswap.layers import (
    BatchLayerNormalization,
    BatchRenormalization,
    FilterResponseNormalization,
    Keras2BatchLayerNormalization,
    Keras2GroupNormalization,
    Keras2InstanceNormalization,
    Keras2SwitchNormalization,
    SwitchNormalization,
)
from normswap.layers.keras2_group_normalization import grouped_affine_channels, own_channels
from normswap.saving import load_model, load_notes, seeds
from tests.seeds import reference as R
from tests.seeds.make_files import read_written

ROOT = Path(__file__).resolve().parents[2]
HAVE_TF_KERAS = importlib.util.find_spec("tf_keras") is not None
needs_files = pytest.mark.skipif(not HAVE_TF_KERAS,
                                 reason="the seed files are written with tf_keras (Keras 2)")

# Our own files, beside make_files' variants: written with the same stand-ins and aged the
# same way (standalone Keras 2.2.4 configs), through make_files' helpers.
WRITER = r'''
import sys
import json
from pathlib import Path
import h5py
import numpy as np
sys.path.insert(0, sys.argv[2])
import tests.seeds.make_files as M

def sequential_first(folder):
    """A Sequential whose first layer is a seed layer: Keras 2.2 wrote its input shape as the
    layer's batch_input_shape, with no InputLayer entry."""
    tf_keras, S = M._deps()
    rng = np.random.default_rng(5)
    layer = S.ContribInstanceNormalization(axis=-1, input_shape=M.IMAGE, name="inorm")
    model = tf_keras.Sequential([
        layer, tf_keras.layers.Conv2D(4, 3, name="conv"),
        tf_keras.layers.GlobalAveragePooling2D(name="pool"),
        tf_keras.layers.Dense(M.CLASSES, name="logits")], name="sequential_1")
    M._randomize(model, layer, rng)
    x = rng.normal(0.5, 1.5, size=(M.BATCH, *M.IMAGE)).astype("float32")
    f = M._finish("instancenorm_contrib", folder, "sequential_first.h5", model, layer, x,
                  {"axis": -1}, M.KERAS2, "Sequential, seed layer first")
    with h5py.File(f.path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        config["config"]["layers"] = [entry for entry in config["config"]["layers"]
                                      if entry["class_name"] != "InputLayer"]
        h5.attrs["model_config"] = json.dumps(config).encode("utf-8")
    return f

def with_bn(folder):
    """Conv -> BatchNormalization -> ReLU -> Conv -> SwitchNormalization -> ReLU -> Conv ->
    FRN -> pool -> Dense: two seeds and a BN to convert."""
    tf_keras, S = M._deps()
    L = tf_keras.layers
    rng = np.random.default_rng(6)
    inputs = L.Input(M.IMAGE, name="input_1")
    h = L.Conv2D(8, 3, padding="same", name="conv2d_1")(inputs)
    h = L.BatchNormalization(name="batch_normalization_1")(h)
    h = L.ReLU(name="re_lu_1")(h)
    h = L.Conv2D(8, 3, padding="same", name="conv2d_2")(h)
    switch = S.SwitchNormalization(name="switch_normalization_1")
    h = L.ReLU(name="re_lu_2")(switch(h))
    h = L.Conv2D(8, 3, padding="same", name="conv2d_3")(h)
    frn = S.FRN(name="frn_1")
    h = L.GlobalAveragePooling2D(name="pool")(frn(h))
    model = tf_keras.Model(inputs, L.Dense(M.CLASSES, name="logits")(h))
    M._randomize(model, switch, rng)
    frn.set_weights([M._value_for(M._short_name(w, frn), tuple(w.shape), rng).astype("float32")
                     for w in frn.weights])
    bn = model.get_layer("batch_normalization_1")
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0.2, 0.3, 8),
                    rng.normal(0.1, 0.3, 8), rng.uniform(0.5, 2.0, 8)])
    x = rng.normal(0.5, 1.5, size=(M.BATCH, *M.IMAGE)).astype("float32")
    return M._finish("switchnorm", folder, "with_bn.h5", model, switch, x, {}, M.KERAS2,
                     "a BN and two seed layers")

def groupnorm(folder, name, maker, **kwargs):
    """A make_files variant with other arguments, under its own file name."""
    f = maker(Path(folder) / "scratch", **kwargs)
    f.path = f.path.rename(Path(folder) / (name + ".h5"))
    return f

def gn_agreeing(folder):
    """keras-contrib's GroupNormalization with gamma/beta equal on channels j, j + C/G, ...:
    titu1994's layer computes the same function, so the file loads without a choice."""
    tf_keras, S = M._deps()
    rng = np.random.default_rng(7)
    inputs, h, x = M._trunk("conv2d", False, 8, rng)
    layer = S.ContribGroupNormalization(groups=4, name="group_normalization_1")
    model = tf_keras.Model(inputs, M._head(layer(h), "conv2d", False))
    M._randomize(model, layer, rng)
    layer.set_weights([np.tile(rng.uniform(0.5, 1.5, 2), 4), np.tile(rng.normal(0, 1, 2), 4)])
    return M._finish("groupnorm_contrib", folder, "gn_agreeing.h5", model, layer, x,
                     {"groups": 4, "axis": -1}, M.KERAS2, "periodic gamma/beta")

def frn_rank3(folder):
    tf_keras, S = M._deps()
    L = tf_keras.layers
    rng = np.random.default_rng(8)
    inputs = L.Input((6, 4), name="input_1")
    layer = S.FRN(name="frn_1")
    model = tf_keras.Model(inputs, L.Dense(2, name="logits")(L.Flatten()(layer(inputs))))
    M._randomize(model, layer, rng)
    x = rng.normal(size=(M.BATCH, 6, 4)).astype("float32")
    return M._finish("frn", folder, "frn_rank3.h5", model, layer, x, {}, M.KERAS2, "rank 3")

def nested(folder):
    tf_keras, S = M._deps()
    L = tf_keras.layers
    rng = np.random.default_rng(9)
    inner_in = L.Input((8, 8, 8), name="inner_input")
    layer = S.SwitchNormalization(name="switch_normalization_1")
    inner = tf_keras.Model(inner_in, layer(inner_in), name="block")
    inputs = L.Input(M.IMAGE, name="input_1")
    h = inner(L.Conv2D(8, 3, padding="same", name="conv2d_1")(inputs))
    model = tf_keras.Model(inputs, L.GlobalAveragePooling2D(name="pool")(h))
    x = rng.normal(size=(M.BATCH, *M.IMAGE)).astype("float32")
    path = Path(folder) / "nested.h5"
    model.save(path)
    M._age_file(path, M.KERAS2)
    y = model(x).numpy()
    return M.SeedFile(seed="switchnorm", path=path, class_name="SwitchNormalization",
                      layer_name="block", layer_kwargs={}, x=x, outputs=y, layer_inputs=x,
                      layer_outputs=y, weights={}, weight_names=[], config={},
                      notes="seed layer in a nested model")

def extras(folder):
    return {
        "sequential_first": sequential_first(folder),
        "with_bn": with_bn(folder),
        "gn_one_group": groupnorm(folder, "gn_one_group", M.make_groupnorm_titu1994,
                                  groups=1),
        "gn_agreeing": gn_agreeing(folder),
        "gn_tf_keras_2_13": groupnorm(folder, "gn_tf_keras_2_13",
                                      M.make_groupnorm_titu1994, keras_version="2.13.1"),
        "frn_rank3": frn_rank3(folder),
        "nested": nested(folder),
    }

make_all = M.make_all
M.make_all = lambda folder, keras_version="default": {**make_all(folder), **extras(folder)}
M.write_all(sys.argv[1])
'''

# make_files' variants: what each is loaded as.
LOADED_AS = {
    "switchnorm_conv2d": SwitchNormalization,
    "switchnorm_dense": Keras2SwitchNormalization,
    "switchnorm_conv2d_cf": SwitchNormalization,
    "batchrenorm_conv2d": BatchRenormalization,
    "batchrenorm_dense": BatchRenormalization,
    "frn_conv2d": FilterResponseNormalization,
    "groupnorm_titu1994_conv2d": Keras2GroupNormalization,
    "groupnorm_titu1994_dense": keras.layers.GroupNormalization,
    "groupnorm_titu1994_conv2d_cf": keras.layers.GroupNormalization,
    "groupnorm_contrib_conv2d": Keras2GroupNormalization,
    "groupnorm_contrib_dense": keras.layers.GroupNormalization,
    "instancenorm_contrib_conv2d": Keras2InstanceNormalization,
    "instancenorm_contrib_conv2d_axisnone": Keras2InstanceNormalization,
    "instancenorm_contrib_dense_axisnone": Keras2InstanceNormalization,
    "bln_conv2d": Keras2BatchLayerNormalization,
    "bln_dense": BatchLayerNormalization,
    "bln_conv2d_all_moving": Keras2BatchLayerNormalization,
    "bln_conv2d_no_moving": Keras2BatchLayerNormalization,
}
# Our own files that load (the others are refused).
OWN = {
    "sequential_first": Keras2InstanceNormalization,
    "with_bn": SwitchNormalization,
    "gn_one_group": keras.layers.GroupNormalization,
    "gn_agreeing": Keras2GroupNormalization,
    "gn_tf_keras_2_13": keras.layers.GroupNormalization,
}
# Where the file cannot tell titu1994's GroupNormalization from keras-contrib's.
GROUP_NORM_SEED = {"groupnorm_titu1994_conv2d": "titu1994",
                   "groupnorm_contrib_conv2d": "keras-contrib"}
TOLERANCE = 2e-6  # of the output scale: float32 round-off


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not HAVE_TF_KERAS:
        pytest.skip("the seed files are written with tf_keras (Keras 2)")
    folder = tmp_path_factory.mktemp("seeds")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", WRITER, str(folder), str(ROOT)],
                            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    if result.returncode != 0:
        pytest.fail(f"writing the seed files failed:\n{result.stderr[-4000:]}")
    return read_written(folder)


@pytest.fixture(scope="module")
def loaded(files):
    """`loaded(name)`: normswap.load_model of that file, once per module."""
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = load_model(files[name].path,
                                     group_norm_seed=GROUP_NORM_SEED.get(name))
        return cache[name]

    return load


def expected_outputs(f):
    """What the seed computed with training=False; for titu1994's BatchRenormalization,
    what Keras 2's predict gave (the running statistics: see
    seeds.mappers.batch_renormalization)."""
    if f.seed == "batchrenorm":
        return f.alternatives["learning_phase_0"]
    return f.outputs


def assert_close(actual, reference, what):
    scale = max(float(np.abs(reference).max()), 1e-6)
    deviation = float(np.abs(np.asarray(actual, "float64") - reference).max())
    assert deviation <= TOLERANCE * scale, (
        f"{what}: off by {deviation:.3g} ({deviation / scale:.2e} of the scale {scale:.3g})")


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- every file loads, as the seed computed ---------------------------------------------------


@needs_files
@pytest.mark.parametrize("name", list(LOADED_AS) + list(OWN))
def test_loads_and_computes_what_the_seed_computed(name, files, loaded):
    f = files[name]
    before = digest(f.path)
    model = loaded(name)
    layer = model.get_layer(f.layer_name)
    assert type(layer) is {**LOADED_AS, **OWN}[name]
    alternative = "true_groupnorm" if name == "gn_tf_keras_2_13" else None
    reference = f.alternatives[alternative] if alternative else expected_outputs(f)
    assert_close(model.predict(f.x, verbose=0), reference, name)
    assert digest(f.path) == before


@needs_files
@pytest.mark.parametrize("name", list(LOADED_AS))
def test_each_mapped_layer_is_noted(name, files, loaded):
    notes = load_notes(loaded(name))
    assert [n.layer for n in notes] == [files[name].layer_name]
    note = notes[0]
    assert note.saved_as == files[name].class_name
    assert note.loaded_as == keras.saving.get_registered_name(LOADED_AS[name])
    assert note.exact == (files[name].seed != "batchrenorm")
    assert "\n" not in str(note)


@needs_files
def test_batchrenorm_says_what_changed(files, caplog):
    f = files["batchrenorm_conv2d"]
    with caplog.at_level(logging.INFO, logger="normswap"):
        model = load_model(f.path)
    (note,) = load_notes(model)
    assert not note.exact and "running statistics" in note.detail
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CHANGED" in warnings[0].getMessage()
    # The seed's literal training=False output used the batch's own statistics: a
    # different (batch-dependent) function, which the note is about.
    y = model.predict(f.x, verbose=0)
    assert np.abs(y - f.outputs).max() > 100 * TOLERANCE * np.abs(f.outputs).max()
    layer = model.get_layer(f.layer_name)
    np.testing.assert_allclose(layer.moving_stddev.numpy(),
                               np.sqrt(f.weights["running_std"].astype("float64") + 1e-3),
                               rtol=1e-6)


@needs_files
def test_two_seeds_and_a_bn_in_one_model(files, loaded):
    model = loaded("with_bn")
    assert isinstance(model.get_layer("frn_1"), FilterResponseNormalization)
    assert isinstance(model.get_layer("batch_normalization_1"), keras.layers.BatchNormalization)
    assert [n.layer for n in load_notes(model)] == ["switch_normalization_1", "frn_1"]
    # An exact conversion of the BN keeps the seeds' function, and passes its verification.
    folded = normswap.convert(model, "fold").model
    assert_close(folded.predict(files["with_bn"].x, verbose=0), files["with_bn"].outputs,
                 "with_bn folded")


# --- GroupNormalization: never silently the wrong function ------------------------------------


@needs_files
@pytest.mark.parametrize("name", ["groupnorm_titu1994_conv2d", "groupnorm_contrib_conv2d"])
def test_plain_keras_loads_the_group_norm_silently_and_wrongly(name, files):
    # The danger: Keras 3 alone takes the file's layer for its own GroupNormalization.
    f = files[name]
    model = keras.models.load_model(f.path, compile=False)
    assert type(model.get_layer(f.layer_name)) is keras.layers.GroupNormalization
    y = model.predict(f.x, verbose=0)
    assert np.abs(y - f.outputs).max() > 0.01 * np.abs(f.outputs).max()


@needs_files
@pytest.mark.parametrize("name", ["groupnorm_titu1994_conv2d", "groupnorm_contrib_conv2d"])
def test_group_norm_of_unknown_library_is_refused_in_one_line(name, files):
    with pytest.raises(InputFileError) as caught:
        load_model(files[name].path)
    message = str(caught.value)
    assert "\n" not in message
    for word in ("titu1994", "keras-contrib", "--group-norm-seed", "group_norm_seed"):
        assert word in message


@needs_files
@pytest.mark.parametrize("name, wrong", [("groupnorm_titu1994_conv2d", "keras-contrib"),
                                         ("groupnorm_contrib_conv2d", "titu1994")])
def test_group_norm_seed_picks_the_function(name, wrong, files):
    f = files[name]
    model = load_model(f.path, group_norm_seed=wrong)
    (note,) = load_notes(model)
    assert note.source.startswith(wrong) and note.exact
    assert np.abs(model.predict(f.x, verbose=0) - f.outputs).max() > 1e-2


@needs_files
def test_tf_keras_2_11_and_later_group_norm_is_keras_own_unless_told(files):
    f = files["gn_tf_keras_2_13"]
    assert load_notes(load_model(f.path)) == ()  # tf.keras's own layer: loaded by Keras
    model = load_model(f.path, group_norm_seed="titu1994")
    assert type(model.get_layer(f.layer_name)) is Keras2GroupNormalization
    assert_close(model.predict(f.x, verbose=0), f.outputs, "told titu1994")


def test_group_norm_seed_is_checked():
    with pytest.raises(UsageError, match="titu1994"):
        load_model("keras:ResNet50", group_norm_seed="contrib")


# --- refusals ----------------------------------------------------------------------------------


@needs_files
@pytest.mark.parametrize("name, words", [
    ("frn_rank3", ("rank-3", "axes 1 and 2")),
    ("nested", ("nested model or wrapper 'block'", "top level")),
])
def test_refused_in_one_line(name, words, files):
    with pytest.raises(InputFileError) as caught:
        load_model(files[name].path)
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


@needs_files
def test_an_unknown_keras2_group_norm_is_refused_not_taken_for_keras_own(files, tmp_path):
    # A Keras 2.2 file cannot hold Keras's GroupNormalization; a GroupNormalization that
    # is not titu1994's or keras-contrib's (here: no `center` key) is some other library's.
    path = tmp_path / "other_gn.h5"
    path.write_bytes(files["groupnorm_titu1994_dense"].path.read_bytes())
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        del config["config"]["layers"][2]["config"]["center"]
        h5.attrs["model_config"] = json.dumps(config)
    keras.models.load_model(path, compile=False)  # plain Keras 3: silently its own layer
    with pytest.raises(InputFileError, match=r"no such layer of its own.*--custom-objects"):
        load_model(path)


@needs_files
def test_custom_objects_take_precedence(files):
    with h5py.File(files["switchnorm_conv2d"].path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
        assert [s.name for s in seeds.find_seed_layers(h5, config)] == ["switch_normalization_1"]
        assert seeds.find_seed_layers(h5, config, {"SwitchNormalization": object}) == []


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_keras22_sequential_input_shape_is_read_as_keras2_meant():
    # Keras 2.0-2.3 kept a Sequential model's input shape in its first layer's
    # batch_input_shape; read as Keras 3 reads it, a Dense-first model expects rank 3.
    from normswap.saving import legacy
    from normswap.saving.loading import _model_from_config

    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "d1", "units": 4, "dtype": "float32",
                                           "batch_input_shape": [None, 12]}},
        {"class_name": "Dense", "config": {"name": "d2", "units": 2}}]}}
    assert _model_from_config(json.loads(json.dumps(config)), None, True).input_shape == (
        None, None, 12)
    fixed, changes = legacy.apply_fixes(config, legacy.before_load_fixes())
    assert changes == [("sequential-input-shape", "s")]
    assert _model_from_config(fixed, None, True).input_shape == (None, 12)


# --- files of Keras 3 and of normswap are unaffected --------------------------------------------


def test_keras3_and_normswap_h5_files_load_as_written(tmp_path):
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3)(inputs)
    h = SwitchNormalization(name="switch_normalization")(h)
    h = keras.layers.GroupNormalization(groups=4, name="group_normalization")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights([rng.normal(0.3, 0.5, w.shape) for w in layer.get_weights()])
    path = tmp_path / "keras3.h5"
    model.save(path)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    reloaded = load_model(path)
    assert load_notes(reloaded) == ()
    assert type(reloaded.get_layer("switch_normalization")) is SwitchNormalization
    assert type(reloaded.get_layer("group_normalization")) is keras.layers.GroupNormalization
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --- saving what was loaded ---------------------------------------------------------------------


@needs_files
@pytest.mark.parametrize("name", [
    "switchnorm_dense", "batchrenorm_conv2d", "frn_conv2d", "groupnorm_titu1994_conv2d",
    "groupnorm_contrib_conv2d", "groupnorm_titu1994_dense", "instancenorm_contrib_conv2d",
    "instancenorm_contrib_dense_axisnone", "bln_dense", "bln_conv2d_all_moving",
    "sequential_first",
])
def test_loaded_model_saves_and_reloads(name, files, loaded, tmp_path):
    model = loaded(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    layer = reloaded.get_layer(files[name].layer_name)
    assert type(layer) is type(model.get_layer(files[name].layer_name))
    x = files[name].x
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --- the command ---------------------------------------------------------------------------------


def run_here(capsys, *args):
    from normswap.cli import main

    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@needs_files
@pytest.mark.parametrize("name", list(LOADED_AS))
def test_inspect(name, files, capsys):
    seed = GROUP_NORM_SEED.get(name)
    status, out, err = run_here(capsys, "inspect", files[name].path,
                                *(["--group-norm-seed", seed] if seed else []))
    assert status == 0, err
    assert f"layer '{files[name].layer_name}' ({files[name].class_name} of " in out
    assert ("[CHANGED]" in out) == (files[name].seed == "batchrenorm")


@needs_files
def test_inspect_json_and_refusal(files, capsys):
    status, out, err = run_here(capsys, "inspect", files["with_bn"].path, "--json")
    assert status == 0, err
    payload = json.loads(out)
    assert [s["layer"] for s in payload["sites"]] == ["batch_normalization_1"]
    assert [n["loaded_as"] for n in payload["load_notes"]] == [
        "normswap>SwitchNormalization", "normswap>FilterResponseNormalization"]
    status, out, err = run_here(capsys, "inspect", files["groupnorm_contrib_conv2d"].path)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--group-norm-seed" in lines[0]


@needs_files
def test_convert_to_groupnorm_and_reload(files, capsys, tmp_path):
    out = tmp_path / "out.keras"
    status, _, err = run_here(capsys, files["with_bn"].path, "--to", "groupnorm", "-o", out)
    assert status == 0, err
    model = keras.models.load_model(out, compile=False)  # normswap is imported
    kinds = {type(layer) for layer in model.layers}
    assert keras.layers.BatchNormalization not in kinds
    assert {SwitchNormalization, FilterResponseNormalization} <= kinds
    assert np.isfinite(model.predict(files["with_bn"].x, verbose=0)).all()


@needs_files
def test_convert_a_group_norm_file_needs_the_choice(files, capsys, tmp_path):
    # groupnorm_contrib_conv2d has no BN: with the choice made it loads, and its
    # Keras2GroupNormalization converts like a BN to groupnorm.
    path = files["groupnorm_contrib_conv2d"].path
    status, _, err = run_here(capsys, path, "--to", "groupnorm", "-o", tmp_path / "o.keras")
    assert status == 2 and "--group-norm-seed" in err
    status, _, err = run_here(capsys, path, "--to", "groupnorm", "-o", tmp_path / "o.keras",
                              "--group-norm-seed", "keras-contrib")
    assert status == 0 and "--group-norm-seed" not in err
    assert (tmp_path / "o.keras").is_file()


# --- the compatibility layers alone, against the NumPy formulas ---------------------------------


def _assign(layer, values):
    for name, value in values.items():
        getattr(layer, name).assign(np.asarray(value, "float32"))


def _roundtrip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("shape, axis", [((5, 6), -1), ((3, 4, 5, 6), -1), ((3, 6, 4, 5), 1)])
def test_keras2_switch_normalization_matches_the_seed_formula(shape, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.4, shape).astype("float32")
    channels = shape[axis]
    weights = {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 1, channels),
               "mean_weights": rng.normal(0, 1.5, 3), "variance_weights": rng.normal(0, 1.5, 3),
               "moving_mean": rng.normal(0.4, 0.6, channels),
               "moving_variance": rng.uniform(0.3, 2.5, channels)}
    layer = Keras2SwitchNormalization(axis=axis, epsilon=1e-3)
    layer.build(shape)
    _assign(layer, weights)
    y = np.asarray(layer(x, training=False))
    assert_close(y, R.switchnorm(x, weights, axis=axis, epsilon=1e-3), "switchnorm")
    _roundtrip(layer)


@pytest.mark.parametrize("shape, axis, groups", [
    ((3, 8, 8, 8), -1, 4), ((3, 6, 5, 8), -1, 4), ((3, 10, 6), -1, 2), ((3, 8, 5, 6), 1, 4),
    ((4, 12), -1, 3), ((2, 4, 6, 4, 8), -1, 8),
])
@pytest.mark.parametrize("grouped_affine", [False, True])
def test_keras2_group_normalization_matches_the_seed_formulas(shape, axis, groups,
                                                              grouped_affine):
    rng = np.random.default_rng(2)
    x = rng.normal(0.3, 1.4, shape).astype("float32")
    channels = shape[axis]
    weights = {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 1, channels)}
    layer = Keras2GroupNormalization(groups=groups, axis=axis, grouped_affine=grouped_affine)
    layer.build(shape)
    _assign(layer, weights)
    formula = R.groupnorm_contrib if grouped_affine else R.groupnorm_titu1994
    expected = formula(x, weights, groups=groups, axis=axis)
    assert_close(np.asarray(layer(x)), expected, "groupnorm")
    _roundtrip(layer)
    # Unknown spatial sizes (keras-contrib allowed them): the same numbers.
    inputs = keras.Input((None,) * (len(shape) - 2) + (shape[-1],)) if axis == -1 else None
    if inputs is not None and len(shape) > 2:
        model = keras.Model(inputs, layer(inputs))
        assert_close(model.predict(x, verbose=0), expected, "groupnorm, dynamic shape")


def test_grouped_affine_channels_are_keras_contribs():
    # Channels-last 2 x 3 x 4 sample, 2 groups: run g covers row g, and keras-contrib gives
    # the value at channel c of run g the gamma of channel g*2 + c mod 2.
    channels = grouped_affine_channels((2, 3, 4), -1, 2)
    np.testing.assert_array_equal(channels[0, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(channels[1, 2], [2, 3, 2, 3])
    np.testing.assert_array_equal(grouped_affine_channels((4, 3, 2), 1, 2),
                                  own_channels((4, 3, 2), 1))


@pytest.mark.parametrize("shape, axis", [((3, 5, 6, 4), -1), ((3, 5, 6, 4), None),
                                         ((4, 7), None), ((3, 4, 5, 6), 1)])
def test_keras2_instance_normalization_matches_the_seed_formula(shape, axis):
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 1.4, shape).astype("float32")
    size = 1 if axis is None else shape[axis]
    weights = {"gamma": rng.uniform(0.5, 1.5, size), "beta": rng.normal(0, 1, size)}
    layer = Keras2InstanceNormalization(axis=axis)
    layer.build(shape)
    _assign(layer, weights)
    assert_close(np.asarray(layer(x)), R.instancenorm_contrib(x, weights, axis=axis),
                 "instancenorm")
    _roundtrip(layer)


def test_keras2_instance_normalization_refuses_an_axis_at_rank_2():
    with pytest.raises(ValueError, match="axis=None"):
        Keras2InstanceNormalization(axis=-1).build((None, 4))


@pytest.mark.parametrize("shape", [(4, 6), (4, 5, 6), (4, 3, 5, 6)])
@pytest.mark.parametrize("flags", [(True, True, False, False), (False, False, False, False),
                                   (True, False, True, True)])
def test_keras2_batch_layer_normalization_matches_the_seed_formula(shape, flags):
    rng = np.random.default_rng(4)
    x = rng.normal(0.3, 1.4, shape).astype("float32")
    batch, spatial, channels = shape[0], shape[1:-1], shape[-1]
    weights = {"scale1": rng.uniform(0.5, 1.5, channels), "shift1": rng.normal(0, 1, channels),
               "Variable": np.float32(1e-3),
               "moving_Bmean": rng.normal(0, 1, (1, *spatial, channels)),
               "moving_Bvar": rng.uniform(0.3, 2.5, (1, *spatial, channels)),
               "moving_Fmean": rng.normal(0, 1, (batch, *spatial, 1)),
               "moving_Fvar": rng.uniform(0.3, 2.5, (batch, *spatial, 1))}
    names = ("batch_moving_mean", "batch_moving_var", "feature_moving_mean",
             "feature_moving_var")
    layer = Keras2BatchLayerNormalization(batch_size=batch, epsilon=float(np.float32(1e-3)),
                                          **dict(zip(names, flags)))
    layer.build(shape)
    _assign(layer, {"gamma": weights["scale1"], "beta": weights["shift1"],
                    "moving_batch_mean": weights["moving_Bmean"],
                    "moving_batch_variance": weights["moving_Bvar"],
                    "moving_feature_mean": weights["moving_Fmean"],
                    "moving_feature_variance": weights["moving_Fvar"]})
    expected = R.bln(x, weights, batch, **dict(zip(names, flags)))
    assert_close(np.asarray(layer(x, training=False)), expected, "bln")
    _roundtrip(layer)
