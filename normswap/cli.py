"""The `normswap` command.

    normswap MODEL --to TARGET -o OUT [options]   convert and save
    normswap inspect MODEL                         the model's BN sites
    normswap targets                               what can be swapped in
    normswap demo [--to TARGET]                    the embedded example

Exit status: 0 on success, 2 for bad usage or an unreadable input, 1 for any other failure.
A failure prints one line on stderr; --debug shows the traceback.
"""

import contextlib
import json
import sys
import traceback
import warnings

import click
from rich.console import Console

from normswap.defaults import CALIBRATION_SAMPLES
from normswap.errors import NormswapError, UsageError

stderr = Console(stderr=True)
stdout = Console()
if not stdout.is_terminal:  # a pipe or a file: room for the report's columns
    stdout = Console(width=140)


class _DefaultToConvert(click.Group):
    """A group whose first argument, when not a subcommand, is the MODEL of `convert`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h",
                                                                      "--version"):
            args = ["convert"] + list(args)
        return super().parse_args(ctx, args)


@contextlib.contextmanager
def _step(message, quiet=False):
    """A spinner on stderr for a step that may take more than a second."""
    if quiet or not stderr.is_terminal:
        yield
        return
    with stderr.status(message):
        yield


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


@click.group(cls=_DefaultToConvert, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="normswap", message="normswap %(version)s")
def cli():
    """Swap the BatchNormalization layers of a trained Keras model for another
    normalization, carry the learned weights, verify, and save.

    \b
    normswap model.h5 --to groupnorm -o out.keras
    normswap inspect model.h5
    normswap targets
    normswap demo
    """


def _load(source, weights, custom_objects, unsafe=False):
    from normswap import saving

    objects = saving.load_custom_objects(custom_objects) if custom_objects else None
    return saving.load_model(source, weights=weights, custom_objects=objects,
                             safe_mode=not unsafe)


def _unsafe_option(command):
    """--unsafe: load a file holding Python code (Lambda layers), which is refused by default."""
    return click.option(
        "--unsafe", is_flag=True,
        help="Load a model file even if it holds Python code (Lambda layers), which runs "
             "while loading: only for files you trust.")(command)


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
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--weights", default="imagenet", show_default=True,
              help="For keras:<Application>: imagenet, none, or a weights file.")
@click.option("--custom-objects", type=click.Path(),
              help="A Python file defining the model's custom layers.")
@_unsafe_option
@click.option("--debug", is_flag=True, help="Show tracebacks and TensorFlow's own messages.")
def convert_command(model, target, output, groups, only, skip, exact, ws, switch_init,
                    calibrate_file, calibrate_key, calibrate_samples, recalibrate_stats,
                    distill_steps, distill_sites, eval_file, eval_key, seed, dry_run,
                    as_json, force, weights, custom_objects, unsafe, debug):
    """Convert MODEL (a .keras / .h5 file or keras:<Application>) and write it to OUTPUT."""
    import normswap
    from normswap.report import render, site_table

    normswap.get_target(target)  # an unknown target fails before any loading
    if not dry_run and not output:
        raise UsageError("Missing option '-o' / '--output' (or use --dry-run).")
    options = {k: v for k, v in (("groups", groups), ("switch_init", switch_init)) if v is not None}
    data = _data_options(calibrate_file, calibrate_key, calibrate_samples, seed, eval_file,
                         eval_key, recalibrate_stats, distill_steps)
    if distill_sites:
        data["distill_options"] = {"match_sites": True}
    with _step(f"Loading {model}", as_json):
        loaded = _load(model, weights, custom_objects, unsafe)
    if dry_run:
        plan = normswap.plan(loaded, target, only=only, skip=skip, exact=exact, ws=ws, **options)
        if as_json:
            click.echo(json.dumps(plan.to_dict(), indent=2, default=str))
        else:
            title = f"Plan: {loaded.name} → {plan.target.name} (dry run, nothing written)"
            stdout.print(site_table(plan.sites, title))
        return
    from normswap.saving import check_output_path, save_model

    protected = (model,) if not model.startswith("keras:") else ()
    check_output_path(output, force=force, protected=protected)
    labels = data.pop("labels")
    with _step("Converting and verifying", as_json or distill_steps):
        result = normswap.convert(loaded, target, only=only, skip=skip, exact=exact, ws=ws,
                                  progress=not as_json and stderr.is_terminal, **data, **options)
    accuracy = _accuracy(loaded, result.model, data.get("eval_data"), labels)
    with _step(f"Saving {output}", as_json):
        written = save_model(result.model, output, force=force, protected=protected)
    if as_json:
        payload = {**result.report.to_dict(), "output": str(written)}
        if accuracy:
            payload["accuracy"] = accuracy
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        render(result.report, stdout)
        if accuracy:
            stdout.print(f"Accuracy on {accuracy['samples']} --eval samples: "
                         f"{100 * accuracy['original']:.1f} % original, "
                         f"{100 * accuracy['converted']:.1f} % converted.", soft_wrap=True)
        stdout.print(f"Wrote {written}")


def _data_options(calibrate_file, calibrate_key, calibrate_samples, seed, eval_file, eval_key,
                  recalibrate_stats, distill_steps):
    """Calibration / evaluation arrays and options for convert(), read from the CLI files."""
    from normswap.samples import load_array_file, subsample

    data = {"labels": None}
    if calibrate_file:
        samples = load_array_file(calibrate_file, calibrate_key, "--calibrate")
        data.update(calibration_data=subsample(samples, calibrate_samples, seed),
                    calibration_samples=calibrate_samples,
                    recalibrate_stats=recalibrate_stats, distill_steps=distill_steps)
    elif recalibrate_stats or distill_steps:
        raise UsageError("--recalibrate-stats and --distill-steps need --calibrate FILE.")
    if eval_file:
        key = eval_key or ("x" if _has_array(eval_file, "x") else None)
        data["eval_data"] = load_array_file(eval_file, key, "--eval")
        if _has_array(eval_file, "y"):
            data["labels"] = load_array_file(eval_file, "y", "--eval").ravel()
    return data


def _has_array(path, name):
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return not isinstance(data, np.ndarray) and name in data.files
    except (ValueError, OSError):
        return False


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


@cli.command("inspect")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object with a `sites` list.")
@click.option("--weights", default="imagenet", show_default=True, help="For keras:<Application>.")
@click.option("--custom-objects", type=click.Path(), help="A Python file defining custom layers.")
@_unsafe_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def inspect_command(model, as_json, weights, custom_objects, unsafe, debug):
    """List the BatchNormalization sites of MODEL and their neighbourhoods."""
    from rich.table import Table

    from normswap.graph import find_sites

    with _step(f"Loading {model}", as_json):
        loaded = _load(model, weights, custom_objects, unsafe)
    sites = find_sites(loaded)
    if as_json:
        payload = {"model": loaded.name, "params": loaded.count_params(),
                   "sites": [s.to_dict() for s in sites]}
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    table = Table(title=f"{loaded.name}: {len(sites)} BatchNormalization sites")
    for column in ("BN site", "shape", "axis", "ε", "producer", "feeds", "then"):
        table.add_column(column, overflow="fold")
    for s in sites:
        producer = "-" if s.producer is None else f"{s.producer.name} ({s.producer_kind})"
        if s.producer is not None and not s.producer_exclusive:
            producer += " [yellow]shared[/yellow]"
        table.add_row(s.name, str(tuple(s.input_shape[1:])), str(s.axis), f"{s.epsilon:g}",
                      producer, ", ".join(c.name for c in s.consumers) or "output",
                      "relu" if s.relu is not None else "")
    stdout.print(table)


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the targets as JSON.")
def targets_command(as_json):
    """List the targets normswap can swap in."""
    from rich.table import Table

    from normswap.targets import all_targets

    targets = all_targets()
    if as_json:
        click.echo(json.dumps({n: {"exact": t.exact, "summary": t.summary,
                                   "options": t.options} for n, t in targets.items()},
                              indent=2, default=str))
        return
    table = Table(title="normswap targets")
    for column in ("target", "exact", "what"):
        table.add_column(column)
    for name, target in targets.items():
        table.add_row(name, "yes" if target.exact else "no", target.summary)
    stdout.print(table)


@cli.command("demo")
@click.option("--to", "target", default="groupnorm", show_default=True,
              help="Target to convert the demo model to.")
@click.option("--no-calibrate", is_flag=True, help="Only carry the BN's weights; skip calibration.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def demo_command(target, no_calibrate, as_json, debug):
    """Convert the bundled MNIST CNN and show its accuracy before and after."""
    from normswap.demo import run_demo

    with _step(f"Converting the demo CNN to {target}", as_json):
        run_demo(target, calibrate=not no_calibrate, as_json=as_json, console=stdout)


def main(argv=None):
    """Entry point: run the command, turn every failure into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]
    debug = "--debug" in argv
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
        return _run(argv, debug)


def _run(argv, debug):
    try:
        cli.main(args=argv, prog_name="normswap", standalone_mode=False)
    except click.exceptions.Abort:
        stderr.print("normswap: aborted", highlight=False)
        return 130
    except click.ClickException as error:
        _fail(error.format_message(), 2, debug)
        return 2
    except NormswapError as error:
        _fail(str(error), error.exit_code, debug)
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - the last line of defence for users
        _fail(f"unexpected {type(error).__name__}: {error} (rerun with --debug for details)",
              1, debug)
        return 1
    return 0


def _fail(message, code, debug):
    if debug:
        traceback.print_exc()
    first_line = " ".join(str(message).split("\n")[0].split())
    print(f"normswap: error: {first_line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
