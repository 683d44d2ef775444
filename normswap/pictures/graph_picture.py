"""`normswap inspect MODEL --graph out.dot|.svg|.png`: the layer graph, BN sites highlighted.

The graph is `graph.build_graph`'s (every call, nested models included, each model's calls
in a cluster of their own). BN sites are filled; with a plan (`--to TARGET`) each site's
label says what it becomes, or why it is kept. `.dot` is written as text (Graphviz's
language); `.svg`/`.png` are rendered by Graphviz's `dot` when it is installed, else drawn
with matplotlib (`pip install 'normswap[plot]'`), else the call fails with one line.
"""

import shutil
import subprocess
from pathlib import Path

import keras

from normswap.errors import UsageError

SITE_COLOUR = "#f4a261"
SWAP_COLOUR = "#2a9d8f"
KEPT_COLOUR = "#e9c46a"
FORMATS = (".dot", ".svg", ".png")


def _quoted(text):
    """A DOT string; labels keep their `\\n` line breaks."""
    return '"' + str(text).replace('"', '\\"') + '"'


def _site_labels(plan):
    """{id(BN layer): (label suffix, colour)} from a plan, or {} without one."""
    if plan is None:
        return {}
    labels = {}
    for site_plan in plan.sites:
        if site_plan.target is None:
            labels[id(site_plan.site.layer)] = (f"kept: {site_plan.reason}", KEPT_COLOUR)
        else:
            labels[id(site_plan.site.layer)] = (f"→ {site_plan.target.name}", SWAP_COLOUR)
    return labels


def node_style(data, labels):
    """(label, fill colour or None) of one graph node."""
    layer = data["layer"]
    label = f"{layer.name}\\n{type(layer).__name__}"
    if isinstance(layer, keras.layers.BatchNormalization):
        suffix, colour = labels.get(id(layer), ("BN site", SITE_COLOUR))
        return f"{label}\\n{suffix}", colour
    return label, None


def to_dot(graph, plan=None, title="model"):
    """The graph in Graphviz's DOT language: one cluster per (nested) model scope."""
    labels = _site_labels(plan)
    lines = [f"digraph {_quoted(title)} {{", "  rankdir=TB;",
             '  node [shape=box, fontname="Helvetica", fontsize=10];']
    scopes = {}
    for key, data in graph.nodes(data=True):
        scopes.setdefault(data["scope"], []).append((key, data))
    for index, (scope, nodes) in enumerate(sorted(scopes.items())):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f"    label={_quoted('/'.join(scope))};")
        for key, data in nodes:
            label, colour = node_style(data, labels)
            fill = f', style=filled, fillcolor="{colour}"' if colour else ""
            lines.append(f"    n{key} [label={_quoted(label)}{fill}];")
        lines.append("  }")
    lines.extend(f"  n{a} -> n{b};" for a, b in graph.edges())
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(graph, path, plan=None, title="model"):
    """Write the picture of `graph` to `path` (.dot, .svg or .png); returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: --graph writes .dot, .svg or .png, not '{suffix or path.name}'")
    dot = to_dot(graph, plan, title)
    if suffix == ".dot":
        path.write_text(dot)
    elif shutil.which("dot"):
        subprocess.run(["dot", f"-T{suffix[1:]}", "-o", str(path)], input=dot.encode(),
                       check=True, capture_output=True)
    else:
        _draw_with_matplotlib(graph, path, plan, title)
    return path


def _draw_with_matplotlib(graph, path, plan, title):
    import networkx as nx

    from normswap.pictures import pyplot

    plt = pyplot()
    labels = _site_labels(plan)
    layout = nx.multipartite_layout(_with_layers(graph), subset_key="layer_index",
                                    align="horizontal")
    layout = {key: (x, -y) for key, (x, y) in layout.items()}  # inputs at the top
    styles = {key: node_style(data, labels) for key, data in graph.nodes(data=True)}
    figure, axes = plt.subplots(figsize=(8, max(4, 0.35 * len(graph))))
    nx.draw_networkx_edges(graph, layout, ax=axes, arrows=True, alpha=0.4)
    nx.draw_networkx_nodes(graph, layout, ax=axes, node_size=60,
                           node_color=[styles[k][1] or "#cccccc" for k in graph.nodes])
    nx.draw_networkx_labels(graph, layout, ax=axes, font_size=6,
                            labels={k: styles[k][0].replace("\\n", " ") for k in graph.nodes})
    axes.set_title(title)
    axes.axis("off")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _with_layers(graph):
    """A copy whose nodes carry their depth (longest path from a source), for the layout."""
    import networkx as nx

    copy = graph.copy()
    depth = {}
    for key in nx.topological_sort(copy):
        parents = list(copy.predecessors(key))
        depth[key] = 1 + max((depth[p] for p in parents), default=-1)
    nx.set_node_attributes(copy, depth, "layer_index")
    return copy
