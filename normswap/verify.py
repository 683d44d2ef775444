"""Old model vs new model on the same probe batch.

Exact conversions must agree to float32 round-off: max |Δ| ≤ 1e-4 × the original output's
scale (its largest magnitude, at least 1e-6), or half precision's for a model that computes
in float16/bfloat16. Inexact ones report how far they moved. When an exact conversion fails,
the original is checked for amplifying round-off itself (`roundoff_sensitivity`): such a
model cannot be verified at all, and the error says so instead of blaming the conversion.
"""

import dataclasses

import keras
import numpy as np

from normswap.defaults import BATCH_SIZE
from normswap.errors import UsageError, VerificationError
from normswap.replay import pack_inputs

EXACT_TOLERANCE = 1e-4  # float32 round-off, relative to the output scale
# Models that compute in half precision round at every layer: float16 keeps 11 bits of
# mantissa (ε ≈ 1e-3), bfloat16 8 bits (ε ≈ 8e-3).
LOW_PRECISION_TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2}
PROBE_BATCH = 2
PROBE_SPATIAL = 32  # size of an input dimension the model leaves unknown
PROBE_SEED = 0


def probe_batch(model, batch_size=PROBE_BATCH, seed=PROBE_SEED):
    """A deterministic input batch shaped from the model's inputs (a list, one per input)."""
    rng = np.random.default_rng(seed)
    batch = []
    for tensor in model.inputs:
        shape = [batch_size] + [d if d is not None else PROBE_SPATIAL for d in tensor.shape[1:]]
        dtype = str(tensor.dtype)
        if "int" in dtype:
            batch.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            batch.append(rng.standard_normal(shape).astype("float32"))
    return batch


def as_model_input(model, arrays):
    """A list of arrays, one per input, as the model takes it (one array for one input)."""
    if len(arrays) != len(model.inputs):
        raise UsageError(
            f"The probe batch has {len(arrays)} array(s) but the model has "
            f"{len(model.inputs)} input(s).")
    return pack_inputs(model, arrays)


def outputs_of(model, batch, chunk=BATCH_SIZE):
    """The model's outputs on `batch` at inference, as a list of float64 arrays.

    `batch` is an array, a list of arrays (one per input), or a list of such batches
    (as `samples.input_batches` makes); it is run `chunk` samples at a time.
    """
    pieces = []
    for part in _chunks(batch, chunk):
        result = model(as_model_input(model, part), training=False)
        pieces.append([np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)
                       for y in keras.tree.flatten(result)])
    return [np.concatenate(parts) for parts in zip(*pieces)]


def _chunks(batch, chunk):
    if isinstance(batch, list) and batch and isinstance(batch[0], list):
        for part in batch:  # already a list of batches
            yield part
        return
    arrays = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    for start in range(0, len(arrays[0]), chunk):
        yield [a[start:start + chunk] for a in arrays]


@dataclasses.dataclass
class Fidelity:
    """How far the new model's outputs are from the original's on one batch."""

    max_abs: float
    mean_abs: float
    scale: float
    top1_agreement: float = None  # for classifiers: share of samples with the same argmax
    samples: int = 0
    source: str = "probe"
    also_calibration: int = 0  # how many of these samples were calibration samples too

    @property
    def relative(self):
        return self.max_abs / self.scale

    def to_dict(self):
        return {"max_abs_deviation": self.max_abs, "mean_abs_deviation": self.mean_abs,
                "relative_max_deviation": self.relative, "output_scale": self.scale,
                "top1_agreement": self.top1_agreement, "samples": self.samples,
                "source": self.source, "also_calibration_samples": self.also_calibration}


def is_classifier_output(output):
    """Whether an output array holds one score per class: (samples, classes ≥ 2)."""
    return output.ndim == 2 and output.shape[1] > 1


def top1_accuracy(output, labels):
    """The share of rows of a (samples, classes) output whose highest score is the label
    (`labels`: class indices; another classifier output is compared by its own argmax)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(1)
    return float(np.mean(np.asarray(output).argmax(1) == labels.ravel()))


def compare(old_outputs, new_outputs, source="probe"):
    """Fidelity of `new_outputs` against `old_outputs` (lists of arrays)."""
    if any(not np.all(np.isfinite(y)) for y in new_outputs):
        return Fidelity(float("inf"), float("inf"), 1.0, samples=len(old_outputs[0]),
                        source=source)
    deltas = [np.abs(a - b) for a, b in zip(old_outputs, new_outputs)]
    scale = max(1e-6, max(float(np.max(np.abs(a))) for a in old_outputs))
    first_old, first_new = old_outputs[0], new_outputs[0]
    top1 = top1_accuracy(first_new, first_old) if is_classifier_output(first_old) else None
    return Fidelity(
        max_abs=max(float(d.max()) for d in deltas),
        mean_abs=float(np.mean(np.concatenate([d.ravel() for d in deltas]))),
        scale=scale, top1_agreement=top1, samples=len(first_old), source=source)


def exact_tolerance(model):
    """The tolerance of an exact conversion of `model`: float32 round-off (1e-4 of the
    output scale), or half precision's where any layer computes in float16/bfloat16."""
    dtypes = {getattr(layer, "compute_dtype", None)
              for layer in model._flatten_layers(include_self=False, recursive=True)}
    return max([EXACT_TOLERANCE] + [LOW_PRECISION_TOLERANCE[d] for d in dtypes
                                    if d in LOW_PRECISION_TOLERANCE])


def roundoff_sensitivity(model, batch, seed=PROBE_SEED):
    """How far `model`'s outputs move, relative to their scale, when its floating-point
    inputs move by the round-off a deep float32 computation accumulates (each value
    × (1 ± 2⁻²⁰), a few units in the last place; signs at random).

    A well-conditioned model moves by about that much (~1e-6); one that amplifies round-off
    (deep, with weights and statistics that do not match — untrained, randomly set) can
    move by its whole output scale, and then no float32 rewrite can be verified against it.
    """
    part = next(_chunks(batch, BATCH_SIZE))
    rng = np.random.default_rng(seed)
    nudged = []
    for array in part:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=array.shape)
            array = (array * (1 + sign * np.float32(2.0 ** -20))).astype(array.dtype)
        nudged.append(array)
    return compare(outputs_of(model, part), outputs_of(model, nudged)).relative


def verify(old_model, new_model, batch=None, *, exact, source=None):
    """Run both models on the batch; raise when an exact conversion does not agree.

    `source` names where the batch came from in the report (default: "probe" for the
    generated batch, "user" for a given one).
    """
    source = source or ("probe" if batch is None else "user")
    batch = probe_batch(old_model) if batch is None else batch
    fidelity = compare(outputs_of(old_model, batch), outputs_of(new_model, batch), source)
    tolerance = exact_tolerance(old_model)
    if exact and not fidelity.relative <= tolerance:
        sensitivity = roundoff_sensitivity(old_model, batch)
        if not sensitivity <= tolerance:
            raise VerificationError(
                "Cannot verify this conversion: the original model amplifies float32 "
                f"round-off — its own outputs move by {sensitivity:.2e} of their scale when "
                f"its inputs move by a few units of round-off (tolerance {tolerance:g}), so no "
                f"rewrite can be checked against it (this one differs by "
                f"{fidelity.relative:.2e}). Its weights or BatchNormalization statistics "
                "probably do not match its activations (untrained or randomly set); "
                "re-estimate the statistics on real samples (`normswap restat`) and "
                "convert again. Nothing was written.")
        raise VerificationError(
            "Verification failed: the converted model should reproduce the original at "
            f"inference but its outputs differ by up to {fidelity.max_abs:.3g} "
            f"({fidelity.relative:.2e} of the output scale, tolerance {tolerance:g}). "
            "Nothing was written; please report this model.")
    return fidelity
