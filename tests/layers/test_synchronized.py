"""synchronized=True: batch statistics over the global batch of a tf.distribute strategy.

A MirroredStrategy over two logical CPU devices runs one training step of each layer on a
global batch split in two. With synchronized=True the outputs, the updated statistics and
the (summed) gradients must equal those of one device on the whole batch; with
synchronized=False the statistics must differ (each replica sees only its half), which
shows the comparison can fail.

Logical devices can only be configured before TensorFlow initialises, and other tests in
the same process may already have initialised it, so the experiment runs in a fresh
subprocess that prints its measurements as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras
from normswap.layers import (
    BatchLayerNormalization,
    BatchRenormalization,
    EvoNormB0,
    SwitchNormalization,
)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2

FACTORIES = {
    "SwitchNormalization": lambda s: SwitchNormalization(momentum=0.5, synchronized=s),
    "BatchRenormalization": lambda s: BatchRenormalization(
        momentum=0.5, warmup_steps=0, r_max=1.5, d_max=0.5, synchronized=s),
    "BatchLayerNormalization": lambda s: BatchLayerNormalization(
        momentum=0.5, synchronized=s),
    "EvoNormB0": lambda s: EvoNormB0(momentum=0.5, synchronized=s),
}
rng = np.random.default_rng(0)
shape = (8, 3, 3, 4)
# the two halves have different statistics, so local and global statistics differ
x = rng.normal(size=shape).astype("float32")
x[4:] = 3.0 * x[4:] + 1.0
r = rng.normal(size=shape).astype("float32")


def initial_values(layer):
    values = []
    for w in layer.weights:
        if w.name == "step":
            values.append(np.zeros((), "float32"))
        elif "variance" in w.name or "stddev" in w.name:
            values.append(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
        else:
            values.append(rng.normal(size=w.shape).astype("float32"))
    return values


def single_device(layer):
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * r)
    grads = tape.gradient(loss, layer.trainable_variables)
    return y.numpy(), [g.numpy() for g in grads]


def mirrored(layer):
    def halves(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: array[4 * ctx.replica_id_in_sync_group:
                              4 * (ctx.replica_id_in_sync_group + 1)])

    @tf.function
    def step(xs, rs):
        with tf.GradientTape() as tape:
            y = layer(xs, training=True)
            loss = tf.reduce_sum(y * rs)
        return y, tape.gradient(loss, layer.trainable_variables)

    y, grads = strategy.run(step, args=(halves(x), halves(r)))
    y = np.concatenate([t.numpy() for t in strategy.experimental_local_results(y)])
    grads = [sum(t.numpy() for t in strategy.experimental_local_results(g)) for g in grads]
    return y, grads


results = {}
for name, factory in FACTORIES.items():
    for synchronized in (True, False):
        reference = factory(synchronized)
        reference.build(shape)
        values = initial_values(reference)
        reference.set_weights(values)
        y_ref, g_ref = single_device(reference)
        with strategy.scope():
            layer = factory(synchronized)
            layer.build(shape)
        layer.set_weights(values)
        y, g = mirrored(layer)
        stats = {w.name: float(np.abs(np.asarray(w.numpy()) - np.asarray(v.numpy())).max())
                 for w, v in zip(layer.non_trainable_weights,
                                 reference.non_trainable_weights)}
        results[f"{name}/{synchronized}"] = {
            "output": float(np.abs(y - y_ref).max()),
            "gradients": max(float(np.abs(a - b).max()) for a, b in zip(g, g_ref)),
            "statistics": stats,
            "changed": {w.name: bool(np.any(np.asarray(w.numpy()) != v))
                        for w, v in zip(layer.weights, values) if not w.trainable},
        }

# The ordinary Keras path: fit() under the strategy, all three layers synchronized.
with strategy.scope():
    model = keras.Sequential([
        keras.Input((3, 3, 4)),
        SwitchNormalization(synchronized=True),
        keras.layers.Conv2D(4, 1),
        BatchRenormalization(synchronized=True, warmup_steps=1, name="brn"),
        BatchLayerNormalization(synchronized=True),
        EvoNormB0(synchronized=True),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="sgd", loss="mse")
history = model.fit(x, rng.normal(size=(8, 1)).astype("float32"), batch_size=4, epochs=1,
                    verbose=0)
results["fit"] = {"loss": [float(v) for v in history.history["loss"]],
                  "step": float(model.get_layer("brn").step.numpy())}
print("RESULTS " + json.dumps(results))
'''

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute strategies exist only on the TensorFlow backend",
)


@pytest.fixture(scope="module")
def measurements():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULTS "):])


# The moving statistics of each layer that a replica's half batch would get wrong.
STATISTICS = {
    "SwitchNormalization": ["moving_mean", "moving_variance"],
    "BatchRenormalization": ["moving_mean", "moving_stddev"],
    "BatchLayerNormalization": ["moving_mean", "moving_variance"],
    "EvoNormB0": ["moving_variance"],
}
LAYERS = list(STATISTICS)


@pytest.mark.parametrize("name", LAYERS)
def test_synchronized_step_equals_one_device_on_the_global_batch(measurements, name):
    result = measurements[f"{name}/True"]
    assert result["output"] < 1e-5, result
    assert result["gradients"] < 1e-4, result
    for stat, difference in result["statistics"].items():
        assert difference < 1e-5, (stat, result)
    # the statistics did move, so the comparison above is not of untouched weights
    assert all(result["changed"].values()), result


@pytest.mark.parametrize("name", LAYERS)
def test_unsynchronized_statistics_differ(measurements, name):
    result = measurements[f"{name}/False"]
    assert result["output"] > 1e-2, result
    for stat in STATISTICS[name]:
        assert result["statistics"][stat] > 1e-2, (stat, result)


def test_fit_under_mirrored_strategy(measurements):
    fit = measurements["fit"]
    assert len(fit["loss"]) == 1 and all(v == v and abs(v) < 1e6 for v in fit["loss"]), fit
    assert fit["step"] == 2.0, fit
