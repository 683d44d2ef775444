"""Blocks of a graph: the spans between tensors every path goes through.

Block-wise reconstruction fits the swapped layers of one block at a time to the original
model's output at the block's end. A block ends at a *cut*: a tensor that is, at that point
of the topological order, the only one still to be read — all paths of the graph pass
through it (the output of a residual stage's Add, a plain chain's every layer). It starts
where the previous block ended (the model's inputs for the first). A block extends past a
cut through following parameter-free element-wise layers (the ReLU after a residual Add),
so that it is fitted to what the next block reads. Blocks are computed per graph: a nested
model's calls form blocks of its own graph.

A span holding more than `max_sites` swapped sites (a graph that never narrows to one
tensor, such as a U-Net's long skips) is split into one block per site: the site's
producer, the site and an absorbed ReLU.
"""

import collections
import dataclasses

import keras

from normswap.replay import model_inputs, model_nodes, model_outputs

MAX_SITES = 8
_ELEMENTWISE = (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU,
                keras.layers.ELU, keras.layers.PReLU)


@dataclasses.dataclass
class Block:
    """Calls `nodes` (topological order) from tensors `starts` to tensor `end`, holding the
    swapped sites `sites` (their BN layers)."""

    nodes: list
    starts: list  # KerasTensors read from outside the block
    end: object  # the KerasTensor the block produces
    sites: list

    @property
    def name(self):
        return self.end._keras_history.operation.name


def _reads(nodes):
    produced = {id(t) for n in nodes for t in n.outputs}
    starts, seen = [], set()
    for node in nodes:
        for tensor in node.input_tensors:
            if id(tensor) not in produced and id(tensor) not in seen:
                seen.add(id(tensor))
                starts.append(tensor)
    return starts


def _extends(node, tensor):
    """Whether `node` is a parameter-free element-wise layer reading only `tensor`."""
    return (isinstance(node.operation, _ELEMENTWISE) and not node.operation.weights
            and [id(t) for t in node.input_tensors] == [id(tensor)])


def find_blocks(model, site_ids, max_sites=MAX_SITES):
    """The blocks of `model`'s own graph (not its nested models') that hold at least one
    of the BN layers whose ids are in `site_ids`."""
    nodes = model_nodes(model)
    uses = collections.Counter(id(t) for n in nodes for t in n.input_tensors)
    uses.update(id(t) for t in model_outputs(model))
    frontier = {id(t): t for t in model_inputs(model)}
    blocks, current = [], []
    for index, node in enumerate(nodes):
        current.append(node)
        for tensor in node.input_tensors:
            uses[id(tensor)] -= 1
            if uses[id(tensor)] == 0:
                frontier.pop(id(tensor), None)
        frontier.update({id(t): t for t in node.outputs if uses[id(t)]})
        if len(frontier) != 1:
            continue
        (cut,) = frontier.values()
        following = nodes[index + 1] if index + 1 < len(nodes) else None
        if following is not None and _extends(following, cut):
            continue
        if any(id(n.operation) in site_ids for n in current):
            blocks.extend(_close(current, cut, site_ids, max_sites))
            current = []  # a span without sites joins the next block (a site's conv)
    return blocks


def _close(nodes, end, site_ids, max_sites):
    sites = [n.operation for n in nodes if id(n.operation) in site_ids]
    if len(sites) <= max_sites:
        return [Block(nodes, _reads(nodes), end, sites)]
    return [block for block in (_site_block(nodes, site) for site in sites) if block]


def _site_block(nodes, site):
    """The one-site block of `site`: its producer (when it reads only its output), the
    site, and a following element-wise layer reading only the site."""
    position = next(i for i, n in enumerate(nodes) if n.operation is site)
    node = nodes[position]
    chosen = [node]
    producer = node.input_tensors[0]._keras_history
    previous = [n for n in nodes[:position] if any(o is node.input_tensors[0] for o in n.outputs)]
    if previous and len(producer.operation._inbound_nodes) == 1:
        chosen.insert(0, previous[0])
    end = node.outputs[0]
    after = [n for n in nodes[position + 1:] if _extends(n, end)]
    readers = [n for n in nodes if any(t is end for t in n.input_tensors)]
    if after and readers == after[:1]:
        chosen.append(after[0])
        end = after[0].outputs[0]
    return Block(chosen, _reads(chosen), end, [site])
