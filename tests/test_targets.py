"""The bundled-layer targets: what each carries, what it removes, what exact means."""

import keras
import numpy as np
import pytest

import normswap
from normswap.layers import (
    FRN,
    BatchLayerNormalization,
    BatchRenormalization,
    EvoNormS0,
    SwitchNormalization,
    WSConv2D,
)
from normswap.verify import outputs_of, probe_batch
from tests.models import count_bn, randomize_bn, small_cnn


def gap(old, new, seed=3):
    batch = probe_batch(old, seed=seed)
    a, b = outputs_of(old, batch)[0], outputs_of(new, batch)[0]
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


@pytest.fixture(scope="module")
def resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    return randomize_bn(model, seed=11)


@pytest.mark.parametrize("target", ["switchnorm", "batchrenorm"])
def test_exact_resnet50_conversions(resnet50, target):
    result = normswap.convert(resnet50, target, exact=True)
    assert result.report.exact and count_bn(result.model) == 0
    assert gap(resnet50, result.model) <= 1e-4


def test_layer_classes_select_their_targets():
    model = small_cnn()
    classes = (FRN, SwitchNormalization, BatchRenormalization, BatchLayerNormalization, EvoNormS0,
               keras.layers.GroupNormalization, keras.layers.LayerNormalization)
    for layer_class in classes:
        result = normswap.convert(model, layer_class)
        assert result.report.swapped, layer_class
    assert normswap.FRN is normswap.layers.FilterResponseNormalization
    assert isinstance(normswap.swap(model, FRN).get_layer("b1_bn"), FRN)


def test_frn_replaces_the_following_relu_with_its_tlu():
    model = small_cnn()
    new = normswap.swap(model, "frn")
    names = {layer.name for layer in new.layers}
    assert "b1_relu" not in names and "b2_relu" not in names
    assert new.get_layer("b1_bn").use_tlu
    assert not new.get_layer("post_add_bn").use_tlu  # no ReLU after it: TLU off
    sites = {s.site.layer.name: s for s in normswap.convert(model, "frn").report.sites}
    assert "TLU replaces ReLU 'b1_relu'" in sites["b1_bn"].notes
    assert "TLU off" in sites["post_add_bn"].notes[-1]
    assert sites["fc_bn"].action == "fallback" and sites["fc_bn"].new_class == "LayerNormalization"


def test_frn_folds_the_bn_affine_into_its_conv():
    model = small_cnn()
    new = normswap.swap(model, "frn")
    frn = new.get_layer("b1_bn")
    np.testing.assert_array_equal(frn.gamma.numpy(), np.ones(8))
    x = probe_batch(model)[0]
    bn_out = model.get_layer("b1_bn")(model.get_layer("b1_conv")(x), training=False)
    np.testing.assert_allclose(new.get_layer("b1_conv")(x), bn_out, rtol=1e-4, atol=1e-5)
    # Where the BN cannot fold (after an Add), γ and β are copied instead.
    np.testing.assert_allclose(new.get_layer("post_add_bn").gamma.numpy(),
                               model.get_layer("post_add_bn").gamma.numpy())


def test_switchnorm_switch_initialisations():
    model = small_cnn()
    uniform = normswap.convert(model, "switchnorm", switch_init="uniform")
    favoured = normswap.convert(model, "switchnorm")
    exact = normswap.convert(model, "switchnorm", switch_init="exact")
    layer = uniform.model.get_layer("b1_bn")
    np.testing.assert_allclose(layer.mean_weights.numpy(), [0, 0, 0])
    assert favoured.report.sites[0].params["bn_weight"] == pytest.approx(0.9867, abs=1e-4)
    assert exact.report.exact and not favoured.report.exact and not uniform.report.exact
    assert gap(model, exact.model) <= 1e-4
    assert gap(model, favoured.model) < gap(model, uniform.model)
    sn = exact.model.get_layer("b1_bn")
    np.testing.assert_array_equal(sn.moving_mean.numpy(),
                                  model.get_layer("b1_bn").moving_mean.numpy())
    with pytest.raises(normswap.UsageError, match="switch_init"):
        normswap.convert(model, "switchnorm", switch_init="uniform", exact=True)
    with pytest.raises(normswap.UsageError, match="switch_init must be"):
        normswap.convert(model, "switchnorm", switch_init="bogus")


def test_bln_is_exact_at_inference_and_trains():
    model = small_cnn()
    result = normswap.convert(model, "bln", exact=True)
    assert result.report.exact and gap(model, result.model) <= 1e-4
    new = result.model
    new.compile("sgd", "mse")
    new.fit(np.random.default_rng(0).normal(size=(8, 12, 12, 3)), np.zeros((8, 5)), verbose=0)
    assert float(new.get_layer("b1_bn").moving_inverse_batch_size.numpy()) > 0


def test_evonorm_reports_the_group_count_it_used():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(24, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = randomize_bn(keras.Model(inputs, x))
    site = normswap.convert(model, "evonorm", groups=16).report.sites[0]
    assert site.params["groups"] == 12 and any("used 12" in note for note in site.notes)
    assert normswap.convert(model, "evonorm").report.sites[0].params["groups"] == 1


def test_ws_makes_producers_weight_standardized_with_the_same_kernel():
    model = small_cnn()
    result = normswap.convert(model, "groupnorm", ws=True)
    conv = result.model.get_layer("b1_conv")
    assert isinstance(conv, WSConv2D)
    np.testing.assert_array_equal(conv.kernel.numpy(), model.get_layer("b1_conv").kernel.numpy())
    assert not result.report.exact
    sites = {s.site.layer.name: s for s in result.report.sites}
    assert sites["b1_bn"].ws and not sites["post_add_bn"].ws  # an Add feeds that one
    plain = normswap.swap(model, "groupnorm")
    assert gap(plain, result.model) > 1e-3  # WS really changes the forward pass
    with pytest.raises(normswap.UsageError, match="removes the normalization"):
        normswap.convert(model, "fold", ws=True)
    with pytest.raises(normswap.UsageError, match="exact"):
        normswap.convert(model, "frozenbn", ws=True, exact=True)


def test_ws_skips_convs_with_a_fan_in_of_one():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 1, name="pointwise")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = randomize_bn(keras.Model(inputs, x))
    site = normswap.convert(model, "groupnorm", ws=True).report.sites[0]
    assert not site.ws and "fan-in of 1" in site.notes[0]


def test_converted_models_with_every_bundled_layer_save_and_load(tmp_path):
    model = small_cnn()
    x = probe_batch(model)[0]
    for target in ("switchnorm", "batchrenorm", "bln", "frn", "evonorm", "frozenbn"):
        new = normswap.swap(model, target, ws=target in ("frn", "evonorm"))
        path = tmp_path / f"{target}.keras"
        new.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(x), new(x), rtol=1e-5, atol=1e-6, err_msg=target)
