"""Distillation: the converted model fine-tuned towards the original's outputs."""

import keras
import numpy as np
import pytest

import normswap
from tests.checks import mean_deviation


def test_distillation_moves_towards_the_teacher_and_leaves_it_alone(trained):
    model, calibration, held_out = trained
    before = [w.copy() for w in model.get_weights()]
    # layernorm: since calibration picks FRN's ε from the data, calibrated FRN is too close
    # to the original for 30 steps to show a move.
    calibrated = normswap.convert(model, "layernorm", calibration_data=calibration)
    distilled = normswap.convert(model, "layernorm", calibration_data=calibration,
                                 distill_steps=30)
    summary = distilled.report.distillation
    assert summary["steps"] == 30 and summary["loss_kinds"] == ["kl_divergence"]
    assert summary["last_loss"] < summary["first_loss"]
    assert (mean_deviation(model, distilled.model, calibration)
            < mean_deviation(model, calibrated.model, calibration))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not distilled.model.compiled


def test_distillation_can_match_the_swapped_sites(trained):
    model, calibration, _ = trained
    result = normswap.convert(model, "groupnorm", calibration_data=calibration, distill_steps=10,
                              distill_options={"match_sites": True, "learning_rate": 1e-3})
    summary = result.report.distillation
    assert summary["sites_matched"] == 7
    assert np.isfinite(summary["last_loss"])
    assert len(result.model.outputs) == 1 and not result.model.compiled


def with_l2_on_every_kernel(model, coefficient):
    """The same model, same weights, with an L2 kernel_regularizer on every layer that has a
    kernel."""
    config = model.get_config()
    for layer in config["layers"]:
        if "kernel_regularizer" in layer["config"]:
            layer["config"]["kernel_regularizer"] = keras.regularizers.serialize(
                keras.regularizers.L2(coefficient))
    regularized = keras.Model.from_config(config)
    regularized.set_weights(model.get_weights())
    return regularized


def test_distillation_leaves_the_models_own_regularizers_out(trained):
    """The objective is the teacher's outputs alone: with a heavy L2 on every kernel the
    losses and the distilled model are those of the same model without it."""
    model, calibration, held_out = trained
    regularized = with_l2_on_every_kernel(model, 1.0)
    assert float(sum(keras.ops.convert_to_numpy(x) for x in regularized.losses)) > 1.0
    plain = normswap.convert(model, "layernorm", calibration_data=calibration[:64],
                             distill_steps=4)
    heavy = normswap.convert(regularized, "layernorm", calibration_data=calibration[:64],
                             distill_steps=4)
    for key in ("first_loss", "last_loss"):
        assert heavy.report.distillation[key] == pytest.approx(
            plain.report.distillation[key], rel=1e-4, abs=1e-7)
    np.testing.assert_allclose(heavy.model.predict(held_out, verbose=0),
                               plain.model.predict(held_out, verbose=0), rtol=1e-4, atol=1e-5)
    assert len(heavy.model.losses) == len(regularized.losses)  # the model keeps them


@pytest.mark.parametrize("target", ["fold", "frozenbn"])
def test_an_exact_conversion_is_not_distilled(trained, target):
    """Distilling a model that already reproduces its teacher can only move it away (Adam's
    first steps have full size whatever the gradient): skipped, and said."""
    from rich.console import Console

    from normswap.report import render

    model, calibration, held_out = trained
    exact = normswap.convert(model, target)
    result = normswap.convert(model, target, calibration_data=calibration, distill_steps=20)
    assert result.report.exact
    assert result.report.distillation["steps"] == 0
    assert "already reproduces the original" in result.report.distillation["skipped"]
    np.testing.assert_array_equal(result.model.predict(held_out, verbose=0),
                                  exact.model.predict(held_out, verbose=0))
    console = Console(record=True, width=200)
    render(result.report, console)
    assert "Distillation skipped: the conversion is exact" in console.export_text()
    restated = normswap.convert(model, "batchrenorm", calibration_data=calibration,
                                recalibrate_stats=True, distill_steps=3)
    assert restated.report.distillation["steps"] == 3 and not restated.report.exact
