"""`normswap restat MODEL --data FILE -o OUT`: precise population statistics (PreciseBN)."""

import json

import click

from normswap.cli._common import cli, load, model_source_options, stdout, step
from normswap.defaults import BATCH_SIZE
from normswap.errors import NothingToConvertError


@cli.command("restat")
@click.argument("model")
@click.option("--data", "data_file", type=click.Path(), required=True,
              help="Unlabelled samples (.npz/.npy) shaped and scaled as the model's input.")
@click.option("--data-key", help="Array name in the --data .npz (default: 'x' if present, "
                                  "else its first array).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Where to write the model (.keras or .h5).")
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE,
              show_default=True, help="Samples per batch: use the training batch size.")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples.")
@click.option("--only", multiple=True, metavar="GLOB",
              help="Re-estimate only layers whose name matches (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@model_source_options
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def restat_command(model, data_file, data_key, output, batch_size, samples, only, as_json,
                   force, weights, custom_objects, unsafe, debug):
    """Re-estimate the statistics of MODEL's batch-dependent layers on --data and save.

    Every BatchNormalization, BatchRenormalization, SwitchNormalization,
    BatchLayerNormalization and EvoNormB0 gets the true average of its statistics over the
    data (weights frozen) instead of the moving average training left: run it once after
    fine-tuning at a small batch size, before deploying.
    """
    from normswap.calibration.statistics import recompute_statistics
    from normswap.samples import has_array, load_array_file
    from normswap.saving import check_output_path, save_model

    key = data_key or ("x" if has_array(data_file, "x") else None)
    samples_array = load_array_file(data_file, key, "--data")
    protected = (model,) if not model.startswith("keras:") else ()
    check_output_path(output, force=force, protected=protected)
    with step(f"Loading {model}", as_json):
        loaded = load(model, weights, custom_objects, unsafe)
    with step("Re-estimating statistics", as_json):
        summary = recompute_statistics(loaded, samples_array, batch_size=batch_size,
                                       samples=samples, layers=list(only) or None)
    if not summary["layers"]:
        raise NothingToConvertError(_nothing_estimated(loaded, only, summary["left_alone"]))
    with step(f"Saving {output}", as_json):
        written = save_model(loaded, output, force=force, protected=protected)
    if as_json:
        click.echo(json.dumps({**summary, "output": str(written)}, indent=2))
        return
    stdout.print(f"Re-estimated {len(summary['layers'])} layers on {summary['samples']} "
                 f"samples in {summary['batches']} batches.", soft_wrap=True)
    for name, reason in summary["left_alone"].items():
        stdout.print(f"  left '{name}' as it was: {reason}", soft_wrap=True)
    stdout.print(f"Wrote {written}")


def _nothing_estimated(model, only, left_alone):
    """Why no layer was re-estimated, for a one-line error (nothing is written)."""
    if left_alone:
        reasons = "; ".join(f"'{name}': {why}" for name, why in left_alone.items())
        return (f"Nothing to re-estimate in '{model.name}': every batch-dependent layer "
                f"selected is left as it was ({reasons}). Nothing was written.")
    from normswap.calibration.statistics import BATCH_LAYERS

    names = [kind.__name__ for kind in BATCH_LAYERS]
    selection = f" matching {', '.join(only)}" if only else ""
    return (f"No {', '.join(names[:-1])} or {names[-1]}{selection} in '{model.name}': "
            "nothing to re-estimate. Nothing was written.")
