"""Verification: exact conversions must agree to round-off, or nothing is written."""

import keras
import numpy as np
import pytest

import normswap
from normswap.targets import frozenbn
from normswap.verify import EXACT_TOLERANCE, compare, exact_tolerance
from tests.models import small_cnn


@pytest.mark.parametrize("factor, fails", [(1 + 4e-4, True), (1 + 2e-6, False)])
def test_the_exact_tolerance_is_float32_round_off(monkeypatch, factor, fails):
    """A scale off by 4e-4 (between 1e-4 and 1e-3) must fail: a tolerance loosened to 1e-3
    would let it through; one off by 2e-6 is round-off and must pass."""
    original = frozenbn.bn_affine
    monkeypatch.setattr(frozenbn, "bn_affine",
                        lambda layer: (original(layer)[0] * factor, original(layer)[1]))
    if fails:
        with pytest.raises(normswap.VerificationError, match="tolerance 0.0001"):
            normswap.convert(small_cnn(), "frozenbn")
    else:
        assert normswap.convert(small_cnn(), "frozenbn").report.exact



def test_a_failed_verification_writes_nothing_while_a_passed_one_writes_the_model(
        monkeypatch, tmp_path):
    """convert(output=) writes the file while the verification runs and renames it into
    place only once the verification has passed."""
    output = tmp_path / "out.keras"
    model = small_cnn()
    original = frozenbn.bn_affine
    monkeypatch.setattr(frozenbn, "bn_affine",
                        lambda layer: (original(layer)[0] * 1.01, original(layer)[1]))
    with pytest.raises(normswap.VerificationError):
        normswap.convert(model, "frozenbn", output=output)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(frozenbn, "bn_affine", original)
    result = normswap.convert(model, "frozenbn", output=output)
    assert result.output == output and result.report.exact
    reloaded = keras.models.load_model(output, compile=False)
    x = np.random.default_rng(0).normal(size=(3, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(reloaded(x), result.model(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(normswap.UsageError, match="already exists"):
        normswap.convert(model, "frozenbn", output=output)


def test_half_precision_models_get_half_precision_tolerance():
    assert exact_tolerance(small_cnn()) == EXACT_TOLERANCE
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_cnn("half")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert exact_tolerance(model) == 1e-2
    assert normswap.convert(model, "fold").report.exact


def test_fidelity_numbers():
    old = [np.array([[1.0, 3.0], [2.0, -4.0]])]
    new = [np.array([[1.5, 3.0], [2.0, -3.0]])]
    fidelity = compare(old, new)
    assert fidelity.max_abs == 1.0 and fidelity.scale == 4.0 and fidelity.relative == 0.25
    assert fidelity.mean_abs == pytest.approx(0.375) and fidelity.top1_agreement == 1.0
    assert compare(old, [np.array([[3.5, 3.0], [2.0, -3.0]])]).top1_agreement == 0.5
    assert compare(old, [np.array([[np.nan, 0.0], [0.0, 0.0]])]).max_abs == float("inf")
