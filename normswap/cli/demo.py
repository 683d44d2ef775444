"""`normswap demo`: the embedded example, converted."""


import click

from normswap.cli._common import cli, stdout, step


@cli.command("demo")
@click.option("--to", "target", default="groupnorm", show_default=True,
              help="Target to convert the demo model to.")
@click.option("--no-calibrate", is_flag=True, help="Only carry the BN's weights; skip calibration.")
@click.option("--no-reconstruct", is_flag=True,
              help="Stop after calibration; skip block-wise reconstruction.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def demo_command(target, no_calibrate, no_reconstruct, as_json, debug):
    """Convert the bundled MNIST CNN and show its accuracy before and after."""
    from normswap.demo import run_demo

    with step(f"Converting the demo CNN to {target}", as_json):
        run_demo(target, calibrate=not no_calibrate, reconstruct=not no_reconstruct,
                 as_json=as_json, console=stdout)
