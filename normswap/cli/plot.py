"""`normswap plot MODEL -o out.png [--report FILE]`: SwitchNorm shares and site fidelity."""

import click

from normswap.cli._common import cli, load, model_source_options, stdout, step


@cli.command("plot")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The picture to write (.png, .svg or .pdf).")
@click.option("--report", "report_file", type=click.Path(),
              help="A conversion's report (JSON from --json or --report-file): per-site "
                   "fidelity.")
@model_source_options
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def plot_command(model, output, report_file, weights, custom_objects, unsafe, debug):
    """Picture MODEL: SwitchNormalization's learned IN/LN/BN shares, and with --report the
    R² of each converted site before and after calibration. Needs matplotlib
    (pip install 'normswap[plot]')."""
    from normswap.pictures import pyplot
    from normswap.pictures.plots import plot, read_report
    from normswap.saving.paths import check_side_output

    pyplot()  # a missing matplotlib fails before anything is loaded
    check_side_output(output, "the picture", protected=(model, report_file))
    report = read_report(report_file) if report_file else None
    with step(f"Loading {model}"):
        loaded = load(model, weights, custom_objects, unsafe)
    plot(loaded, output, report)
    stdout.print(f"Wrote {output}")
