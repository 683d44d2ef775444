"""The public entry points: plan, convert and swap.

One conversion, as data flowing through: load → plan (graph.py, plan.py) → replace (each
target) → rebuild (rewrite.py) → calibrate / distill (calibration/) → verify → report, and
with `output=` the save, overlapped with the verification (saving/atomic.py
`save_verified`: the file is renamed into place only once verification has passed).
"""

import dataclasses
import functools
import os

import keras

from normswap.calibration.reconstruct import ReconstructOptions
from normswap.defaults import CALIBRATION_SAMPLES
from normswap.errors import NothingToConvertError, UsageError
from normswap.plan import make_plan
from normswap.replay import IDENTITY
from normswap.report import Report, build_report
from normswap.rewrite import rebuild
from normswap.samples import augmented, input_batches, samples_in_common
from normswap.verify import verify as verify_models
from normswap.ws import ws_applied_note, ws_counterpart


@dataclasses.dataclass
class Conversion:
    """What `convert` returns: the new model and the report of what changed."""

    model: keras.Model
    report: Report
    output: os.PathLike = None  # the file written, when `convert` was given `output=`


def _as_model(model, custom_objects=None, safe_mode=True):
    if isinstance(model, keras.Model):
        return model
    from normswap.saving import load_model  # a path or keras:<Name>

    return load_model(model, custom_objects=custom_objects, safe_mode=safe_mode)


def plan(model, target, *, only=None, skip=None, exact=False, ws=False, custom_objects=None,
         safe_mode=True, **options):
    """The plan of a conversion (per site: target, parameters, or why skipped), no model built."""
    return make_plan(_as_model(model, custom_objects, safe_mode), target, only=only, skip=skip,
                     exact=exact, ws=ws, **options)


def _replace(site_plan):
    """The site's Replacement, with the producer made Weight-Standardized where planned."""
    site = site_plan.site
    replacement = site_plan.target.replace(site, site_plan.params)
    if not site_plan.ws:
        return replacement
    layers = dict(replacement.layers)
    layers[site.source] = ws_counterpart(site, layers.get(site.source))
    note = ws_applied_note(site, layers[site.source])
    return dataclasses.replace(replacement, layers=layers, notes=replacement.notes + [note])


def _check_selection(model, the_plan):
    if not the_plan.sites:
        raise NothingToConvertError(
            f"No BatchNormalization found in '{model.name}': nothing to convert.")
    if not the_plan.swapped:
        raise NothingToConvertError(
            f"None of the {len(the_plan.sites)} BatchNormalization sites of "
            f"'{model.name}' was selected or convertible: nothing to convert.")


def convert(model, target, *, only=None, skip=None, exact=False, ws=False,
            calibration_data=None, calibration_samples=CALIBRATION_SAMPLES,
            recalibrate_stats=False, reconstruct=False, reconstruct_options=None,
            distill_steps=0, distill_options=None, eval_data=None, probe=None, progress=False,
            custom_objects=None, safe_mode=True, output=None, force=False, protected=(),
            **options):
    """Swap every selected BatchNormalization of `model` for `target`, carry, verify.

    Args:
        model: a keras.Model (left untouched), or a path / `keras:<Name>` to load
            (with `custom_objects` and `safe_mode` as in `normswap.load_model`).
        target: a target name (`normswap.all_targets()`) or a layer class.
        only, skip: layer-name glob patterns selecting the BN sites.
        exact: require a conversion that reproduces the model at inference.
        ws: make the convs that feed swapped sites Weight-Standardized.
        calibration_data: unlabelled input samples (array, tuple of arrays, tf.data, or an
            iterable of batches); the swapped layers' γ/β are re-fitted on them (at most
            `calibration_samples` samples).
        recalibrate_stats: with calibration data, also re-estimate the moving statistics
            of batch-dependent replacements on the samples.
        reconstruct: with calibration data, also fit each block's new layers and the convs
            that feed them to the original's output at the block's end, by gradient steps
            (block-wise reconstruction; `reconstruct_options`: see
            calibration/reconstruct.py `ReconstructOptions`, plus `augment`: mirror and
            shift image samples, 8× as many, default True).
        distill_steps: fine-tune the new model this many steps to match the original's
            outputs on the calibration samples (`distill_options`: see calibration/distill.py).
            An exact conversion already reproduces them and is left as it is (the report
            says distillation was skipped).
        eval_data: samples the end-to-end fidelity is measured on (default: the calibration
            samples, else a generated probe batch; the report says which, and how many of
            the eval samples were calibration samples too).
        probe: the batch exact conversions are verified on (default: generated).
        output: also save the new model there (`.keras` or `.h5`), atomically, as
            `normswap.save_model` does; the file is written while the verification runs
            and renamed into place only once it has passed, so a failed verification
            leaves nothing at `output`. `force`: overwrite an existing file; `protected`:
            paths never to write over (a `model` given as a path always is).
        **options: target options, e.g. groups=8, switch_init="uniform".

    Returns a `Conversion` with `.model`, `.report` and `.output` (the path written, or
    None). Raises NothingToConvertError when there is nothing to convert and
    VerificationError when an exact conversion does not reproduce the original (nothing
    is written); with `output`, UsageError for an output path that cannot be written
    (checked before any work) and SaveError when writing fails.
    """
    if output is not None:
        from normswap.saving import check_output_path

        if isinstance(model, (str, os.PathLike)) and not str(model).startswith("keras:"):
            protected = (*protected, model)
        check_output_path(output, force=force, protected=protected)
    model = _as_model(model, custom_objects, safe_mode)
    the_plan = make_plan(model, target, only=only, skip=skip, exact=exact, ws=ws, **options)
    _check_selection(model, the_plan)
    calibration_batches = eval_batches = None
    if calibration_data is not None:
        calibration_batches = input_batches(model, calibration_data, samples=calibration_samples,
                                            what="calibration data")
    elif distill_steps or recalibrate_stats or reconstruct:
        raise UsageError("Distillation, reconstruction and statistics re-estimation need "
                         "calibration_data.")
    if eval_data is not None:
        eval_batches = input_batches(model, eval_data, what="evaluation data")
    replacements = {id(sp.site.layer): _replace(sp) for sp in the_plan.swapped}
    edits = {id(old): new for r in replacements.values() for old, new in r.layers.items()}
    new_model, layer_map = rebuild(model, edits)
    calibration = fits = distillation = None
    # Exact to the end: distillation, which alone could change that, skips exact ones.
    is_exact = all(sp.exact for sp in the_plan.swapped) and not recalibrate_stats
    if calibration_batches is not None:
        from normswap.calibration.calibrate import calibrate

        restated = _recompute_statistics(new_model, the_plan, layer_map,
                                         calibration_batches) if recalibrate_stats else []
        options = _reconstruct_options(reconstruct, reconstruct_options)
        fit_batches = calibration_batches
        if options is not None and options.pop("augment", True):
            fit_batches = augmented(calibration_batches)
        calibration, fits = calibrate(
            model, layer_map, the_plan.swapped, fit_batches, progress=_progress(progress),
            reconstruct=None if options is None else ReconstructOptions(**options))
        calibration["recalibrated_stats"] = restated
        calibration["samples_given"] = int(sum(len(b[0]) for b in calibration_batches))
        if distill_steps and not is_exact:
            distillation = _distill(model, new_model, the_plan, layer_map, calibration_batches,
                                    distill_steps, progress, dict(distill_options or {}))
        elif distill_steps:
            distillation = {"steps": 0, "skipped": DISTILLATION_OF_EXACT}
    samples = eval_batches or calibration_batches
    if is_exact or not samples:
        verification = functools.partial(verify_models, model, new_model, probe,
                                         exact=is_exact)
    else:  # an inexact conversion is measured on real samples, not on the probe as well
        verification = functools.partial(verify_models, model, new_model, samples,
                                         exact=False,
                                         source="eval" if eval_batches else "calibration")
    written = None
    if output is None:
        fidelity = verification()
    else:
        from normswap.saving import save_verified

        written, fidelity = save_verified(new_model, output, verification, force=force,
                                          protected=protected)
    if fidelity.source == "eval" and calibration_batches:
        fidelity = dataclasses.replace(fidelity, also_calibration=samples_in_common(
            calibration_batches, eval_batches))
    report = build_report(model, new_model, the_plan, replacements, exact=is_exact,
                          fidelity=fidelity, fits=fits, calibration=calibration,
                          distillation=distillation)
    return Conversion(model=new_model, report=report, output=written)


DISTILLATION_OF_EXACT = ("the conversion is exact: the new model already reproduces the "
                         "original, and training it towards its outputs could only move it "
                         "away")


def _reconstruct_options(reconstruct, options):
    if not reconstruct:
        if options:
            raise UsageError("reconstruct_options are given but reconstruct is False.")
        return None
    options = dict(options or {})
    known = set(ReconstructOptions.__dataclass_fields__) | {"augment"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"Unknown reconstruct option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}.")
    return options


def _progress(enabled):
    """A callback that shows reconstruction's blocks on stderr, when asked for."""
    if not enabled:
        return None
    from rich.console import Console

    console = Console(stderr=True)
    return lambda block, done: console.print(f"  reconstructed block {done}: {block}",
                                             highlight=False)


def _recompute_statistics(new_model, the_plan, layer_map, batches):
    """Population statistics of the swapped layers re-estimated on the samples (a new
    domain); returns the names of the layers re-estimated."""
    from normswap.calibration.statistics import recompute_statistics

    replacements = [layer_map[id(sp.site.layer)] for sp in the_plan.swapped]
    layers = [layer for layer in replacements if layer is not IDENTITY]
    return recompute_statistics(new_model, batches, layers=layers)["layers"]


def _distill(model, new_model, the_plan, layer_map, batches, steps, progress, options):
    """Distillation, with the swapped sites' outputs matched too if `match_sites=True`."""
    from normswap.calibration.distill import distill

    pairs, unmatched = [], 0
    if options.pop("match_sites", False):
        pairs, unmatched = site_pairs(the_plan, layer_map)
    summary = distill(model, new_model, batches, steps, progress=progress, site_pairs=pairs,
                      **options)
    if unmatched:
        summary["sites_not_matched"] = unmatched
    return summary


def site_pairs(the_plan, layer_map):
    """(original tensor, new tensor) for every inexact swapped site of the outermost graph.

    The original side is the BN's output, or its ReLU's where the new layer absorbed that
    ReLU. Sites inside nested models have no tensor in the outer graphs; they are counted.
    """
    pairs, unmatched = [], 0
    for site_plan in the_plan.swapped:
        site, new = site_plan.site, layer_map.get(id(site_plan.site.layer))
        if site_plan.exact or new is IDENTITY:
            continue
        if len(site.path) != 2:
            unmatched += 1
            continue
        absorbed = site.relu is not None and layer_map.get(id(site.relu)) is IDENTITY
        pairs.append(((site.relu if absorbed else site.layer).output, new.output))
    return pairs, unmatched


def swap(model, target, **options):
    """`convert(...)` returning only the new model (see `convert` for the arguments)."""
    return convert(model, target, **options).model
