"""The seed fixtures themselves: each stand-in layer computes its seed's NumPy formula, each
file has the seed's layout, and plain Keras 3 treats the files as measured in
docs/seed-layers.md (Unknown layer, or - GroupNormalization - a silent wrong load).

These tests need tf_keras (the Keras 2 package), which normswap's `test` extra does not
install: they are skipped without it.
"""

import json

import h5py
import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras", reason="the seed fixtures need tf_keras (Keras 2)")

import keras  # noqa: E402

try:  # tests/seeds on sys.path (pytest's default rootdir/prepend import mode)
    import make_files as M
    import reference as R
    import seed_layers as S
except ImportError:  # pragma: no cover - imported as a package
    from . import make_files as M
    from . import reference as R
    from . import seed_layers as S

BASE_KEYS = ["name", "trainable", "dtype"]
CONFIG_KEYS = {
    "switchnorm": [
        "axis", "epsilon", "momentum", "center", "scale", "beta_initializer",
        "gamma_initializer", "mean_weights_initializer", "variance_weights_initializer",
        "moving_mean_initializer", "moving_variance_initializer", "beta_regularizer",
        "gamma_regularizer", "mean_weights_regularizer", "variance_weights_regularizer",
        "beta_constraint", "gamma_constraint", "mean_weights_constraints",
        "variance_weights_constraints"],
    "batchrenorm": [
        "epsilon", "axis", "center", "scale", "momentum", "gamma_regularizer",
        "beta_regularizer", "moving_mean_initializer", "moving_variance_initializer",
        "beta_constraint", "gamma_constraint", "r_max_value", "d_max_value", "t_delta"],
    "frn": [
        "axis", "epsilon", "beta_initializer", "tau_initializer", "gamma_initializer",
        "beta_regularizer", "tau_regularizer", "gamma_regularizer", "beta_constraint",
        "gamma_constraint", "tau_constraint"],
    "groupnorm_titu1994": [
        "groups", "axis", "epsilon", "center", "scale", "beta_initializer",
        "gamma_initializer", "beta_regularizer", "gamma_regularizer", "beta_constraint",
        "gamma_constraint"],
    "instancenorm_contrib": [
        "axis", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
        "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"],
    "bln": [
        "stateful", "self.batchsize", "batch_moving_mean", "batch_moving_var",
        "feature_moving_mean", "feature_moving_var"],
}
CONFIG_KEYS["groupnorm_contrib"] = CONFIG_KEYS["groupnorm_titu1994"]

WEIGHTS = {  # short names in the file's order
    "switchnorm": ["gamma", "beta", "mean_weights", "variance_weights", "moving_mean",
                   "moving_variance"],
    "batchrenorm": ["gamma", "beta", "running_mean", "running_std"],
    "frn": ["tau", "gamma", "beta"],
    "groupnorm_titu1994": ["gamma", "beta"],
    "groupnorm_contrib": ["gamma", "beta"],
    "instancenorm_contrib": ["gamma", "beta"],
    "bln": ["scale1", "shift1", "Variable", "moving_Bmean", "moving_Bvar", "moving_Fmean",
            "moving_Fvar", "batchcount"],
}

SILENT = {"GroupNormalization"}  # class names Keras 3 resolves to a layer of its own


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return M.make_all(tmp_path_factory.mktemp("seed_files"))


@pytest.fixture(scope="module")
def fresh_files(tmp_path_factory):
    """The same models, files left exactly as tf_keras 2.21 writes them."""
    return M.make_all(tmp_path_factory.mktemp("seed_files_new"), keras_version=None)


NAMES = [
    "switchnorm_conv2d", "switchnorm_dense", "switchnorm_conv2d_cf", "batchrenorm_conv2d",
    "batchrenorm_dense", "frn_conv2d", "groupnorm_titu1994_conv2d", "groupnorm_titu1994_dense",
    "groupnorm_titu1994_conv2d_cf", "groupnorm_contrib_conv2d", "groupnorm_contrib_dense",
    "instancenorm_contrib_conv2d", "instancenorm_contrib_conv2d_axisnone",
    "instancenorm_contrib_dense_axisnone", "bln_conv2d", "bln_dense", "bln_conv2d_all_moving",
    "bln_conv2d_no_moving",
]


def test_make_all_names(files):
    assert sorted(files) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_layer_matches_numpy_reference(files, name):
    f = files[name]
    expected = R.seed_layer_output(f.seed, f.layer_inputs, f.weights, f.layer_kwargs)
    np.testing.assert_allclose(f.layer_outputs, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_file_layout_is_the_seeds(files, name):
    f = files[name]
    assert list(f.config) == BASE_KEYS + CONFIG_KEYS[f.seed]
    prefix = f"{f.layer_name}_" if f.seed == "batchrenorm" else ""
    assert f.weight_names == [f"{f.layer_name}/{prefix}{w}:0" for w in WEIGHTS[f.seed]]
    with h5py.File(f.path, "r") as h5:
        assert h5.attrs["keras_version"] in ("2.2.4", "2.2.4-tf")
        text = h5.attrs["model_config"]
        stored = [h5["model_weights"][f.layer_name][n][()] for n in f.weight_names]
    assert "registered_name" not in text and "build_config" not in text
    entry = [e for e in json.loads(text)["config"]["layers"] if e["name"] == f.layer_name][0]
    assert entry["class_name"] == f.class_name
    for short, array in zip(WEIGHTS[f.seed], stored):
        np.testing.assert_array_equal(array, f.weights[short])


def test_weight_values_are_not_trivial(files):
    for f in files.values():
        for short, value in f.weights.items():
            if short in ("gamma", "scale1"):
                assert not np.allclose(value, 1.0), (f.seed, short)
            if short in ("beta", "shift1", "moving_mean", "running_mean", "moving_Bmean"):
                assert not np.allclose(value, 0.0), (f.seed, short)
            if short in ("moving_variance", "running_std", "moving_Bvar"):
                assert not np.allclose(value, 1.0), (f.seed, short)


@pytest.mark.parametrize("name", NAMES)
def test_tf_keras_reload(files, name):
    """What a Keras 2 user got back with custom_objects: the same outputs, except FRN and
    bln_layer, whose own configs do not rebuild them."""
    f = files[name]
    which = "contrib" if f.seed == "groupnorm_contrib" else "titu1994"
    objects = S.custom_objects(which)
    if f.seed in ("frn", "bln"):
        with pytest.raises(TypeError):
            tf_keras.models.load_model(f.path, custom_objects=objects, compile=False)
        return
    model = tf_keras.models.load_model(f.path, custom_objects=objects, compile=False)
    np.testing.assert_allclose(model(f.x, training=False).numpy(), f.outputs,
                               rtol=1e-5, atol=1e-5)


def test_batchrenorm_inference_paths_differ(files):
    f = files["batchrenorm_conv2d"]
    running = f.alternatives["learning_phase_0"]
    assert np.abs(running - f.outputs).max() > 1e-2
    # Unclipped r and d make the renormalized batch output equal the running one.
    np.testing.assert_allclose(f.alternatives["training_false_in_session"], running,
                               rtol=1e-4, atol=1e-4)
    # Layer level: the running-statistics formula on the layer's input.
    layer = tf_keras.models.load_model(f.path, custom_objects=S.custom_objects(),
                                       compile=False).get_layer(f.layer_name)
    np.testing.assert_allclose(layer(f.layer_inputs).numpy(),
                               R.batchrenorm_learning_phase_0(f.layer_inputs, f.weights),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("keras_version", ["seed", "tf_keras_2_21"])
@pytest.mark.parametrize("name", NAMES)
def test_plain_keras3_load(files, fresh_files, name, keras_version):
    """Recorded behaviour of `keras.models.load_model(path, compile=False)`, in the same
    process that wrote the file."""
    f = (files if keras_version == "seed" else fresh_files)[name]
    if f.class_name not in SILENT:
        with pytest.raises(ValueError, match=f"Unknown layer: '{f.class_name}'"):
            keras.models.load_model(f.path, compile=False)
        return
    model = keras.models.load_model(f.path, compile=False)
    assert type(model.get_layer(f.layer_name)) is keras.layers.GroupNormalization
    out = keras.ops.convert_to_numpy(model([f.x], training=False))  # Keras 2 configs list inputs
    np.testing.assert_allclose(out, f.alternatives["true_groupnorm"], rtol=1e-4, atol=1e-4)
    if name.endswith("conv2d"):  # channels-last conv: the seed is not GroupNorm
        assert np.abs(out - f.outputs).max() > 0.05
    else:  # rank 2 and channels-first: the seeds are correct GroupNorm
        np.testing.assert_allclose(out, f.outputs, rtol=1e-4, atol=1e-4)


def test_groupnorm_seeds_differ_only_in_the_affine():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 6, 8))
    w = {"gamma": rng.normal(1, 0.5, 8), "beta": rng.normal(0, 0.5, 8)}
    ones = {"gamma": np.ones(8), "beta": np.zeros(8)}
    np.testing.assert_allclose(R.groupnorm_titu1994(x, ones, 4), R.groupnorm_contrib(x, ones, 4))
    assert np.abs(R.groupnorm_titu1994(x, w, 4) - R.groupnorm_contrib(x, w, 4)).max() > 0.1
    # titu1994's 4 groups of an (4, 6, 8) map = 4 runs of 1 image row x 6 columns x 8 channels
    y = R.groupnorm_titu1994(x, ones, 4, epsilon=0.0)
    np.testing.assert_allclose(y[:, 1].mean(axis=(1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y[:, 1].std(axis=(1, 2)), 1, atol=1e-9)


@pytest.mark.parametrize("layer_cls, kwargs, shape", [
    (S.SwitchNormalization, {}, (3, 5, 6)),
    (S.TituGroupNormalization, {"groups": 2}, (3, 5, 6)),
    (S.ContribGroupNormalization, {"groups": 3}, (3, 5, 6)),
    (S.ContribInstanceNormalization, {"axis": -1}, (3, 5, 6)),
    (S.bln_layer, {"stateful": True, "batchsize": 3}, (3, 5, 6)),
])
def test_rank3_layers_match_reference(layer_cls, kwargs, shape):
    """Sequence inputs, layer alone, random weights."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.3, 1.2, shape).astype("float32")
    layer = layer_cls(**kwargs)
    layer.build(x.shape)
    layer.set_weights([np.asarray(rng.uniform(0.4, 1.8, w.shape), "float32")
                       for w in layer.weights])
    seed = {S.SwitchNormalization: "switchnorm", S.TituGroupNormalization: "groupnorm_titu1994",
            S.ContribGroupNormalization: "groupnorm_contrib",
            S.ContribInstanceNormalization: "instancenorm_contrib", S.bln_layer: "bln"}
    weights = {M._short_name(w, layer): w.numpy() for w in layer.weights}
    expected = R.seed_layer_output(seed[layer_cls], x, weights, kwargs)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected,
                               rtol=1e-4, atol=1e-4)


def test_training_paths_update_their_statistics():
    rng = np.random.default_rng(11)
    x = rng.normal(0.5, 2.0, (4, 3, 3, 2)).astype("float32")
    sn = S.SwitchNormalization(momentum=0.5)
    sn.build(x.shape)
    sn(x, training=True)
    size = 9.0
    var_bn = (x.var(axis=(1, 2)) + x.mean(axis=(1, 2)) ** 2).mean(0) - x.mean(axis=(0, 1, 2)) ** 2
    np.testing.assert_allclose(sn.moving_mean.numpy(), 0.5 * 1 + 0.5 * x.mean(axis=(0, 1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(sn.moving_variance.numpy(),
                               0.5 * var_bn * size / (size - 1.001), rtol=1e-4)

    brn = S.BatchRenormalization(momentum=0.5)
    brn.build(x.shape)
    brn(x, training=True)
    np.testing.assert_allclose(brn.running_variance.numpy(),
                               0.5 + 0.5 * (x.var(axis=(0, 1, 2)) + 1e-3), rtol=1e-5)
    assert float(brn._schedule["t"].numpy()) == pytest.approx(1e-3)
    assert len(brn.weights) == 4  # the schedule stays out of the weights

    bln = S.bln_layer(stateful=True, batchsize=4)
    bln.build(x.shape)
    bln(x, training=True)
    np.testing.assert_allclose(bln.moving_Bmean.numpy(), x.mean(axis=0, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_subprocess_route_gives_the_same_files(files, tmp_path):
    """`python make_files.py DIR` in a fresh process + `read_written(DIR)` = make_all here."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(M.__file__).resolve()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = M.read_written(tmp_path)
    assert sorted(written) == sorted(files)
    for name, f in files.items():
        w = written[name]
        assert w.path.is_file() and w.path.name == f.path.name
        assert (w.seed, w.class_name, w.weight_names, w.config, w.layer_kwargs) == (
            f.seed, f.class_name, f.weight_names, f.config, f.layer_kwargs)
        np.testing.assert_array_equal(w.x, f.x)
        np.testing.assert_allclose(w.outputs, f.outputs, rtol=1e-6, atol=1e-6)
        for key in f.weights:
            np.testing.assert_array_equal(w.weights[key], f.weights[key])
        assert sorted(w.alternatives) == sorted(f.alternatives)
