"""Model -> networkx graph of layer calls, and the BatchNormalization sites in it.

Every call inside a Functional or Sequential model — of a layer, a nested model or a raw
keras.ops operation — is one graph node (keyed by the Keras `Node` object's id), found by
replaying the model (`replay.Replay`). Nested models are walked at any depth: the call of a
nested model is a node of its parent's graph, and the nested model's own calls are nodes
too, tagged with the nested model's path. Edges follow tensors inside one model's graph.

For every BatchNormalization layer the walk yields one `BNSite` that knows its producer (the
layer whose output it normalizes), whether that producer feeds anything else, its consumers,
and a ReLU that only it feeds (which a TLU can absorb).

A custom layer (a `keras.layers.Layer` subclass, not a model) may hold BatchNormalization
layers that its own Python `call` runs, as KerasHub's MobileNet and EfficientNet blocks do.
Those calls are not graph nodes, so normswap cannot rewrite them; each such BN is still a
site, marked with the layer it sits `inside`, which the plan skips with that reason.
"""

import dataclasses

import keras
import networkx as nx

from normswap.errors import UnsupportedModelError, UsageError
from normswap.layers import (
    Keras2BatchLayerNormalization,
    Keras2GroupNormalization,
    Keras2InstanceNormalization,
    Keras2SwitchNormalization,
)
from normswap.replay import Replay, call_values, is_graph_model, model_inputs, model_outputs

RELU_NAMES = ("relu",)
GLOBAL_POOLING = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                  keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
                  keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)


@dataclasses.dataclass
class BNSite:
    """One BatchNormalization layer of a model and its neighbourhood."""

    layer: keras.layers.BatchNormalization
    path: tuple  # model names from the outermost model down, then the layer's name
    axis: int  # non-negative channel axis
    rank: int
    channels: int
    input_shape: tuple
    calls: int  # how many call sites the layer has (a shared layer has several)
    producer: object = None  # the layer whose output the BN normalizes, if one call
    producer_input_shape: tuple = None
    producer_exclusive: bool = False  # producer called once, its output feeds only this BN
    consumers: list = dataclasses.field(default_factory=list)
    relu: object = None  # a ReLU that only this BN feeds, called once
    pooled: bool = False  # the output (through that ReLU) feeds a global pooling directly
    # The layer that computes the BN's input before any element-wise layers (activations,
    # dropout, casts) — the conv Weight Standardization belongs to — the element-wise
    # layers passed on the way, and whether nothing else reads its output.
    source: object = None
    source_input_shape: tuple = None
    source_path: tuple = ()
    source_exclusive: bool = False
    inside: object = None  # the custom layer whose Python code calls this BN (out of reach)

    @property
    def name(self):
        """The BN's path below the outermost model ("block1_bn", "resnet50/conv1_bn")."""
        return "/".join(self.path[1:])

    @property
    def epsilon(self):
        return float(self.layer.epsilon)

    @property
    def center(self):
        return bool(getattr(self.layer, "center", True))

    @property
    def scale(self):
        return bool(getattr(self.layer, "scale", True))

    @property
    def is_batchnorm(self):
        """False for a compatibility layer of a Keras-2 library (see `is_site_layer`)."""
        return isinstance(self.layer, keras.layers.BatchNormalization)

    @property
    def producer_kind(self):
        return type(self.producer).__name__ if self.producer is not None else "none"

    def to_dict(self):
        return {
            "path": self.name,
            "layer": self.layer.name,
            "axis": self.axis,
            "rank": self.rank,
            "channels": self.channels,
            "input_shape": list(self.input_shape),
            "center": self.center,
            "scale": self.scale,
            "epsilon": self.epsilon,
            "momentum": getattr(self.layer, "momentum", None),
            "batchnorm": self.is_batchnorm,
            "trainable": bool(self.layer.trainable),
            "dtype_policy": self.layer.dtype_policy.name,
            "calls": self.calls,
            "producer": self.producer.name if self.producer is not None else None,
            "producer_kind": self.producer_kind,
            "producer_exclusive": self.producer_exclusive,
            "consumers": [layer.name for layer in self.consumers],
            "relu_after": self.relu.name if self.relu is not None else None,
            "global_pooling_after": self.pooled,
            "inside_layer": self.inside.name if self.inside is not None else None,
        }


def _is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None and float(layer.negative_slope) == 0.0
                and float(layer.threshold) == 0.0)
    if isinstance(layer, keras.layers.Activation):
        activation = getattr(layer.activation, "__name__", str(layer.activation))
        return activation in RELU_NAMES
    return False


def _refuse_subclassed(model, path):
    name = "/".join(path) or model.name
    raise UnsupportedModelError(
        f"'{name}' is a subclassed model ({type(model).__name__}) whose layers are called "
        "from Python code, not a graph: normswap can rewrite Functional and Sequential "
        "models only. Rebuild it with the functional API, or swap its layers in its code.")


class _GraphBuilder(Replay):
    """A replay whose values are the graph nodes that produced each tensor (None for a
    model input): every call becomes a node, every tensor read an edge."""

    def __init__(self):
        self.graph = nx.DiGraph(hidden=[])  # hidden: (scope, custom layer holding BNs)
        self.scope = ()
        self.output_ids = set()
        self.seen = set()

    def add_model(self, model, scope):
        saved = self.scope, self.output_ids
        self.scope = scope
        self.output_ids = {id(t) for t in model_outputs(model)}
        self.run(model, [None] * len(model_inputs(model)))
        self.scope, self.output_ids = saved

    def _add_call(self, node, args, kwargs):
        key = id(node)
        self.graph.add_node(key, layer=node.operation, scope=self.scope, node=node,
                            is_output=any(id(t) in self.output_ids for t in node.outputs))
        for parent in call_values(node, args, kwargs):
            if parent is not None:
                self.graph.add_edge(parent, key)
        return [key] * len(node.outputs)

    def call_operation(self, node, args, kwargs):
        operation = node.operation
        if isinstance(operation, keras.Model) and _contains_batchnorm(operation):
            _refuse_subclassed(operation, self.scope + (operation.name,))
        if (isinstance(operation, keras.layers.Layer) and id(operation) not in self.seen
                and not isinstance(operation, keras.layers.BatchNormalization)
                and _contains_batchnorm(operation)):
            self.seen.add(id(operation))  # a custom layer whose code calls BNs: noted once
            self.graph.graph["hidden"].append((self.scope, operation))
        return self._add_call(node, args, kwargs)

    def call_model(self, node, model, args, kwargs):
        keys = self._add_call(node, args, kwargs)
        if id(model) not in self.seen:  # a nested model called twice is walked once
            self.seen.add(id(model))
            self.add_model(model, self.scope + (model.name,))
        return keys


def build_graph(model):
    """A networkx DiGraph of every call in `model` and its nested models.

    Node attributes: `layer` (the operation called: a layer, a nested model or a raw
    keras.ops operation), `scope` (path of the model whose graph holds the call), `node`
    (the Keras Node), `is_output` (the call produces an output of that model). Edges
    follow tensors inside one model's graph; a nested model's own calls are nodes too,
    walked once however often the model is called. The graph attribute `hidden` lists
    (scope, layer) for every custom layer holding BatchNormalization layers of its own.
    """
    if not is_graph_model(model):
        if isinstance(model, keras.Model):
            _refuse_subclassed(model, ())
        raise UsageError(f"Expected a Keras model, got {type(model).__name__}.")
    builder = _GraphBuilder()
    builder.add_model(model, (model.name,))
    return builder.graph


def _contains_batchnorm(layer):
    return any(isinstance(sub, keras.layers.BatchNormalization)
               for sub in layer._flatten_layers(include_self=True, recursive=True))


COMPAT_SITE_LAYERS = (Keras2BatchLayerNormalization, Keras2GroupNormalization,
                      Keras2InstanceNormalization, Keras2SwitchNormalization)


def is_site_layer(layer):
    """A layer normswap converts: a BatchNormalization, or one of the compatibility layers
    a Keras-2 library's normalization loads as (`normswap.layers.Keras2*`, see
    saving/seeds/), which converts like a BN to the targets that need no BN statistics."""
    return isinstance(layer, (keras.layers.BatchNormalization,) + COMPAT_SITE_LAYERS)


def _site_axis(layer, rank):
    axis = getattr(layer, "axis", -1)
    axis = -1 if axis is None else axis  # an instance norm over all axes: channels last
    axis = axis[0] if isinstance(axis, (list, tuple)) else axis
    return axis + rank if axis < 0 else axis


def find_sites(model, graph=None):
    """Every BatchNormalization layer in `model` (nested models included), and every
    compatibility layer of a Keras-2 normalization (`is_site_layer`), as BNSites."""
    graph = build_graph(model) if graph is None else graph
    calls_of = {}
    for key, data in graph.nodes(data=True):
        calls_of.setdefault(id(data["layer"]), []).append(key)
    sites, seen = [], set()
    for key in nx.topological_sort(graph):
        data = graph.nodes[key]
        layer = data["layer"]
        if not is_site_layer(layer) or id(layer) in seen:
            continue
        seen.add(id(layer))
        sites.append(_describe_site(graph, key, calls_of))
    for scope, holder in graph.graph.get("hidden", []):
        for layer in holder._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in seen:
                seen.add(id(layer))
                sites.append(_describe_hidden_site(layer, scope, holder))
    return sites


def _describe_hidden_site(layer, scope, holder):
    """A BN that the custom layer `holder` calls from its Python code: what its build
    recorded (input shape, channels), no graph neighbourhood."""
    input_shape = tuple((layer.get_build_config() or {}).get("input_shape") or ())
    rank = len(input_shape)
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    axis = axis + rank if axis < 0 else axis
    channels = int(layer.moving_mean.shape[0]) if layer.built else None
    return BNSite(layer=layer, path=scope + (holder.name, layer.name), axis=axis, rank=rank,
                  channels=channels, input_shape=input_shape, calls=0, inside=holder)


ELEMENTWISE = (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU,
               keras.layers.ELU, keras.layers.Dropout, keras.layers.SpatialDropout1D,
               keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D,
               keras.layers.GaussianNoise, keras.layers.GaussianDropout,
               keras.layers.AlphaDropout, keras.layers.Identity)
ELEMENTWISE_OPERATIONS = ("Cast",)  # raw keras.ops operations that act value by value


def _is_elementwise(operation):
    if isinstance(operation, keras.layers.Layer):
        return isinstance(operation, ELEMENTWISE)
    return type(operation).__name__ in ELEMENTWISE_OPERATIONS


def _feeds_only(graph, key, child, calls_of):
    """Whether the call `key` is its layer's only call and feeds only the call `child`."""
    data = graph.nodes[key]
    return (len(calls_of.get(id(data["layer"]), [key])) == 1 and not data["is_output"]
            and list(graph.successors(key)) == [child])


def _find_source(site, graph, key, child, calls_of):
    """Walk back from the BN's producer through element-wise calls that each feed only the
    next one, to the layer that computes the BN's input (see BNSite.source)."""
    path, exclusive = [], _feeds_only(graph, key, child, calls_of)
    while _is_elementwise(graph.nodes[key]["layer"]):
        parents = list(graph.predecessors(key))
        if len(parents) != 1:
            break
        path.append(graph.nodes[key]["layer"])
        exclusive = exclusive and _feeds_only(graph, parents[0], key, calls_of)
        key = parents[0]
    data = graph.nodes[key]
    site.source, site.source_exclusive = data["layer"], exclusive
    site.source_input_shape = tuple(data["node"].input_tensors[0].shape)
    site.source_path = tuple(reversed(path))


def _describe_site(graph, key, calls_of):
    data = graph.nodes[key]
    layer, node = data["layer"], data["node"]
    input_shape = tuple(node.input_tensors[0].shape)
    rank = len(input_shape)
    axis = _site_axis(layer, rank)
    calls = len(calls_of[id(layer)])
    site = BNSite(layer=layer, path=data["scope"] + (layer.name,),
                  axis=axis, rank=rank, channels=input_shape[axis],
                  input_shape=input_shape, calls=calls)
    site.consumers = [graph.nodes[k]["layer"] for k in graph.successors(key)]
    if calls != 1:
        return site
    parents = list(graph.predecessors(key))
    if len(parents) == 1:
        parent = graph.nodes[parents[0]]
        site.producer = parent["layer"]
        site.producer_input_shape = tuple(parent["node"].input_tensors[0].shape)
        site.producer_exclusive = _feeds_only(graph, parents[0], key, calls_of)
        _find_source(site, graph, parents[0], key, calls_of)
    children = list(graph.successors(key))
    if len(children) == 1 and not data["is_output"]:
        child = graph.nodes[children[0]]["layer"]
        if _is_relu(child) and len(calls_of[id(child)]) == 1:
            site.relu = child
            children = list(graph.successors(children[0]))
    site.pooled = any(isinstance(graph.nodes[k]["layer"], GLOBAL_POOLING) for k in children)
    return site
