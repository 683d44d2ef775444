"""The evonorm target: EvoNorm-S0 replacing BN + ReLU, its group count."""

import keras

import normswap
from tests.models import randomize_bn


def test_evonorm_reports_the_group_count_it_used():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(24, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = randomize_bn(keras.Model(inputs, x))
    site = normswap.convert(model, "evonorm", groups=16).report.sites[0]
    assert site.params["groups"] == 12 and any("used 12" in note for note in site.notes)
    assert normswap.convert(model, "evonorm").report.sites[0].params["groups"] == 1
