"""Model files written by Keras 2 (tf_keras 2.21, see keras2_writer.py): each loads with
normswap.saving.load_model, computes what tf_keras computed on the same file, and converts.

The writer runs in its own process (conftest.py). tf_keras and Keras 3 can share one
process (both import; a file written by one loads in the other), but tf_keras keeps global
state (its dtype policy, layer-name counters, TensorFlow's graph) that other tests should
not see, and a separate writer is how users' files were made: by a Keras 2 program.
"""

import contextlib
import hashlib
import json
import logging
import re

import h5py
import numpy as np
import pytest

import normswap
from normswap.errors import InputFileError
from normswap.saving import legacy, load_model
from tests.saving.custom_layers import ScaleShift

# name: the fixes the loader must apply (empty: Keras 3 loads the file as it is).
FILES = {
    "sequential": set(),
    "functional": set(),
    "functional_nested_sequential": {"nested-node-index"},
    "shared_nested_sequential": {"nested-node-index"},
    "sequential_nested_functional": {"bn-axis-list", "nested-single-io"},
    "functional_mobilenetv2": {"nested-node-index", "nested-single-io", "conv-groups"},
    "sequential_mobilenetv2": {"bn-axis-list", "nested-single-io", "conv-groups"},
    "channels_first": set(),
    "mixed_float16": {"dtype-policy"},
    "custom_layer": set(),
}

# How far Keras 3 may be from tf_keras, relative to the output's scale. float32 round-off;
# more through MobileNetV2's 52 BatchNormalizations (Keras 3 alone differs from itself by
# up to 6e-6 of the scale between model.predict and model(x) there); float16 round-off
# (eps 9.8e-4) for the mixed-precision model.
TOLERANCE = {"functional_mobilenetv2": 1e-4, "sequential_mobilenetv2": 1e-4,
             "mixed_float16": 4e-3}
DEFAULT_TOLERANCE = 1e-5


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def expected(keras2_files):
    with np.load(keras2_files / "expected.npz") as data:
        return dict(data)


def inputs(expected, name):
    arrays = [expected[f"{name}__x{i}"] for i in range(2) if f"{name}__x{i}" in expected]
    return arrays[0] if len(arrays) == 1 else arrays


@pytest.fixture(scope="module")
def loaded(keras2_files):
    """`loaded(name)`: (model, names of the fixes applied), loaded once per module."""
    cache = {}

    def load(name):
        if name not in cache:
            objects = {"ScaleShift": ScaleShift} if name == "custom_layer" else None
            with fixes_logged() as fixes:
                model = load_model(keras2_files / f"{name}.h5", custom_objects=objects)
            cache[name] = model, fixes
        return cache[name]

    return load


@contextlib.contextmanager
def fixes_logged():
    """The set of fix names in the loader's "applied <fix>, <fix> to N layer(s)" messages
    logged inside the block."""
    fixes, logger = set(), logging.getLogger("normswap")

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if " applied " in message:
                fixes.update(message.split(" applied ")[1].split(" to ")[0].split(", "))

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield fixes
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def assert_close_to_scale(actual, reference, tolerance, what):
    scale = max(float(np.abs(reference).max()), 1e-6)
    deviation = float(np.abs(np.asarray(actual, "float64") - reference).max())
    assert deviation <= tolerance * scale, (
        f"{what}: differs from tf_keras by {deviation:.3g} ({deviation / scale:.2e} of the "
        f"output scale {scale:.3g}, tolerance {tolerance:g})")


@pytest.mark.parametrize("name", FILES)
def test_loads_and_computes_what_tf_keras_computed(name, loaded, expected, keras2_files):
    path = keras2_files / f"{name}.h5"
    before = digest(path)
    model, fixes = loaded(name)
    assert fixes == FILES[name]
    x = inputs(expected, name)
    y = model.predict(x, verbose=0)
    y = y[0] if isinstance(y, list) else y
    assert y.shape == expected[f"{name}__y"].shape
    assert_close_to_scale(y, expected[f"{name}__y"], TOLERANCE.get(name, DEFAULT_TOLERANCE), name)
    assert digest(path) == before


@pytest.mark.parametrize("name, error", [
    ("functional_nested_sequential", "The following nodes failed to be resolved"),
    ("functional_mobilenetv2", r"DepthwiseConv2D: \{'groups': 1\}"),
    ("sequential_mobilenetv2", "BatchNormalization' using config"),
])
def test_plain_keras_rejects_the_three_fine_tuning_shapes(name, error, keras2_files):
    # Why the fixers exist; if a future Keras 3 reads these files, they are moot.
    import keras

    with pytest.raises(Exception, match=error):
        keras.models.load_model(keras2_files / f"{name}.h5", compile=False)


@pytest.mark.parametrize("name, fix, error", [
    ("sequential_nested_functional", "nested-single-io", r"expects 1 input\(s\)"),
    ("sequential_nested_functional", "bn-axis-list", r"int\(\) argument"),
    ("functional_nested_sequential", "nested-node-index", "failed to be resolved"),
    ("mixed_float16", "dtype-policy", "quantization_mode"),
])
def test_each_fix_is_needed(name, fix, error, keras2_files):
    """With every other fix applied but not `fix`, the file fails with the error `fix`
    documents."""
    from normswap.saving.load_errors import error_text
    from normswap.saving.loading import _load_h5_with_config

    path = keras2_files / f"{name}.h5"
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    others = [f for f in legacy.registered_fixes() if f.name != fix]
    without, _ = legacy.apply_fixes(config, others)
    with pytest.raises(Exception) as caught:
        _load_h5_with_config(path, without, None, True)
    assert re.search(error, error_text(caught.value)), error_text(caught.value)[-500:]


def test_custom_layer_needs_its_class(keras2_files):
    with pytest.raises(InputFileError, match=r"'ScaleShift'.*--custom-objects"):
        load_model(keras2_files / "custom_layer.h5")


def test_custom_layer_carries_its_config_and_weights(loaded, keras2_files):
    model, _ = loaded("custom_layer")
    layer = model.get_layer("scale_shift")
    assert isinstance(layer, ScaleShift) and layer.offset == 0.25
    with h5py.File(keras2_files / "custom_layer.h5", "r") as f:
        group = f["model_weights"]["scale_shift"]["scale_shift"]
        np.testing.assert_array_equal(layer.scale.numpy(), group["scale:0"][()])


def test_mixed_precision_policy_survives(loaded):
    model, _ = loaded("mixed_float16")
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["b1_conv"] == policies["b1_bn"] == "mixed_float16"
    assert policies["logits"] == "float32"
    assert model.get_layer("b1_conv").kernel.dtype == "float32"


def test_frozen_layers_stay_frozen(loaded):
    model, _ = loaded("functional_mobilenetv2")
    backbone = model.layers[1]
    assert not backbone.trainable and not backbone.trainable_weights
    model, _ = loaded("sequential_mobilenetv2")
    backbone = model.layers[0]
    flags = [layer.trainable for layer in backbone.layers]
    assert not any(flags[1:30]) and all(flags[30:])  # layers[0]: the InputLayer


def test_nested_models_give_single_tensors(loaded):
    model, _ = loaded("sequential_mobilenetv2")
    backbone = model.layers[0]
    assert not isinstance(backbone.output, (list, tuple))


@pytest.mark.parametrize("name", FILES)
def test_fold_passes_its_own_verification(name, loaded):
    model, _ = loaded(name)
    normswap.convert(model, "fold")  # raises VerificationError unless it reproduces the model


@pytest.mark.parametrize("name", FILES)
def test_groupnorm_gives_finite_outputs(name, loaded, expected):
    model, _ = loaded(name)
    result = normswap.convert(model, "groupnorm")
    y = result.model.predict(inputs(expected, name), verbose=0)
    for array in (y if isinstance(y, list) else [y]):
        assert np.all(np.isfinite(array))
