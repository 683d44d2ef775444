"""`normswap inspect MODEL`: the BatchNormalization sites and their neighbourhoods."""

import json

import click

from normswap.cli._common import (
    cli,
    group_norm_seed_option,
    load,
    model_source_options,
    stdout,
    step,
)


@cli.command("inspect")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object with a `sites` list.")
@click.option("--graph", "graph_file", type=click.Path(dir_okay=False),
              help="Also draw the layer graph, BN sites highlighted (.dot, .svg or .png).")
@click.option("--to", "target", help="With --graph: label each site with its planned fate.")
@model_source_options
@group_norm_seed_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def inspect_command(model, as_json, graph_file, target, weights, custom_objects, unsafe,
                    group_norm_seed, debug):
    """List the BatchNormalization sites of MODEL and their neighbourhoods."""
    from rich.table import Table

    from normswap.graph import build_graph, find_sites
    from normswap.saving import load_notes

    if target and not graph_file:
        raise click.UsageError("--to goes with --graph (to convert: normswap MODEL --to ...)")
    if graph_file:
        from normswap.saving.paths import check_side_output

        check_side_output(graph_file, "the graph", protected=(model,))
    with step(f"Loading {model}", as_json):
        loaded = load(model, weights, custom_objects, unsafe, group_norm_seed)
    graph = build_graph(loaded)
    sites = find_sites(loaded, graph)
    if graph_file:
        _draw(loaded, graph, graph_file, target)
    notes = load_notes(loaded)
    others = other_normalizations(loaded)
    if as_json:
        payload = {"model": loaded.name, "params": loaded.count_params(),
                   "sites": [s.to_dict() for s in sites],
                   "other_normalizations": others,
                   "load_notes": [n.to_dict() for n in notes]}
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
    if others:
        stdout.print("Other normalization layers: " + ", ".join(
            f"{count} {name}" for name, count in others.items()), soft_wrap=True)
    for note in notes:  # Keras 2 library layers the loader mapped (saving/seeds/)
        stdout.print(str(note), highlight=False, markup=False, soft_wrap=True)
    if graph_file:
        stdout.print(f"Wrote the graph to {graph_file}")


def other_normalizations(model):
    """{class name: count} of the model's layers of the classes normswap's targets write
    (nested models included), BN sites excluded: what a converted model holds instead."""
    import normswap
    from normswap.graph import is_site_layer

    kinds = tuple({cls for target in normswap.all_targets().values()
                   for cls in target.layer_classes})
    counts = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, kinds) and not is_site_layer(layer):
            name = type(layer).__name__
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _draw(model, graph, path, target):
    from normswap.pictures.graph_picture import write_graph
    from normswap.plan import make_plan

    plan = make_plan(model, target) if target else None
    write_graph(graph, path, plan, title=model.name)
