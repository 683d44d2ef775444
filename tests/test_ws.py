"""ws=True: the convs that feed swapped sites become Weight-Standardized convs."""

import keras
import numpy as np
import pytest

import normswap
from normswap.layers import WSConv2D
from normswap.verify import outputs_of, probe_batch
from tests.checks import gap
from tests.models import randomize_bn, small_cnn


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


def _conv_then(*middle, name="m"):
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(6, 3, name="conv")
    x = conv(inputs)
    for layer in middle:
        x = layer(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return randomize_bn(keras.Model(inputs, x, name=name))


def test_ws_reaches_the_conv_through_element_wise_layers():
    """The seed study's Conv → ReLU → BN: the conv that computes the BN's input is the one
    WS belongs to."""
    model = _conv_then(keras.layers.ReLU(name="relu"), keras.layers.Dropout(0.1, name="drop"))
    result = normswap.convert(model, "groupnorm", ws=True, groups=2)
    site = result.report.sites[0]
    assert site.ws and isinstance(result.model.get_layer("conv"), WSConv2D)
    assert "'conv' → WSConv2D through 'relu' through 'drop'" in site.notes
    np.testing.assert_array_equal(result.model.get_layer("conv").kernel.numpy(),
                                  model.get_layer("conv").kernel.numpy())
    batch = probe_batch(model)
    plain = normswap.swap(model, "groupnorm", groups=2)
    assert gap(plain, result.model) > 1e-3
    assert np.isfinite(outputs_of(result.model, batch)[0]).all()


def test_ws_is_refused_where_the_path_is_not_element_wise_or_not_exclusive():
    pooled = _conv_then(keras.layers.MaxPooling2D(name="pool"))
    note = normswap.plan(pooled, "groupnorm", ws=True, groups=2).sites[0].notes[0]
    assert "MaxPooling2D is not a Conv1D/2D/3D" in note and "element-wise" in note
    inputs = keras.Input((8, 8, 3))
    c = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    r = keras.layers.ReLU(name="relu")(c)
    x = keras.layers.BatchNormalization(name="bn")(r)
    shared = randomize_bn(keras.Model(inputs, [x, keras.layers.Flatten()(c)]))
    note = normswap.plan(shared, "groupnorm", ws=True, groups=2).sites[0].notes[0]
    assert "'conv' also feeds other layers" in note
