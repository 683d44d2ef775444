"""ws=True: the convs that feed swapped sites become Weight-Standardized convs."""

import keras
import numpy as np
import pytest

import normswap
from normswap.layers import WSConv2D
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
