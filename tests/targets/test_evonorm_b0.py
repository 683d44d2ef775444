"""The evonorm-b0 target: EvoNorm-B0 started from the BN's output."""

import keras
import numpy as np

import normswap
from normswap.layers import EvoNormB0
from tests.checks import relative_gap
from tests.models import randomize_biases, randomize_bn, small_cnn


def test_a_folded_site_starts_as_the_bn_where_the_batch_term_dominates():
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)  # rank 2: no instance term
    model = randomize_biases(randomize_bn(keras.Model(inputs, x), seed=3), seed=4)
    result = normswap.convert(model, "evonorm-b0")
    layer = result.model.get_layer("bn")
    assert isinstance(layer, EvoNormB0) and not result.report.exact
    np.testing.assert_array_equal(layer.v.numpy(), np.zeros(6))
    bn = model.get_layer("bn")
    gamma, variance = bn.gamma.numpy(), bn.moving_variance.numpy()
    expected = gamma ** 2 * variance / (variance + bn.epsilon)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-6)
    batch = [np.random.default_rng(5).normal(size=(8, 5)).astype("float32")]
    assert relative_gap(model, result.model, batch) <= 1e-5


def test_sites_that_cannot_fold_copy_the_affine_and_say_so():
    report = normswap.convert(small_cnn(), "evonorm-b0").report
    sites = {s.site.layer.name: s for s in report.sites}
    assert any("not centred" in note for note in sites["post_add_bn"].notes)
    assert "moving_variance" in sites["post_add_bn"].carried
    assert any("folded into 'b1_conv'" in note for note in sites["b1_bn"].notes)
    new = normswap.swap(small_cnn(), "evonorm-b0")
    assert "b1_relu" in {layer.name for layer in new.layers}  # the ReLU stays
