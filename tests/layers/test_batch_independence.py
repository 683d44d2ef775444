"""A sample's output must not depend on the other samples of its batch, in training too.

This is the property that makes these layers fit where BatchNormalization breaks (batch
size 1-4, correlated batches, per-sample gradients). BatchNormalization itself is the
control: the same check must detect its dependence in training mode.
"""

import keras
import numpy as np
import pytest

from normswap.layers import (
    BatchLayerNormalization,
    EvoNormB0,
    EvoNormS0,
    FilterResponseNormalization,
    SwitchNormalization,
)
from tests.layers._common import (
    randomize_weights,
    skip_keras_layer_norm_on_a_leading_axis,
    to_numpy,
)

# (input shape of one sample, channel axis)
LAYOUTS = [((5, 4, 6), -1), ((6, 5, 4), 1), ((8,), -1)]

FACTORIES = {
    "frn": lambda axis: FilterResponseNormalization(axis=axis, learned_epsilon=True),
    "frn_no_tlu": lambda axis: FilterResponseNormalization(axis=axis, use_tlu=False),
    "evonorm": lambda axis: EvoNormS0(axis=axis, groups=2),
    "groupnorm": lambda axis: keras.layers.GroupNormalization(groups=2, axis=axis),
    "layernorm": lambda axis: keras.layers.LayerNormalization(axis=axis),
    "switchnorm_no_bn": lambda axis: SwitchNormalization(axis=axis, using_bn=False),
}

# Batch statistics in training, moving ones at inference: independent at inference only.
INFERENCE_ONLY = {
    "evonorm_b0": lambda axis: EvoNormB0(axis=axis),
    "switchnorm": lambda axis: SwitchNormalization(axis=axis),
    "bln": lambda axis: BatchLayerNormalization(axis=axis),
}


def _sample_alone_and_in_batch(layer, sample_shape, training, seed=0):
    rng = np.random.default_rng(seed)
    sample = rng.normal(1.0, 2.0, size=(1,) + sample_shape).astype("float32")
    # other samples from a different distribution, so any leak would show
    others = rng.normal(-3.0, 5.0, size=(6,) + sample_shape).astype("float32")
    batch = np.concatenate([others[:3], sample, others[3:]])
    alone = to_numpy(layer(sample, training=training))[0]
    within = to_numpy(layer(batch, training=training))[3]
    return alone, within


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("sample_shape,axis", LAYOUTS, ids=["nhwc", "nchw", "dense"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_output_of_a_sample_ignores_its_batch(name, sample_shape, axis, training):
    skip_keras_layer_norm_on_a_leading_axis(name == "layernorm", axis, len(sample_shape) + 1)
    layer = FACTORIES[name](axis)
    layer.build((None,) + sample_shape)
    randomize_weights(layer, seed=0, mean=0.5)
    alone, within = _sample_alone_and_in_batch(layer, sample_shape, training)
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(alone, within, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sample_shape,axis", LAYOUTS, ids=["nhwc", "nchw", "dense"])
@pytest.mark.parametrize("name", sorted(INFERENCE_ONLY))
def test_batch_statistics_layers_ignore_the_batch_at_inference_only(name, sample_shape, axis):
    layer = INFERENCE_ONLY[name](axis)
    layer.build((None,) + sample_shape)
    randomize_weights(layer, seed=0, mean=0.5)
    for w in layer.weights:  # variances positive, counters at 0
        if "variance" in w.name and "weights" not in w.name:
            w.assign(np.abs(to_numpy(w)) + 0.5)
        elif w.name == "step":
            w.assign(0.0)
    alone, within = _sample_alone_and_in_batch(layer, sample_shape, training=False)
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(alone, within, rtol=1e-5, atol=1e-5)
    alone, within = _sample_alone_and_in_batch(layer, sample_shape, training=True)
    assert np.abs(alone - within).max() > 0.1


def test_the_check_detects_batch_normalization():
    layer = keras.layers.BatchNormalization()
    layer.build((None, 5, 4, 6))
    alone, within = _sample_alone_and_in_batch(layer, (5, 4, 6), training=True)
    assert np.abs(alone - within).max() > 0.1
