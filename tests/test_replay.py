"""The replay engine: one walk through a graph, call by call, the caller deciding each call."""

import pickle
import weakref

import keras
import numpy as np
import pytest

from normswap.replay import (
    IDENTITY,
    Replay,
    accepted_kwargs,
    graph_model_of,
    is_graph_model,
    model_nodes,
    pack_inputs,
    pack_outputs,
)
from tests.models import multi_io_model, nested_model, raw_ops_model, shared_bn_model, small_cnn

MODELS = {"raw_ops": raw_ops_model, "nested": nested_model, "shared": shared_bn_model,
          "multi_io": multi_io_model, "small_cnn": small_cnn}


def flat_inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_default_replay_computes_what_the_model_computes(name):
    model = MODELS[name]()
    inputs = flat_inputs(model)
    replayed = Replay().run(model, inputs)
    direct = keras.tree.flatten(model(pack_inputs(model, inputs), training=False))
    assert len(replayed) == len(direct)
    for a, b in zip(replayed, direct):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


class Recorder(Replay):
    """Records every call it sees, runs nothing: values are just labels."""

    def __init__(self):
        self.calls, self.models = [], []

    def call_operation(self, node, args, kwargs):
        self.calls.append(node.operation.name)
        return [node.operation.name] * len(node.outputs)

    def call_model(self, node, model, args, kwargs):
        self.models.append(model.name)
        return super().call_model(node, model, args, kwargs)


def test_raw_operations_are_calls_like_layers_and_come_in_topological_order():
    model = raw_ops_model()
    recorder = Recorder()
    outputs = recorder.run(model, ["image"])
    assert outputs == ["logits"]
    assert recorder.models == ["inner"]  # a nested graph model is replayed, not called
    order = {name: i for i, name in enumerate(recorder.calls)}
    assert order["conv1"] < order["bn1"] < order["conv2"] < order["bn_after_op"]
    assert order["inner_conv"] < order["inner_bn"] < order["fc"]
    raw = [n.operation for n in model_nodes(model)
           if not isinstance(n.operation, keras.layers.Layer)]
    assert {type(op).__name__ for op in raw} >= {"Multiply", "Add", "Relu6", "Mean", "Reshape"}
    assert all(op.name in order for op in raw)


def test_a_nested_model_called_twice_is_replayed_at_each_call():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, name="d")(inner_in), name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(inner(inputs)) + 1.0)
    recorder = Recorder()
    recorder.run(model, ["x"])
    assert recorder.models == ["inner", "inner"] and recorder.calls.count("d") == 2


class Token:
    """A value that can be watched for garbage collection (freed as soon as unreferenced:
    it holds no reference cycle)."""


class FrontierWatcher(Replay):
    def __init__(self):
        self.alive = weakref.WeakSet()
        self.most_alive = 0

    def call_operation(self, node, args, kwargs):
        self.most_alive = max(self.most_alive, len(self.alive))
        tokens = [Token() for _ in node.outputs]
        self.alive.update(tokens)
        return tokens


def test_values_are_dropped_after_their_last_use():
    inputs = keras.Input((3,))
    x = inputs
    for i in range(12):
        x = keras.layers.Dense(3, name=f"d{i}")(x)
    model = keras.Model(inputs, x)
    watcher = FrontierWatcher()
    first = Token()
    watcher.alive.add(first)
    watcher.run(model, [first])
    del first
    assert watcher.most_alive <= 2  # a chain's frontier is one tensor, not twelve


def test_identity_is_one_sentinel():
    assert repr(IDENTITY) == "IDENTITY"
    assert pickle.loads(pickle.dumps(IDENTITY)) is IDENTITY
    assert IDENTITY != "identity"


def test_graph_models_and_structures():
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert is_graph_model(sequential) and graph_model_of(sequential) is not sequential
    assert not is_graph_model(keras.layers.Dense(2))

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not is_graph_model(Sub()) and graph_model_of(Sub()) is None
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    model = keras.Model({"a": a, "b": b}, {"sum": keras.layers.Dense(1)(a) + 1.0, "b": b})
    packed = pack_inputs(model, [np.ones((1, 2)), np.ones((1, 3))])
    assert isinstance(packed, dict) and set(packed) == {"a", "b"}
    assert isinstance(pack_outputs(model, [1, 2]), dict)
    with pytest.raises(ValueError, match="1 value"):
        pack_inputs(model, [np.ones((1, 2))])


def test_accepted_kwargs_drops_what_a_call_cannot_take():
    norm = keras.layers.GroupNormalization(groups=1)
    assert accepted_kwargs(norm, {"mask": None, "training": False}) == {"training": False}
    dense = keras.layers.Dense(2)
    assert accepted_kwargs(dense, {"mask": None}) == {}
