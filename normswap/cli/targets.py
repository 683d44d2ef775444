"""`normswap targets`: what can be swapped in."""

import json

import click

from normswap.cli._common import cli, stdout


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
