"""Distillation: the converted model fine-tuned towards the original's outputs."""

import numpy as np

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
