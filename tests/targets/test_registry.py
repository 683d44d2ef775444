"""The target registry: targets found by name or by the layer class they build."""

import keras

import normswap
from normswap.layers import (
    FRN,
    BatchLayerNormalization,
    BatchRenormalization,
    EvoNormS0,
    SwitchNormalization,
)
from tests.models import small_cnn


def test_layer_classes_select_their_targets():
    model = small_cnn()
    classes = (FRN, SwitchNormalization, BatchRenormalization, BatchLayerNormalization, EvoNormS0,
               keras.layers.GroupNormalization, keras.layers.LayerNormalization)
    for layer_class in classes:
        result = normswap.convert(model, layer_class)
        assert result.report.swapped, layer_class
    assert normswap.FRN is normswap.layers.FilterResponseNormalization
    assert isinstance(normswap.swap(model, FRN).get_layer("b1_bn"), FRN)


def test_layer_class_selects_target():
    model = small_cnn()
    assert isinstance(normswap.swap(model, keras.layers.GroupNormalization).get_layer("b1_bn"),
                      keras.layers.GroupNormalization)
    assert isinstance(normswap.swap(model, normswap.ChannelAffine).get_layer("b1_bn"),
                      normswap.ChannelAffine)
