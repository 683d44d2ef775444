"""Block-wise reconstruction: blocks, the relative learning rate, fits that only improve."""

import keras
import numpy as np
import pytest

import normswap
from normswap.calibration.blocks import find_blocks
from normswap.calibration.reconstruct import RMSScaledAdam
from normswap.samples import augmented
from tests.checks import mean_deviation
from tests.models import randomize_biases, randomize_bn, small_cnn


def resnet_block():
    """A stem and one residual stage: conv-BN-ReLU, then two convs and a shortcut conv
    meeting at an Add, a ReLU after it, and a head."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="a_conv")(x)
    y = keras.layers.BatchNormalization(name="a_bn")(y)
    y = keras.layers.ReLU(name="a_relu")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="b_conv")(y)
    y = keras.layers.BatchNormalization(name="b_bn")(y)
    s = keras.layers.Conv2D(4, 1, name="short_conv")(x)
    x = keras.layers.Add(name="add")([y, s])
    x = keras.layers.ReLU(name="out_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    return randomize_biases(randomize_bn(model, seed=1), seed=2)


def test_blocks_end_at_cuts_through_the_relu_after_an_add():
    model = resnet_block()
    ids = {id(model.get_layer(n)) for n in ("stem_bn", "a_bn", "b_bn")}
    blocks = find_blocks(model, ids)
    assert [b.name for b in blocks] == ["stem_relu", "out_relu"]
    stem, stage = blocks
    assert [n.operation.name for n in stem.nodes] == ["stem_conv", "stem_bn", "stem_relu"]
    assert {n.operation.name for n in stage.nodes} == {
        "a_conv", "a_bn", "a_relu", "b_conv", "b_bn", "short_conv", "add", "out_relu"}
    assert [s.name for s in stage.sites] == ["a_bn", "b_bn"]
    assert stage.starts == [model.get_layer("stem_relu").output]
    split = find_blocks(model, ids, max_sites=1)
    assert [b.sites[0].name for b in split] == ["stem_bn", "a_bn", "b_bn"]
    assert [n.operation.name for n in split[1].nodes] == ["a_conv", "a_bn", "a_relu"]


def test_the_learning_rate_is_relative_to_each_variables_size():
    small = keras.Variable(np.full((4,), 0.005, "float32"), name="small")
    large = keras.Variable(np.full((4,), 2.0, "float32"), name="large")
    optimizer = RMSScaledAdam({small.path: 0.005, large.path: 2.0}, learning_rate=0.1)
    optimizer.build([small, large])
    optimizer.apply([np.ones(4, "float32"), np.ones(4, "float32")], [small, large])
    # Adam's first step is the learning rate itself: here 0.1 of each variable's size.
    np.testing.assert_allclose(0.005 - small.numpy(), 0.0005, rtol=1e-3)
    np.testing.assert_allclose(2.0 - large.numpy(), 0.2, rtol=1e-3)


def test_augmentation_mirrors_and_shifts_images():
    images = np.arange(2 * 6 * 6 * 1, dtype="float32").reshape(2, 6, 6, 1)
    batches = augmented([[images]])
    assert len(batches) == 8 and all(b[0].shape == images.shape for b in batches)
    np.testing.assert_array_equal(batches[0][0], images)
    np.testing.assert_array_equal(batches[1][0][:, 2:], images[:, :-2])  # down by 2 rows
    np.testing.assert_array_equal(batches[1][0][:, :2], np.repeat(images[:, :1], 2, axis=1))
    np.testing.assert_array_equal(batches[4][0], images[:, :, ::-1])
    vectors = [[np.ones((3, 5), "float32")]]
    assert augmented(vectors) is vectors


@pytest.mark.parametrize("target", ["groupnorm", "evonorm"])
def test_reconstruction_improves_what_calibration_left_and_spares_the_original(trained,
                                                                               target):
    model, calibration, held_out = trained
    before = [w.copy() for w in model.get_weights()]
    calibrated = normswap.convert(model, target, calibration_data=calibration)
    rebuilt = normswap.convert(model, target, calibration_data=calibration, reconstruct=True,
                               reconstruct_options={"steps": 60, "check_every": 20})
    assert (mean_deviation(model, rebuilt.model, held_out)
            < mean_deviation(model, calibrated.model, held_out))
    blocks = rebuilt.report.calibration["reconstruction"]
    assert blocks and all(b["r2_after"] >= b["r2_before"] for b in blocks)
    assert any(b["improved"] for b in blocks)
    site = next(s for s in rebuilt.report.sites if s.site.name == "block1_bn")
    assert site.fidelity["block"]["block"] == "block1_relu"
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_a_block_that_does_not_improve_keeps_its_weights():
    """A learning rate of 1e3 wrecks the fit of the first block (whose input is the same
    in both conversions): its old weights must stay."""
    model = small_cnn()
    samples = np.random.default_rng(3).normal(size=(16, 12, 12, 3)).astype("float32")
    options = {"steps": 10, "check_every": 5, "augment": False}
    kept = normswap.convert(model, "layernorm", calibration_data=samples, reconstruct=True,
                            reconstruct_options={**options, "learning_rate": 1e3})
    plain = normswap.convert(model, "layernorm", calibration_data=samples, reconstruct=True,
                             reconstruct_options={**options, "steps": 0})
    first = kept.report.calibration["reconstruction"][0]
    assert first["sites"] == ["b1_bn"] and not first["improved"]
    for name in ("b1_bn", "b1_conv"):
        for a, b in zip(kept.model.get_layer(name).get_weights(),
                        plain.model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_reconstruction_options_and_data_are_checked():
    with pytest.raises(normswap.UsageError, match="need calibration_data"):
        normswap.convert(small_cnn(), "groupnorm", reconstruct=True)
    samples = np.zeros((4, 12, 12, 3), "float32")
    with pytest.raises(normswap.UsageError, match="Unknown reconstruct option"):
        normswap.convert(small_cnn(), "groupnorm", calibration_data=samples, reconstruct=True,
                         reconstruct_options={"stpes": 3})


def test_the_report_counts_the_samples_given_and_their_augmented_copies(trained):
    from rich.console import Console

    from normswap.report import render

    model, calibration, _ = trained
    texts = {}
    for reconstruct in (True, False):
        result = normswap.convert(
            model, "groupnorm", calibration_data=calibration[:24], reconstruct=reconstruct,
            reconstruct_options={"steps": 1} if reconstruct else None)
        summary = result.report.calibration
        assert summary["samples_given"] == 24
        assert summary["samples"] == (8 * 24 if reconstruct else 24)
        console = Console(record=True, width=300)
        render(result.report, console)
        texts[reconstruct] = console.export_text()
    assert "on 24 samples (192 with mirrored and shifted copies) in one pass" in texts[True]
    assert "on 24 samples in one pass" in texts[False]
