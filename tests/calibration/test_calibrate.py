"""Calibration and distillation on a trained model (the bundled demo CNN)."""

import keras
import numpy as np
import pytest

import normswap
from normswap.verify import outputs_of
from tests.checks import mean_deviation
from tests.models import randomize_bn

INEXACT = ["groupnorm", "layernorm", "instancenorm", "frn", "evonorm"]
# Instance-wise statistics right before the demo CNN's global pooling (instancenorm, frn)
# remove the per-sample channel energy its classifier reads: no per-channel affine can
# bring that back, so end to end only the others are required to improve.
RECOVERABLE = ["groupnorm", "layernorm", "evonorm"]


@pytest.mark.parametrize("target", INEXACT)
def test_calibration_improves_every_inexact_target(trained, target):
    model, calibration, held_out = trained
    copied = normswap.convert(model, target)
    calibrated = normswap.convert(model, target, calibration_data=calibration, eval_data=held_out)
    for site in calibrated.report.swapped:
        assert site.fidelity["r2_after"] >= site.fidelity["r2_before"] - 1e-9, site.site.name
    assert any(s.fidelity["r2_after"] > s.fidelity["r2_before"] + 0.01
               for s in calibrated.report.swapped)
    if target in RECOVERABLE:
        assert (mean_deviation(model, calibrated.model, held_out)
                < 0.5 * mean_deviation(model, copied.model, held_out))
        assert calibrated.report.fidelity.top1_agreement >= 0.9
    assert calibrated.report.fidelity.source == "eval"
    assert calibrated.report.fidelity.also_calibration == 0
    assert calibrated.report.calibration["sites_calibrated"] == len(calibrated.report.swapped)


def test_the_report_says_how_many_eval_samples_were_calibration_samples(trained):
    """Fidelity measured on calibration samples flatters the conversion: counted, said."""
    from rich.console import Console

    from normswap.report import render

    model, calibration, held_out = trained
    evaluation = np.concatenate([held_out[:20], calibration[5:12]])
    result = normswap.convert(model, "groupnorm", calibration_data=calibration,
                              eval_data=evaluation)
    fidelity = result.report.fidelity
    assert (fidelity.source, fidelity.samples, fidelity.also_calibration) == ("eval", 27, 7)
    assert result.report.to_dict()["fidelity"]["also_calibration_samples"] == 7
    console = Console(record=True, width=200)
    render(result.report, console)
    assert ("Note: 7 of the 27 eval samples were calibration samples too"
            in console.export_text())
    held_out_only = normswap.convert(model, "groupnorm", calibration_data=calibration,
                                     eval_data=held_out[:20])
    console = Console(record=True, width=200)
    render(held_out_only.report, console)
    assert "Note:" not in console.export_text()


@pytest.mark.parametrize("target", ["frozenbn", "batchrenorm", "fold", "switchnorm"])
def test_calibration_never_changes_an_exact_conversion(trained, target):
    model, calibration, held_out = trained
    options = {"exact": True} if target == "switchnorm" else {}
    plain = normswap.convert(model, target, **options).model
    calibrated = normswap.convert(model, target, calibration_data=calibration, **options)
    assert calibrated.report.exact
    np.testing.assert_array_equal(outputs_of(plain, held_out)[0],
                                  outputs_of(calibrated.model, held_out)[0])


def test_calibration_matches_a_numpy_least_squares_fit():
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = randomize_bn(keras.Model(inputs, x), seed=5)
    samples = np.random.default_rng(0).normal(size=(40, 6, 6, 4)).astype("float32")
    new = normswap.swap(model, "groupnorm", groups=2, calibration_data=samples)
    conv_out = model.get_layer("conv")(samples).numpy()
    target = model(samples, training=False).numpy().reshape(-1, 8)
    grouped = conv_out.reshape(40, 4, 4, 2, 4)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    response = ((grouped - mean) / np.sqrt(var + 1e-3)).reshape(-1, 8)
    for c in range(8):
        design = np.stack([response[:, c], np.ones(len(response))], axis=1)
        (gamma, beta), *_ = np.linalg.lstsq(design, target[:, c], rcond=None)
        np.testing.assert_allclose(new.get_layer("bn").gamma.numpy()[c], gamma, rtol=1e-4)
        np.testing.assert_allclose(new.get_layer("bn").beta.numpy()[c], beta, rtol=1e-4,
                                   atol=1e-5)


def test_streaming_batches_give_the_same_result_as_one_array(trained):
    model, calibration, _ = trained
    whole = normswap.swap(model, "groupnorm", calibration_data=calibration)
    streamed = normswap.swap(model, "groupnorm",
                             calibration_data=(calibration[i:i + 64]
                                               for i in range(0, len(calibration), 64)))
    for a, b in zip(whole.get_weights(), streamed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_groups_auto_is_chosen_by_fidelity_with_calibration(trained):
    model, calibration, _ = trained
    report = normswap.convert(model, "groupnorm", calibration_data=calibration).report
    fixed = {s.site.name: s for s in normswap.convert(
        model, "groupnorm", groups=2, calibration_data=calibration).report.sites}
    for site in report.swapped:
        assert site.site.channels % site.params["groups"] == 0
    first = report.swapped[0]
    assert first.fidelity["r2_after"] >= fixed[first.site.name].fidelity["r2_after"] - 1e-9


def test_recalibrate_stats_measures_the_samples():
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    model = randomize_bn(keras.Model(inputs, keras.layers.Flatten()(x)))
    samples = np.random.default_rng(2).normal(3.0, 2.0, size=(50, 5, 5, 3)).astype("float32")
    new = normswap.swap(model, "batchrenorm", calibration_data=samples, recalibrate_stats=True)
    layer = new.get_layer("bn")
    np.testing.assert_allclose(layer.moving_mean.numpy(), samples.mean(axis=(0, 1, 2)), rtol=1e-5)
    # Batch Renorm keeps the paper's one set of statistics: mean and standard deviation.
    np.testing.assert_allclose(layer.moving_stddev.numpy(),
                               np.sqrt(samples.var(axis=(0, 1, 2)) + 1e-3), rtol=1e-4)


@pytest.mark.parametrize("bad, phrase", [
    (np.zeros((4, 28, 28)), "do not fit"),
    (np.zeros((4, 14, 14, 1)), "do not fit"),
    (np.array([["a"] * 28] * 28 * 4).reshape(4, 28, 28, 1), "expected numbers"),
    (np.zeros((0, 28, 28, 1)), "no samples"),
    (np.full((4, 28, 28, 1), np.nan), "NaN"),
    ([], "no samples"),
])
def test_bad_calibration_data_is_one_clear_error(trained, bad, phrase):
    model = trained[0]
    with pytest.raises(normswap.UsageError, match=phrase):
        normswap.convert(model, "groupnorm", calibration_data=bad)


def test_calibration_walks_nested_and_multi_input_models():
    from tests.models import multi_io_model, nested_model

    rng = np.random.default_rng(4)
    nested = randomize_bn(nested_model(), seed=4)
    report = normswap.convert(nested, "layernorm",
                              calibration_data=rng.normal(size=(20, 12, 12, 3))).report
    assert {s.site.name for s in report.sites if s.fidelity} == {
        "inner/b1_bn", "inner/b2_bn", "inner/post_add_bn"}
    assert all(s.fidelity["r2_after"] > 0.9 for s in report.sites)
    multi = multi_io_model()
    samples = (rng.normal(size=(16, 8, 8, 3)), rng.normal(size=(16, 6)))
    report = normswap.convert(multi, "groupnorm", groups=2, calibration_data=samples).report
    assert report.calibration["sites_calibrated"] == 2


def test_shared_layers_are_not_calibrated_and_say_so():
    from tests.models import shared_bn_model

    model = shared_bn_model()
    samples = np.random.default_rng(5).normal(size=(8, 10, 10, 4))
    result = normswap.convert(model, "layernorm", calibration_data=samples)
    (site,) = result.report.sites
    assert site.fidelity is None and "2 call sites" in site.notes[-1]
    assert result.report.calibration["sites_calibrated"] == 0


def test_an_exact_conversion_verified_on_the_probe_counts_no_eval_overlap(trained):
    model, calibration, _ = trained
    result = normswap.convert(model, "fold", calibration_data=calibration,
                              eval_data=calibration[:10])
    fidelity = result.report.fidelity
    assert (fidelity.source, fidelity.samples, fidelity.also_calibration) == ("probe", 2, 0)
