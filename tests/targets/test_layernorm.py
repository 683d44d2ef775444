"""The layernorm target: GroupNorm with one group on feature maps, LayerNorm on Dense."""

import keras
import numpy as np

import normswap
from tests.models import small_cnn


def test_layernorm_is_one_group_on_maps_and_layer_normalization_on_dense():
    model = small_cnn()
    new = normswap.swap(model, "layernorm")
    conv_site, dense_site = new.get_layer("b1_bn"), new.get_layer("fc_bn")
    assert isinstance(conv_site, keras.layers.GroupNormalization) and conv_site.groups == 1
    assert isinstance(dense_site, keras.layers.LayerNormalization)
    for name in ("b1_bn", "fc_bn"):
        np.testing.assert_allclose(new.get_layer(name).gamma.numpy(),
                                   model.get_layer(name).gamma.numpy())
        np.testing.assert_allclose(new.get_layer(name).beta.numpy(),
                                   model.get_layer(name).beta.numpy())
        assert new.get_layer(name).epsilon == model.get_layer(name).epsilon
