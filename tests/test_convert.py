"""Conversions against the original model's outputs."""

import keras
import numpy as np
import pytest

import normswap
from normswap.targets import all_targets
from normswap.verify import outputs_of, probe_batch
from tests.checks import gap, relative_gap
from tests.models import (
    affine_free_model,
    channels_first_model,
    count_bn,
    multi_io_model,
    nested_model,
    randomize_bn,
    raw_ops_model,
    shared_bn_model,
    small_cnn,
)

EXACT = ["fold", "frozenbn", "batchrenorm"]
INEXACT = ["groupnorm", "layernorm", "instancenorm"]
APPLICATIONS = {
    "ResNet50": (32, 32, 3),
    "MobileNetV2": (32, 32, 3),
    "EfficientNetB0": (32, 32, 3),
    "DenseNet121": (32, 32, 3),
}


@pytest.fixture(scope="module", params=sorted(APPLICATIONS))
def application(request):
    builder = getattr(keras.applications, request.param)
    model = builder(weights=None, input_shape=APPLICATIONS[request.param], classes=10)
    return randomize_bn(model, seed=1)


@pytest.mark.parametrize("target", EXACT)
def test_exact_targets_reproduce_applications(application, target):
    batch = probe_batch(application, seed=7)
    before = [w.copy() for w in application.get_weights()]
    result = normswap.convert(application, target)
    assert relative_gap(application, result.model, batch) <= 1e-4
    if target != "batchrenorm":
        assert count_bn(result.model) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, application.get_weights()))


def test_inexact_target_on_application_is_finite_and_reported(application):
    result = normswap.convert(application, "groupnorm")
    assert count_bn(result.model) == 0
    assert np.all(np.isfinite(outputs_of(result.model, probe_batch(application))[0]))
    assert result.report.fidelity.max_abs > 0 and not result.report.exact


@pytest.mark.parametrize("target", EXACT + INEXACT)
def test_every_target_on_small_cnn(target):
    model = small_cnn()
    result = normswap.convert(model, target)
    batch = probe_batch(model, seed=3)
    gap = relative_gap(model, result.model, batch)
    if target in EXACT:
        assert gap <= 1e-4
    else:
        assert np.isfinite(gap) and gap > 1e-3  # moved, and the report says by how much
        assert result.report.fidelity.relative > 1e-3


def test_names_weights_dtype_and_trainable_of_kept_layers():
    model = small_cnn()
    model.get_layer("b1_conv").trainable = False
    new = normswap.swap(model, "groupnorm")
    for layer in model.layers:
        clone = new.get_layer(layer.name)
        assert clone is not layer
        assert clone.trainable == layer.trainable
        assert clone.dtype_policy.name == layer.dtype_policy.name
        if not isinstance(layer, keras.layers.BatchNormalization):
            for a, b in zip(layer.get_weights(), clone.get_weights()):
                np.testing.assert_array_equal(a, b)
    assert isinstance(new.get_layer("b1_bn"), keras.layers.GroupNormalization)


def test_new_model_trains_without_touching_the_original():
    model = small_cnn()
    before = [w.copy() for w in model.get_weights()]
    new = normswap.swap(model, "frozenbn")
    new.compile("sgd", "mse")
    new.fit(np.ones((4, 12, 12, 3)), np.ones((4, 5)), epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("target", EXACT + ["groupnorm"])
def test_nested_models_are_walked(target):
    model = randomize_bn(nested_model(), seed=4)
    assert count_bn(model) == 3
    result = normswap.convert(model, target)
    if target != "batchrenorm":
        assert count_bn(result.model) == 0
    assert {s.site.name for s in result.report.sites} >= {"inner/b1_bn", "inner/post_add_bn"}
    assert isinstance(result.model, keras.Sequential)
    if target in EXACT:
        assert relative_gap(model, result.model, probe_batch(model)) <= 1e-4


def test_shared_bn_becomes_one_shared_replacement():
    model = shared_bn_model()
    result = normswap.convert(model, "frozenbn")
    (site,) = result.report.sites
    assert site.site.calls == 2
    replacements = [layer for layer in result.model.layers
                    if isinstance(layer, normswap.ChannelAffine)]
    assert len(replacements) == 1 and len(replacements[0]._inbound_nodes) == 2
    assert relative_gap(model, result.model, probe_batch(model)) <= 1e-4
    fold = normswap.convert(model, "fold").report.sites[0]
    assert fold.action == "fallback" and "shared" in fold.reason


def test_multi_input_multi_output():
    model = multi_io_model()
    result = normswap.convert(model, "groupnorm")
    assert len(result.model.outputs) == 2 and len(result.model.inputs) == 2
    assert count_bn(result.model) == 0


def test_channels_first():
    model = channels_first_model()
    for target in ("fold", "frozenbn", "batchrenorm"):
        result = normswap.convert(model, target)
        assert relative_gap(model, result.model, probe_batch(model)) <= 1e-4, target
    new = normswap.swap(model, "groupnorm", groups=2)
    assert new.get_layer("bn").axis == 1


def test_center_and_scale_false():
    model = affine_free_model()
    for target in EXACT:
        result = normswap.convert(model, target)
        assert relative_gap(model, result.model, probe_batch(model)) <= 1e-4, target
    report = normswap.convert(model, "groupnorm", groups=2).report
    carried = {s.site.layer.name: s.carried for s in report.sites}
    assert carried == {"no_center": ["gamma"], "no_scale": ["beta"], "neither": []}


def test_mixed_precision_replacements_keep_the_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_cnn("mixed")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for target in ("frozenbn", "groupnorm", "batchrenorm"):
        new = normswap.swap(model, target)
        layer = new.get_layer("b1_bn")
        assert layer.dtype_policy.name == "mixed_float16", target
        assert layer.variable_dtype == "float32"
        out = outputs_of(new, probe_batch(model))[0]
        assert np.all(np.isfinite(out))
    gap = relative_gap(model, normswap.swap(model, "frozenbn"), probe_batch(model))
    assert gap <= 5e-3  # float16 activations: round-off of half precision


def test_nothing_to_convert_and_bad_arguments():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(normswap.NormswapError, match="No BatchNormalization"):
        normswap.convert(plain, "frozenbn")
    with pytest.raises(normswap.UsageError, match="Did you mean 'groupnorm'"):
        normswap.convert(small_cnn(), "gropunorm")
    with pytest.raises(normswap.UsageError, match="Unknown option"):
        normswap.convert(small_cnn(), "groupnorm", grups=2)
    with pytest.raises(normswap.UsageError, match="cannot reproduce"):
        normswap.convert(small_cnn(), "groupnorm", exact=True)


def test_subclassed_models_are_refused_by_name():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    net = Net()
    net(np.zeros((1, 3)))
    with pytest.raises(normswap.NormswapError, match="Net"):
        normswap.convert(net, "frozenbn")


def test_call_keyword_arguments_are_filtered():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(name="bn")(inputs, training=False)
    model = randomize_bn(keras.Model(inputs, x))
    new = normswap.swap(model, "groupnorm", groups=1)
    assert isinstance(new.get_layer("bn"), keras.layers.GroupNormalization)


@pytest.fixture(scope="module")
def resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    return randomize_bn(model, seed=11)


@pytest.mark.parametrize("target", ["switchnorm", "batchrenorm"])
def test_exact_resnet50_conversions(resnet50, target):
    result = normswap.convert(resnet50, target, exact=True)
    assert result.report.exact and count_bn(result.model) == 0
    assert gap(resnet50, result.model) <= 1e-4


def test_converted_models_with_every_bundled_layer_save_and_load(tmp_path):
    model = small_cnn()
    x = probe_batch(model)[0]
    for target in ("switchnorm", "batchrenorm", "bln", "frn", "evonorm", "frozenbn"):
        new = normswap.swap(model, target, ws=target in ("frn", "evonorm"))
        path = tmp_path / f"{target}.keras"
        new.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(x), new(x), rtol=1e-5, atol=1e-6, err_msg=target)


@pytest.fixture(scope="module", params=["MobileNetV3Small", "MobileNetV3Large"])
def mobilenet_v3(request):
    """keras.applications MobileNetV3: raw keras.ops nodes (the hard-swish's x + 3.0, ...)
    between its layers."""
    builder = getattr(keras.applications, request.param)
    return randomize_bn(builder(weights=None, input_shape=(32, 32, 3), classes=10), seed=2)


@pytest.mark.parametrize("target", sorted(normswap.all_targets()))
def test_mobilenet_v3_converts_under_every_target(mobilenet_v3, target):
    result = normswap.convert(mobilenet_v3, target)  # exact ones verify themselves
    assert count_bn(result.model) == 0 or target == "batchrenorm"
    out = outputs_of(result.model, probe_batch(mobilenet_v3, seed=4))[0]
    assert np.all(np.isfinite(out))
    if all_targets()[target].exact:
        assert result.report.exact
        assert relative_gap(mobilenet_v3, result.model, probe_batch(mobilenet_v3, seed=4)) <= 1e-4


@pytest.mark.parametrize("target", sorted(normswap.all_targets()))
def test_raw_operations_before_between_and_after_sites(target, tmp_path):
    model = raw_ops_model()
    result = normswap.convert(model, target)
    batch = probe_batch(model, seed=5)
    if result.report.exact:
        assert relative_gap(model, result.model, batch) <= 1e-4
    assert np.all(np.isfinite(outputs_of(result.model, batch)[0]))
    path = normswap.save_model(result.model, tmp_path / "out.keras")
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(outputs_of(reloaded, batch)[0], outputs_of(result.model, batch)[0],
                               rtol=1e-5, atol=1e-6)
