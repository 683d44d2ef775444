"""`normswap MODEL --to TARGET -o OUT`: convert, verify, save."""

import json
from pathlib import Path

import click

from normswap.calibration.reconstruct import ReconstructOptions
from normswap.cli._common import (
    cli,
    group_norm_seed_option,
    load,
    model_source_options,
    stderr,
    stdout,
    step,
)
from normswap.defaults import CALIBRATION_SAMPLES
from normswap.errors import UsageError


def _groups(value):
    if value is None or value == "auto":
        return value
    try:
        groups = int(value)
    except ValueError:
        raise click.BadParameter(f"expected a positive integer or 'auto', got '{value}'")
    if groups < 1:
        raise click.BadParameter(f"expected a positive integer or 'auto', got {groups}")
    return groups


@cli.command("convert")
@click.argument("model")
@click.option("--to", "target", required=True, help="Target name (see `normswap targets`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the model (.keras or .h5).")
@click.option("--groups", callback=lambda c, p, v: _groups(v),
              help="Group count for groupnorm/evonorm: N or 'auto'.")
@click.option("--only", multiple=True, metavar="GLOB",
              help="Convert only BN layers whose name matches (repeatable).")
@click.option("--skip", multiple=True, metavar="GLOB",
              help="Keep BN layers whose name matches (repeatable).")
@click.option("--exact", is_flag=True,
              help="Require a conversion that reproduces the model at inference.")
@click.option("--ws", is_flag=True, help="Weight-standardize the convs that feed swapped sites.")
@click.option("--switch-init", type=click.Choice(["uniform", "bn", "exact"]),
              help="switchnorm: initial switch (default bn).")
@click.option("--calibrate", "calibrate_file", type=click.Path(),
              help="Unlabelled samples (.npz/.npy) to re-fit the new layers on.")
@click.option("--calibrate-key",
              help="Array name in the --calibrate .npz (default: its first array).")
@click.option("--calibrate-samples", type=click.IntRange(min=1), default=CALIBRATION_SAMPLES,
              show_default=True,
              help="Samples used for calibration.")
@click.option("--recalibrate-stats", is_flag=True,
              help="Re-estimate moving statistics on the samples (new domain).")
@click.option("--reconstruct", is_flag=True,
              help="Also fit each block's new layers and convs to the original by gradient "
                   "steps (block-wise reconstruction).")
@click.option("--reconstruct-steps", type=click.IntRange(min=0),
              default=ReconstructOptions.steps, show_default=True,
              help="Most gradient steps per block in reconstruction.")
@click.option("--distill-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fine-tune to match the original's outputs for N steps.")
@click.option("--distill-sites", is_flag=True,
              help="In distillation, also match each swapped layer's output to its BN's.")
@click.option("--eval", "eval_file", type=click.Path(),
              help="Held-out samples (.npz/.npy) to measure fidelity on; labels 'y' add accuracy.")
@click.option("--eval-key",
              help="Array name in the --eval .npz (default: 'x' if present, else its first array).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for choosing calibration samples.")
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--report-file", type=click.Path(dir_okay=False),
              help="Also write the report as JSON to this file (for normswap plot).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@model_source_options
@group_norm_seed_option
@click.option("--debug", is_flag=True, help="Show tracebacks and TensorFlow's own messages.")
def convert_command(model, target, output, groups, only, skip, exact, ws, switch_init,
                    calibrate_file, calibrate_key, calibrate_samples, recalibrate_stats,
                    reconstruct, reconstruct_steps, distill_steps, distill_sites, eval_file,
                    eval_key, seed, dry_run, as_json, report_file, force, weights,
                    custom_objects, unsafe, group_norm_seed, debug):
    """Convert MODEL (a .keras / .h5 file or keras:<Application>) and write it to OUTPUT."""
    import normswap
    from normswap.report import render, site_table

    normswap.get_target(target)  # an unknown target fails before any loading
    if not dry_run and not output:
        raise UsageError("Missing option '-o' / '--output' (or use --dry-run).")
    if report_file and not dry_run:
        from normswap.saving.paths import check_side_output, output_model_path

        check_side_output(report_file, "the report", protected=(
            model, output_model_path(output), calibrate_file, eval_file))
    options = {k: v for k, v in (("groups", groups), ("switch_init", switch_init)) if v is not None}
    fitting = {"recalibrate_stats": recalibrate_stats, "reconstruct": reconstruct,
               "distill_steps": distill_steps}
    if reconstruct:
        fitting["reconstruct_options"] = {"steps": reconstruct_steps, "seed": seed}
    data = _data_options(calibrate_file, calibrate_key, calibrate_samples, seed, eval_file,
                         eval_key, fitting)
    if distill_sites:
        data["distill_options"] = {"match_sites": True}
    with step(f"Loading {model}", as_json):
        loaded = load(model, weights, custom_objects, unsafe, group_norm_seed)
    if dry_run:
        plan = normswap.plan(loaded, target, only=only, skip=skip, exact=exact, ws=ws, **options)
        if as_json:
            click.echo(json.dumps(plan.to_dict(), indent=2, default=str))
        else:
            title = f"Plan: {loaded.name} → {plan.target.name} (dry run, nothing written)"
            stdout.print(site_table(plan.sites, title))
        return
    from normswap.saving import check_output_path

    protected = (model,) if not model.startswith("keras:") else ()
    check_output_path(output, force=force, protected=protected)
    labels = data.pop("labels")
    # The file is written while the verification runs, and renamed into place only once
    # it has passed (convert's `output=`).
    with step(f"Converting, verifying and saving {output}",
              as_json or distill_steps or reconstruct):
        result = normswap.convert(loaded, target, only=only, skip=skip, exact=exact, ws=ws,
                                  progress=not as_json and stderr.is_terminal, output=output,
                                  force=force, protected=protected, **data, **options)
    written = result.output
    accuracy = _accuracy(loaded, result.model, data.get("eval_data"), labels)
    payload = {**result.report.to_dict(), "output": str(written)}
    if accuracy:
        payload["accuracy"] = accuracy
    if report_file:
        Path(report_file).write_text(json.dumps(payload, indent=2, default=str))
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        render(result.report, stdout)
        if accuracy:
            stdout.print(f"Accuracy on {accuracy['samples']} --eval samples: "
                         f"{100 * accuracy['original']:.1f} % original, "
                         f"{100 * accuracy['converted']:.1f} % converted.", soft_wrap=True)
        stdout.print(f"Wrote {written}")


def _data_options(calibrate_file, calibrate_key, calibrate_samples, seed, eval_file, eval_key,
                  fitting):
    """Calibration / evaluation arrays and options for convert(), read from the CLI files."""
    from normswap.samples import has_array, load_array_file, subsample

    data = {"labels": None}
    if calibrate_file:
        samples = load_array_file(calibrate_file, calibrate_key, "--calibrate")
        data.update(calibration_data=subsample(samples, calibrate_samples, seed),
                    calibration_samples=calibrate_samples, **fitting)
    elif fitting["recalibrate_stats"] or fitting["reconstruct"] or fitting["distill_steps"]:
        raise UsageError("--recalibrate-stats, --reconstruct and --distill-steps need "
                         "--calibrate FILE.")
    if eval_file:
        key = eval_key or ("x" if has_array(eval_file, "x") else None)
        data["eval_data"] = load_array_file(eval_file, key, "--eval")
        if has_array(eval_file, "y"):
            data["labels"] = load_array_file(eval_file, "y", "--eval").ravel()
    return data


def _accuracy(original, converted, samples, labels):
    """Top-1 accuracy of both models on labelled --eval samples (classifiers only)."""
    if samples is None or labels is None or len(labels) != len(samples):
        return None
    from normswap.verify import is_classifier_output, outputs_of, top1_accuracy

    old, new = outputs_of(original, samples)[0], outputs_of(converted, samples)[0]
    if not is_classifier_output(old):
        return None
    return {"samples": int(len(labels)), "original": top1_accuracy(old, labels),
            "converted": top1_accuracy(new, labels)}
