"""The graph of calls and the BN sites found in it, raw keras.ops nodes included."""

import keras
import pytest

import normswap
from normswap.graph import build_graph, find_sites
from tests.models import nested_model, raw_ops_model, shared_bn_model, small_cnn


def sites_by_name(model):
    return {site.name: site for site in find_sites(model)}


def test_every_call_is_a_node_and_raw_operations_are_nodes_too():
    model = raw_ops_model()
    graph = build_graph(model)
    operations = [data["layer"] for _, data in graph.nodes(data=True)]
    assert any(type(op).__name__ == "Relu6" for op in operations)
    scopes = {data["layer"].name: data["scope"] for _, data in graph.nodes(data=True)}
    assert scopes["inner_bn"] == ("raw_ops", "inner") and scopes["bn1"] == ("raw_ops",)
    outputs = [data["layer"].name for _, data in graph.nodes(data=True) if data["is_output"]]
    assert "logits" in outputs and "inner_bn" not in outputs


def test_sites_know_their_producers_raw_or_not():
    sites = sites_by_name(raw_ops_model())
    assert set(sites) == {"bn1", "bn_after_op", "inner/inner_bn", "fc_bn"}
    assert sites["bn1"].producer.name == "conv1" and sites["bn1"].producer_exclusive
    assert sites["bn1"].relu is None  # a raw hard-swish follows, not a ReLU layer
    assert sites["bn_after_op"].producer_kind == "Multiply"
    assert sites["bn_after_op"].relu.name == "relu"
    assert sites["inner/inner_bn"].producer.name == "inner_conv"
    assert sites["fc_bn"].producer.name == "fc" and sites["fc_bn"].rank == 2


def test_neighbourhoods_of_sites():
    sites = sites_by_name(small_cnn())
    assert sites["b1_bn"].relu.name == "b1_relu" and not sites["b1_bn"].pooled
    assert sites["post_add_bn"].pooled and sites["post_add_bn"].producer_kind == "Add"
    assert [c.name for c in sites["b1_bn"].consumers] == ["b1_relu"]
    shared = find_sites(shared_bn_model())[0]
    assert shared.calls == 2 and shared.producer is None
    nested = sites_by_name(nested_model())
    assert set(nested) == {"inner/b1_bn", "inner/b2_bn", "inner/post_add_bn"}


def test_subclassed_models_holding_a_bn_are_refused():
    class Block(keras.Model):
        def __init__(self):
            super().__init__(name="block")
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Block()(inputs))
    with pytest.raises(normswap.UnsupportedModelError, match="block.*subclassed"):
        find_sites(model)
    with pytest.raises(normswap.UsageError, match="Expected a Keras model"):
        build_graph(keras.layers.Dense(2))
