"""Write legacy `.h5` files as the seed layers' users wrote them, with reference outputs.

Each `make_*` function builds a small tf_keras model around one seed layer (seed_layers.py),
gives every weight non-trivial random values (non-zero means, variances != 1, gamma != 1,
beta != 0, unequal switch logits, ...), saves it with tf_keras's `model.save(path)` (legacy
HDF5) into `folder`, and returns a `SeedFile`: the path, the fixed input batch, the
tf_keras model's outputs on it with `training=False`, the seed layer's own input and output,
its weights and config as written. A test loads `path` with normswap and compares.

Same process or subprocess - both work:
- Same process: tf_keras (the Keras 2 package) and Keras 3 coexist in one Python process
  (tf_keras runs TensorFlow's own Keras 2 code, Keras 3 its own; the stand-ins register
  nothing anywhere), so files can be written and then loaded with `keras` in the same
  process, in either import order (checked by test_seed_files.py). Do not call
  `tf_keras.backend.clear_session()` in such a process. Every layer is named explicitly, so
  nothing depends on tf_keras's name counters.
- Subprocess, for tests that must never import tf_keras (as tests/saving does):
  `python tests/seeds/make_files.py OUT_DIR` writes every variant of `make_all` plus
  OUT_DIR/seed_files.json and OUT_DIR/seed_files.npz; `read_written(OUT_DIR)` gives the same
  `SeedFile`s back. This module imports tf_keras only when a `make_*` function runs, so
  `read_written` works without it.

Age of the file: the seeds' files were written by standalone Keras 2.1-2.3 (tf.keras 2.1 for
`bln_layer`), whose configs lack the keys tf_keras 2.21 adds ("module", "registered_name",
"build_config"). By default the config is rewritten without them and the file's
`keras_version` attribute set to what the seed's Keras wrote ("2.2.4", "2.2.4-tf"); pass
`keras_version=None` to keep tf_keras 2.21's file untouched. Weights are never touched.
"""

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np

__all__ = [
    "SeedFile",
    "make_all",
    "read_written",
    "write_all",
    "make_batchrenorm",
    "make_bln",
    "make_frn",
    "make_groupnorm_contrib",
    "make_groupnorm_titu1994",
    "make_instancenorm_contrib",
    "make_switchnorm",
]

KERAS2 = "2.2.4"  # what standalone Keras 2.2 wrote in the file's keras_version attribute
TF_KERAS_2_1 = "2.2.4-tf"  # what tf.keras in TensorFlow 2.1 wrote

BATCH = 4  # rows of the fixed input batch (and bln_layer's configured batch size)
IMAGE = (8, 8, 3)
FEATURES = 12
CLASSES = 10


@dataclasses.dataclass
class SeedFile:
    """One written file and what the seed computes on the fixed batch.

    Attributes:
        seed: short name of the seed, e.g. "switchnorm", "groupnorm_titu1994".
        path: the `.h5` file.
        class_name: the seed layer's class name in the file's model config.
        layer_name: the seed layer's name in the model.
        layer_kwargs: the constructor arguments used (the seed's own argument names).
        x: the fixed input batch (float32).
        outputs: the tf_keras model's output on `x` with `training=False` (logits,
            float32) - what the seed's code computes with training=False. For
            BatchRenormalization that is the batch-statistics output; what Keras 2's
            predict gave is alternatives["learning_phase_0"] (see docs/seed-layers.md).
        layer_inputs, layer_outputs: the seed layer's input and its output on it with
            `training=False`, for checking the mapped layer alone.
        weights: the seed layer's weights by short name (the saved name without the layer
            scope, ":0", and for BatchRenormalization without the "<layer name>_" prefix).
        weight_names: the seed layer's weight names exactly as the file lists them.
        config: the seed layer's config exactly as written in the file.
        alternatives: other outputs on `x` a reader might expect, by name, e.g.
            "learning_phase_0" (BatchRenormalization's running-statistics path) or
            "true_groupnorm" (what a correct GroupNorm - Keras 3's - computes with the same
            gamma/beta). Empty when there is none.
        notes: one paragraph on what is special about this file.
    """

    seed: str
    path: Path
    class_name: str
    layer_name: str
    layer_kwargs: dict
    x: np.ndarray
    outputs: np.ndarray
    layer_inputs: np.ndarray
    layer_outputs: np.ndarray
    weights: dict
    weight_names: list
    config: dict
    alternatives: dict = dataclasses.field(default_factory=dict)
    notes: str = ""


# --- building blocks ----------------------------------------------------------------------


def _deps():
    """(tf_keras, seed_layers), imported on first use: reading files needs neither."""
    import tf_keras

    try:  # imported as tests.seeds.make_files, or with tests/seeds on sys.path
        from . import seed_layers
    except ImportError:  # pragma: no cover
        import seed_layers
    return tf_keras, seed_layers


def _trunk(kind, channels_first, width, rng):
    """Input -> Conv2D (or Dense) [-> Permute to channels-first]; returns (input, tensor,
    fixed batch)."""
    L = _deps()[0].layers
    if kind == "conv2d":
        inputs = L.Input(IMAGE, name="input_1")
        h = L.Conv2D(width, 3, padding="same", name="conv2d_1")(inputs)
        if channels_first:
            h = L.Permute((3, 1, 2), name="permute_1")(h)
        x = rng.normal(0.5, 1.5, size=(BATCH, *IMAGE)).astype("float32")
    elif kind == "dense":
        if channels_first:
            raise ValueError("channels_first needs kind='conv2d'")
        inputs = L.Input((FEATURES,), name="input_1")
        h = L.Dense(width, name="dense_1")(inputs)
        x = rng.normal(0.5, 1.5, size=(BATCH, FEATURES)).astype("float32")
    else:
        raise ValueError(f"kind must be 'conv2d' or 'dense', got {kind!r}")
    return inputs, h, x


def _head(h, kind, channels_first, relu=True):
    """[ReLU ->] GlobalAveragePooling2D (conv) -> Dense logits."""
    L = _deps()[0].layers
    if relu:
        h = L.ReLU(name="re_lu_1")(h)
    if kind == "conv2d":
        fmt = "channels_first" if channels_first else "channels_last"
        h = L.GlobalAveragePooling2D(data_format=fmt, name="global_average_pooling2d_1")(h)
    return L.Dense(CLASSES, name="logits")(h)


def _short_name(weight, layer):
    name = weight.name.split("/")[-1].split(":")[0]
    prefix = f"{layer.name}_"
    return name[len(prefix):] if name.startswith(prefix) else name


def _value_for(short, shape, rng):
    """Non-trivial values, by the role a weight's name says it has."""
    if short in ("gamma", "scale1"):
        return rng.uniform(0.5, 1.6, shape) * rng.choice([1.0, 1.0, 1.0, -1.0], shape)
    if short in ("beta", "shift1"):
        return rng.normal(0.3, 0.5, shape)
    if short in ("moving_mean", "running_mean", "moving_Bmean", "moving_Fmean"):
        return rng.normal(0.4, 0.6, shape)
    if short in ("moving_variance", "running_std", "moving_Bvar", "moving_Fvar"):
        return rng.uniform(0.3, 2.5, shape)
    if short in ("mean_weights", "variance_weights"):
        return rng.normal(0.0, 1.5, shape)
    if short == "tau":
        return rng.normal(-0.2, 0.3, shape)
    if short == "Variable":  # bln_layer's offset: never trained, always 0.001
        return np.full(shape, 0.001)
    if short == "batchcount":
        return np.full(shape, 250.0)
    raise KeyError(f"no value rule for weight {short!r}")


def _randomize(model, seed_layer, rng):
    for layer in model.layers:
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if layer is seed_layer:
                v = _value_for(_short_name(w, layer), shape, rng)
            elif len(shape) > 1:  # kernels
                v = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
            else:  # biases
                v = rng.normal(0.1, 0.2, shape)
            values.append(np.asarray(v, dtype="float32"))
        if values:
            layer.set_weights(values)


def _strip_new_keys(obj):
    """Drop the serialization keys that Keras 2.1-2.3 and tf.keras 2.1 never wrote."""
    if isinstance(obj, dict):
        if "class_name" in obj:
            for key in ("module", "registered_name", "build_config", "compile_config"):
                obj.pop(key, None)
        for value in obj.values():
            _strip_new_keys(value)
    elif isinstance(obj, list):
        for value in obj:
            _strip_new_keys(value)


def _age_file(path, keras_version):
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        _strip_new_keys(config)
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
        f.attrs["keras_version"] = keras_version.encode("utf-8")
        f.attrs["backend"] = b"tensorflow"


def _read_back(path, layer_name):
    """(weight_names, layer config) of one layer, as the file holds them."""
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f["model_weights"][layer_name].attrs["weight_names"]]
        config = json.loads(f.attrs["model_config"])
    for entry in config["config"]["layers"]:
        if entry["config"].get("name", entry.get("name")) == layer_name:
            return names, entry["config"]
    raise KeyError(layer_name)


def _finish(seed, folder, file_name, model, layer, x, kwargs, keras_version, notes,
            alternatives=None):
    tf_keras, _ = _deps()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    outputs = model(x, training=False).numpy()
    probe = tf_keras.Model(model.inputs, [layer.input, layer.output])
    layer_in, layer_out = (t.numpy() for t in probe(x, training=False))
    weights = {_short_name(w, layer): w.numpy() for w in layer.weights}
    with warnings.catch_warnings():  # tf_keras: "HDF5 ... is considered legacy"
        warnings.simplefilter("ignore", UserWarning)
        model.save(path)  # ".h5": tf_keras's legacy HDF5 writer
    if keras_version:
        _age_file(path, keras_version)
    names, config = _read_back(path, layer.name)
    alternatives = {k: np.asarray(v, dtype="float32") for k, v in (alternatives or {}).items()}
    return SeedFile(seed=seed, path=path, class_name=type(layer).__name__,
                    layer_name=layer.name, layer_kwargs=dict(kwargs), x=x, outputs=outputs,
                    layer_inputs=layer_in, layer_outputs=layer_out, weights=weights,
                    weight_names=names, config=config, alternatives=alternatives,
                    notes=notes)


def _suffix(kind, channels_first):
    return kind + ("_cf" if channels_first else "")


# --- one function per seed ------------------------------------------------------------------


def make_switchnorm(folder, *, kind="conv2d", channels_first=False, seed=0,
                    keras_version=KERAS2, **layer_kwargs):
    """titu1994/keras-switchnorm `SwitchNormalization` (axis 1 when channels_first).

    `layer_kwargs` go to the layer (e.g. epsilon=1e-5, momentum=0.98). Rank-2 inference is
    fine (instance branch = x itself, zero variance)."""
    rng = np.random.default_rng(seed)
    tf_keras, S = _deps()
    kwargs = {"axis": 1 if channels_first else -1, **layer_kwargs}
    inputs, h, x = _trunk(kind, channels_first, 8 if kind == "conv2d" else 16, rng)
    layer = S.SwitchNormalization(name="switch_normalization_1", **kwargs)
    model = tf_keras.Model(inputs, _head(layer(h), kind, channels_first))
    _randomize(model, layer, rng)
    notes = ("Weights in the file: gamma, beta, mean_weights, variance_weights (trainable), "
             "moving_mean, moving_variance. Softmax index 0/1/2 = instance/layer/batch.")
    return _finish("switchnorm", folder, f"seed_switchnorm_{_suffix(kind, channels_first)}.h5",
                   model, layer, x, kwargs, keras_version, notes)


def make_batchrenorm(folder, *, kind="conv2d", seed=0, keras_version=KERAS2, **layer_kwargs):
    """titu1994/BatchRenormalization `BatchRenormalization` (axis -1 only: the seed raises
    otherwise). `outputs` is the training=False output - batch statistics, r = 1, d = 0 as
    in any process that loads the file. alternatives["learning_phase_0"] is the output
    standalone Keras 2's predict gave (running statistics, running_std + eps);
    alternatives["training_false_in_session"] is training=False in the session that trained
    the model (schedule relaxed to r_max_value, d_max_value): equal to "learning_phase_0"
    wherever r and d are not clipped."""
    rng = np.random.default_rng(seed)
    tf_keras, S = _deps()
    kwargs = dict(layer_kwargs)
    inputs, h, x = _trunk(kind, False, 8 if kind == "conv2d" else 16, rng)
    layer = S.BatchRenormalization(name="batch_renormalization_1", **kwargs)
    model = tf_keras.Model(inputs, _head(layer(h), kind, False))
    _randomize(model, layer, rng)
    running = model(x).numpy()  # training=None -> learning phase 0 -> running statistics
    schedule = layer._schedule  # as in the training session, after the schedule has relaxed
    schedule["r_max"].assign(layer.r_max_value)
    schedule["d_max"].assign(layer.d_max_value)
    relaxed = model(x, training=False).numpy()
    schedule["r_max"].assign(1.0)
    schedule["d_max"].assign(0.0)
    notes = ("training=False returns batch-statistics output (running statistics unused "
             "after a reload: r_max=1, d_max=0 are not saved). Weight names carry the layer "
             "name twice: <layer>/<layer>_gamma:0. running_std holds a variance (+eps).")
    return _finish("batchrenorm", folder, f"seed_batchrenorm_{kind}.h5", model, layer, x,
                   kwargs, keras_version, notes,
                   {"learning_phase_0": running, "training_false_in_session": relaxed})


def make_frn(folder, *, seed=0, keras_version=KERAS2, **layer_kwargs):
    """philipperemy/keras-frn `FRN` after a Conv2D, no ReLU (its TLU is the activation).
    Rank 4 channels-last only: the seed's mean over axes 1, 2 is hard-coded (rank 2 fails,
    rank 3 silently reduces over channels)."""
    rng = np.random.default_rng(seed)
    tf_keras, S = _deps()
    kwargs = dict(layer_kwargs)
    inputs, h, x = _trunk("conv2d", False, 8, rng)
    layer = S.FRN(name="frn_1", **kwargs)
    model = tf_keras.Model(inputs, _head(layer(h), "conv2d", False, relu=False))
    _randomize(model, layer, rng)
    notes = ("Config has 'axis' and 'tau_initializer', which FRN.__init__ rejects (it takes "
             "'tau_initializers'): even tf_keras with custom_objects cannot reload it.")
    return _finish("frn", folder, "seed_frn_conv2d.h5", model, layer, x, kwargs,
                   keras_version, notes)


def _true_groupnorm_outputs(model, layer, x, groups, axis, epsilon):
    """The model's output if the seed layer were a correct GroupNorm with the same
    gamma/beta: what Keras 3's GroupNormalization computes after a silent load."""
    tf_keras, _ = _deps()
    clone = tf_keras.models.clone_model(
        model, clone_function=lambda lyr: (
            tf_keras.layers.GroupNormalization(groups=groups, axis=axis, epsilon=epsilon,
                                               name=lyr.name)
            if lyr is layer else lyr.__class__.from_config(lyr.get_config())))
    for source, target in zip(model.layers, clone.layers):
        target.set_weights(source.get_weights())
    return clone(x, training=False).numpy()


def _make_groupnorm(seed_name, class_attr, folder, kind, channels_first, groups, seed,
                    keras_version, layer_kwargs, notes):
    rng = np.random.default_rng(seed)
    tf_keras, S = _deps()
    cls = getattr(S, class_attr)
    kwargs = {"groups": groups, "axis": 1 if channels_first else -1, **layer_kwargs}
    inputs, h, x = _trunk(kind, channels_first, 8 if kind == "conv2d" else 16, rng)
    layer = cls(name="group_normalization_1", **kwargs)
    model = tf_keras.Model(inputs, _head(layer(h), kind, channels_first))
    _randomize(model, layer, rng)
    true = _true_groupnorm_outputs(model, layer, x, groups, kwargs["axis"],
                                   kwargs.get("epsilon", 1e-5))
    return _finish(seed_name, folder, f"seed_{seed_name}_{_suffix(kind, channels_first)}.h5",
                   model, layer, x, kwargs, keras_version, notes, {"true_groupnorm": true})


def make_groupnorm_titu1994(folder, *, kind="conv2d", channels_first=False, groups=4, seed=0,
                            keras_version=KERAS2, **layer_kwargs):
    """titu1994/Keras-Group-Normalization `GroupNormalization` (the WS study's layer).
    Conv: 8x8x8 maps, 4 groups - each "group" is 2 image rows with all 8 channels.
    alternatives["true_groupnorm"]: what Keras 3's GroupNormalization computes with the
    same weights (the silent load). Correct GN (alternatives equal outputs) for
    kind='dense' and for channels_first."""
    notes = ("Saved as 'GroupNormalization' with exactly Keras 3 GroupNormalization's config "
             "keys: Keras 3 loads it silently as its own layer. Indistinguishable in the file "
             "from keras-contrib's GroupNormalization.")
    return _make_groupnorm("groupnorm_titu1994", "TituGroupNormalization", folder, kind,
                           channels_first, groups, seed, keras_version, layer_kwargs, notes)


def make_groupnorm_contrib(folder, *, kind="conv2d", channels_first=False, groups=4, seed=0,
                           keras_version=KERAS2, **layer_kwargs):
    """keras-contrib `GroupNormalization`: titu1994's row-run statistics for channels-last
    rank >= 3, plus gamma/beta applied in the grouped layout (to the wrong channels).
    Correct GN for kind='dense' and channels_first."""
    notes = ("Same class name, config keys and weights as titu1994's GroupNormalization; "
             "differs from it only in how gamma/beta are applied for channels-last conv input.")
    return _make_groupnorm("groupnorm_contrib", "ContribGroupNormalization", folder, kind,
                           channels_first, groups, seed, keras_version, layer_kwargs, notes)


def make_instancenorm_contrib(folder, *, kind="conv2d", channels_first=False, axis="channels",
                              seed=0, keras_version=KERAS2, **layer_kwargs):
    """keras-contrib `InstanceNormalization`. axis="channels" (default) normalizes per
    channel (axis -1, or 1 with channels_first); axis=None is the seed's own default: one
    mean/std over all non-batch axes and scalar gamma/beta of shape (1,). kind='dense'
    requires axis=None (the seed rejects an axis for rank 2)."""
    rng = np.random.default_rng(seed)
    tf_keras, S = _deps()
    if axis == "channels":
        axis = 1 if channels_first else -1
    kwargs = {"axis": axis, **layer_kwargs}
    inputs, h, x = _trunk(kind, channels_first, 8 if kind == "conv2d" else 16, rng)
    layer = S.ContribInstanceNormalization(name="instance_normalization_1", **kwargs)
    model = tf_keras.Model(inputs, _head(layer(h), kind, channels_first))
    _randomize(model, layer, rng)
    tag = _suffix(kind, channels_first) + ("_axisnone" if axis is None else "")
    notes = "y = gamma (x - mean) / (std + eps) + beta: eps on the std, default eps 1e-3."
    return _finish("instancenorm_contrib", folder, f"seed_instancenorm_contrib_{tag}.h5", model,
                   layer, x, kwargs, keras_version, notes)


def make_bln(folder, *, kind="conv2d", batch_moving_mean=True, batch_moving_var=True,
             feature_moving_mean=False, feature_moving_var=False, seed=0,
             keras_version=TF_KERAS_2_1):
    """A2Amir/Batch-Layer-Normalization `bln_layer` (stateful=True, batchsize=BATCH, the
    README's usage). The four flags choose, per statistic, moving weight or current input;
    the defaults are the constructor's (moving batch statistics, input feature
    statistics). With a feature flag set, the model only runs on batches of exactly
    BATCH rows (or 1, broadcasting)."""
    rng = np.random.default_rng(seed)
    tf_keras, S = _deps()
    kwargs = {"stateful": True, "batchsize": BATCH, "batch_moving_mean": batch_moving_mean,
              "batch_moving_var": batch_moving_var, "feature_moving_mean": feature_moving_mean,
              "feature_moving_var": feature_moving_var}
    inputs, h, x = _trunk(kind, False, 8 if kind == "conv2d" else 16, rng)
    layer = S.bln_layer(name="bn1", **kwargs)
    model = tf_keras.Model(inputs, _head(layer(h), kind, False))
    _randomize(model, layer, rng)
    flags = "".join("T" if f else "F" for f in (batch_moving_mean, batch_moving_var,
                                                 feature_moving_mean, feature_moving_var))
    notes = ("Config key 'self.batchsize' (not 'batchsize'); constructor needs stateful and "
             "batchsize. The offset eps=0.001 is the weight 'Variable', not a config entry. "
             "Batch statistics are per position (1, H, W, C); output divided by sqrt(C).")
    return _finish("bln", folder, f"seed_bln_{kind}_{flags}.h5", model, layer, x, kwargs,
                   keras_version, notes)


def make_all(folder, *, keras_version="default"):
    """Every variant above, by name. keras_version="default" keeps each seed's own."""
    age = {} if keras_version == "default" else {"keras_version": keras_version}
    files = {
        "switchnorm_conv2d": make_switchnorm(folder, **age),
        "switchnorm_dense": make_switchnorm(folder, kind="dense", **age),
        "switchnorm_conv2d_cf": make_switchnorm(folder, channels_first=True, **age),
        "batchrenorm_conv2d": make_batchrenorm(folder, **age),
        "batchrenorm_dense": make_batchrenorm(folder, kind="dense", **age),
        "frn_conv2d": make_frn(folder, **age),
        "groupnorm_titu1994_conv2d": make_groupnorm_titu1994(folder, **age),
        "groupnorm_titu1994_dense": make_groupnorm_titu1994(folder, kind="dense", **age),
        "groupnorm_titu1994_conv2d_cf": make_groupnorm_titu1994(folder, channels_first=True,
                                                                **age),
        "groupnorm_contrib_conv2d": make_groupnorm_contrib(folder, **age),
        "groupnorm_contrib_dense": make_groupnorm_contrib(folder, kind="dense", **age),
        "instancenorm_contrib_conv2d": make_instancenorm_contrib(folder, **age),
        "instancenorm_contrib_conv2d_axisnone": make_instancenorm_contrib(folder, axis=None,
                                                                          **age),
        "instancenorm_contrib_dense_axisnone": make_instancenorm_contrib(folder, kind="dense",
                                                                         axis=None, **age),
        "bln_conv2d": make_bln(folder, **age),
        "bln_dense": make_bln(folder, kind="dense", **age),
        "bln_conv2d_all_moving": make_bln(folder, feature_moving_mean=True,
                                          feature_moving_var=True, **age),
        "bln_conv2d_no_moving": make_bln(folder, batch_moving_mean=False,  # the README's
                                         batch_moving_var=False, **age),
    }
    return files


# --- the subprocess route ---------------------------------------------------------------------

_ARRAYS = ("x", "outputs", "layer_inputs", "layer_outputs")
MANIFEST = "seed_files.json"
ARRAYS = "seed_files.npz"


def write_all(folder, *, keras_version="default"):
    """`make_all(folder)`, plus a manifest (seed_files.json) and the arrays (seed_files.npz)
    that `read_written` turns back into the same SeedFiles. Returns make_all's dict."""
    folder = Path(folder)
    files = make_all(folder, keras_version=keras_version)
    manifest, arrays = {}, {}
    for name, f in files.items():
        manifest[name] = {
            "seed": f.seed, "file": f.path.name, "class_name": f.class_name,
            "layer_name": f.layer_name, "layer_kwargs": f.layer_kwargs,
            "weight_names": f.weight_names, "config": f.config, "notes": f.notes,
            "weights": list(f.weights), "alternatives": list(f.alternatives),
        }
        for key in _ARRAYS:
            arrays[f"{name}__{key}"] = getattr(f, key)
        for key, value in f.weights.items():
            arrays[f"{name}__weight__{key}"] = value
        for key, value in f.alternatives.items():
            arrays[f"{name}__alternative__{key}"] = value
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    np.savez(folder / ARRAYS, **arrays)
    return files


def read_written(folder):
    """The SeedFiles `write_all` (or `python make_files.py folder`) wrote, without tf_keras."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    out = {}
    with np.load(folder / ARRAYS, allow_pickle=False) as data:
        for name, m in manifest.items():
            out[name] = SeedFile(
                seed=m["seed"], path=folder / m["file"], class_name=m["class_name"],
                layer_name=m["layer_name"], layer_kwargs=m["layer_kwargs"],
                **{key: data[f"{name}__{key}"] for key in _ARRAYS},
                weights={k: data[f"{name}__weight__{k}"] for k in m["weights"]},
                weight_names=m["weight_names"], config=m["config"],
                alternatives={k: data[f"{name}__alternative__{k}"] for k in m["alternatives"]},
                notes=m["notes"])
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/seeds/make_files.py OUT_DIR")
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    written = write_all(sys.argv[1])
    print(f"wrote {len(written)} seed files to {sys.argv[1]}")
