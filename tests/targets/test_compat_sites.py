"""A Keras-2 library's layer (loaded as a normswap.layers.Keras2* compatibility layer)
converts like a BN to the targets that need no BN statistics, with calibration."""

import keras
import numpy as np

import normswap
from normswap.layers import Keras2GroupNormalization, Keras2InstanceNormalization
from tests.checks import mean_deviation


def seed_model():
    """The WS study's layout with titu1994's row-grouping GroupNormalization, and a
    keras-contrib InstanceNormalization over every axis."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = Keras2GroupNormalization(groups=4, name="gn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = Keras2InstanceNormalization(axis=None, name="in")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    for name in ("gn", "in"):
        layer = model.get_layer(name)
        for weight in layer.weights:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
    return model


def test_compatibility_layers_are_sites_for_targets_that_need_no_statistics():
    model = seed_model()
    sites = {s.name: s for s in normswap.find_sites(model)}
    assert set(sites) == {"gn", "in"} and not sites["gn"].is_batchnorm
    assert sites["gn"].channels == 8 and sites["gn"].axis == 3
    plan = normswap.plan(model, "fold")
    assert all(s.action == "skip" and "no BatchNormalization statistics" in s.reason
               for s in plan.sites)
    samples = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype("float32")
    copied = normswap.convert(model, "groupnorm", groups=2)
    calibrated = normswap.convert(model, "groupnorm", groups=2, calibration_data=samples)
    assert {s.new_class for s in calibrated.report.sites} == {"GroupNormalization"}
    np.testing.assert_allclose(copied.model.get_layer("gn").gamma.numpy(),
                               model.get_layer("gn").gamma.numpy())
    np.testing.assert_allclose(copied.model.get_layer("in").gamma.numpy(),
                               np.full(8, model.get_layer("in").gamma.numpy().ravel()[0]))
    assert all(s.fidelity["r2_after"] >= s.fidelity["r2_before"] - 1e-9
               for s in calibrated.report.sites)
    assert mean_deviation(model, calibrated.model, samples) < mean_deviation(
        model, copied.model, samples)
