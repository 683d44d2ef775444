"""Verification: exact conversions must agree to round-off, or nothing is written."""

import keras
import numpy as np
import pytest

import normswap
from normswap.targets import frozenbn
from normswap.verify import (
    EXACT_TOLERANCE,
    PROBE_SPATIAL,
    compare,
    exact_tolerance,
    outputs_of,
    probe_batch,
    roundoff_sensitivity,
    verify,
)
from tests.models import randomize_bn, small_cnn


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


def token_and_image_model():
    """Integer tokens through an Embedding and an image of unknown size, both into BNs."""
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    image = keras.Input((None, None, 3), name="image")
    words = keras.layers.BatchNormalization()(keras.layers.Embedding(2, 4)(tokens))
    pixels = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(image))
    pooled = keras.layers.GlobalAveragePooling2D()(pixels)
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(words), pooled])
    return randomize_bn(keras.Model([tokens, image], keras.layers.Dense(3)(joined)), seed=2)


def test_the_probe_fits_every_input_and_is_deterministic():
    model = token_and_image_model()
    tokens, image = probe_batch(model)
    assert tokens.shape == (2, 5) and tokens.dtype == np.int32
    assert set(np.unique(tokens)) == {0, 1}  # valid indices for any lookup
    assert image.shape == (2, PROBE_SPATIAL, PROBE_SPATIAL, 3) and image.dtype == np.float32
    assert abs(image.mean()) < 0.1 and abs(image.std() - 1) < 0.05
    assert not np.array_equal(image, np.round(image))
    again = probe_batch(model)
    np.testing.assert_array_equal(again[1], image)
    np.testing.assert_array_equal(probe_batch(model, seed=0)[1], image)
    assert not np.allclose(probe_batch(model, seed=1)[1], image)
    assert probe_batch(model, batch_size=3)[0].shape == (3, 5)
    assert [y.dtype for y in outputs_of(model, [tokens, image])] == [np.float64]
    result = normswap.convert(model, "frozenbn")
    assert result.report.exact and result.report.fidelity.samples == 2


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


def test_half_precision_only_inside_a_nested_model_sets_the_tolerance():
    """bfloat16 layers two models deep inside float32 ones: the tolerance is bfloat16's,
    found at any depth; a float16 layer at the top does not tighten it."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = small_cnn("backbone")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    inner = keras.Model(backbone.input, backbone.output, name="inner")  # float32 itself
    inputs = keras.Input(backbone.input_shape[1:])
    middle = keras.Model(inputs, inner(inputs), name="middle")
    outputs = keras.layers.Dense(3, dtype="mixed_float16")(middle(inputs))
    outer = keras.Model(inputs, outputs, name="outer")
    assert [layer.compute_dtype for layer in outer.layers] == ["float32", "float32", "float16"]
    assert [layer.compute_dtype for layer in middle.layers] == ["float32", "float32"]
    assert exact_tolerance(middle) == 5e-2
    assert exact_tolerance(outer) == 5e-2
    assert exact_tolerance(keras.Model(inputs, outputs)) == 5e-2
    float16_on_top = keras.Model(inputs, keras.layers.Dense(3, dtype="mixed_float16")(
        keras.Model(inputs, small_cnn("plain")(inputs))(inputs)))
    assert exact_tolerance(float16_on_top) == 1e-2
    result = normswap.convert(outer, "frozenbn")
    assert result.report.exact and exact_tolerance(result.model) == 5e-2


def test_fidelity_numbers():
    old = [np.array([[1.0, 3.0], [2.0, -4.0]])]
    new = [np.array([[1.5, 3.0], [2.0, -3.0]])]
    fidelity = compare(old, new)
    assert fidelity.max_abs == 1.0 and fidelity.scale == 4.0 and fidelity.relative == 0.25
    assert fidelity.mean_abs == pytest.approx(0.375) and fidelity.top1_agreement == 1.0
    assert compare(old, [np.array([[3.5, 3.0], [2.0, -3.0]])]).top1_agreement == 0.5
    assert fidelity.samples == 2 and fidelity.source == "probe"
    assert fidelity.to_dict() == {  # the report's JSON
        "max_abs_deviation": 1.0, "mean_abs_deviation": 0.375, "relative_max_deviation": 0.25,
        "output_scale": 4.0, "top1_agreement": 1.0, "samples": 2, "source": "probe",
        "also_calibration_samples": 0}
    broken = compare(old, [np.array([[np.nan, 0.0], [0.0, 0.0]])], source="user")
    assert broken.max_abs == broken.mean_abs == broken.relative == float("inf")
    assert broken.samples == 2 and broken.source == "user" and broken.top1_agreement is None
    one_column = [np.array([[1.0], [2.0]])]  # a regression head: no argmax to agree on
    assert compare(one_column, [np.array([[1.5], [2.0]])]).top1_agreement is None


def test_roundoff_sensitivity_nudges_each_input_by_a_few_units_of_round_off():
    """Identity: every input moves by exactly 2⁻²⁰ of itself. A sum of positive inputs:
    random signs cancel, so it moves far less than 2⁻²⁰ (one sign for all would not)."""
    x = np.random.default_rng(4).uniform(1.0, 2.0, size=(2, 256)).astype("float32")
    inputs = keras.Input((256,))
    identity = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    assert roundoff_sensitivity(identity, [x]) == pytest.approx(2.0 ** -20, rel=0.05)
    total = keras.Model(inputs, keras.layers.Dense(1, use_bias=False,
                                                   kernel_initializer="ones")(inputs))
    moved = roundoff_sensitivity(total, [x])
    assert 0 < moved < 0.3 * 2.0 ** -20
    assert roundoff_sensitivity(total, [x]) == moved  # seeded: the same nudge every time
    assert roundoff_sensitivity(total, [x], seed=1) != moved
    tokens = keras.Input((3,), dtype="int32")
    lookup = keras.Model(tokens, keras.layers.Embedding(4, 2)(tokens))
    assert roundoff_sensitivity(lookup, [np.array([[0, 1, 3], [2, 2, 1]], "int32")]) == 0.0


def test_the_report_says_where_the_verification_batch_came_from():
    model = small_cnn()
    new = normswap.swap(model, "frozenbn")
    assert verify(model, new, exact=True).source == "probe"
    assert verify(model, new, probe_batch(model, seed=2), exact=True).source == "user"
    assert verify(model, new, exact=True, source="samples").source == "samples"


def test_a_deviation_of_exactly_the_tolerance_passes_and_one_above_it_fails(monkeypatch):
    """The promise is max |Δ| ≤ tolerance × scale: equal passes. When it fails, a
    round-off sensitivity of exactly the tolerance still blames the conversion."""
    import normswap.verify as verify_module
    model = small_cnn()
    new = normswap.swap(model, "frozenbn")
    deviation = {"max_abs": EXACT_TOLERANCE * 4.0}
    monkeypatch.setattr(verify_module, "compare", lambda old, new, source: verify_module.Fidelity(
        max_abs=deviation["max_abs"], mean_abs=0.0, scale=4.0, source=source))
    assert verify(model, new, exact=True).relative == EXACT_TOLERANCE
    deviation["max_abs"] = np.nextafter(EXACT_TOLERANCE * 4.0, 1.0)
    sensitivity = {"value": EXACT_TOLERANCE}
    monkeypatch.setattr(verify_module, "roundoff_sensitivity",
                        lambda model, batch: sensitivity["value"])
    with pytest.raises(normswap.VerificationError, match="Verification failed"):
        verify(model, new, exact=True)
    sensitivity["value"] = np.nextafter(EXACT_TOLERANCE, 1.0)
    with pytest.raises(normswap.VerificationError, match="amplifies float32 round-off"):
        verify(model, new, exact=True)
