"""Fine-tune a converted model on several devices, with batch statistics over the global batch.

    python examples/distributed_finetune.py                    # TensorFlow, then JAX
    python examples/distributed_finetune.py --backend jax      # one backend
    python examples/distributed_finetune.py --quick            # smoke run
    python examples/distributed_finetune.py --target switchnorm --per-device-batch 1

What it does, per backend (each in its own process, since the backend and the device setup
must be chosen before Keras is imported): the demo MNIST CNN is converted to a target whose
layers keep batch statistics (batchrenorm, switchnorm or bln), calibrated on unlabelled
inverted digits, and fine-tuned on inverted digits with `model.fit` at a small batch per
device; it then checks numerically what the batch statistics span.

TensorFlow: `tf.distribute.MirroredStrategy`. On a machine without GPUs the CPU is split into
2 logical devices (`tf.config.set_logical_device_configuration`, before TensorFlow
initialises), so the same code path runs; with GPUs the strategy takes all of them and
nothing else changes. normswap's batch-statistics layers take `synchronized=True`: their
moments are then all-reduced across the replicas (sums and counts, two passes), so every
replica normalizes with the statistics of the global batch. A converted model's layers are
built with `synchronized=False`; `synchronized_copy` below rebuilds the model with the flag
set, with public Keras API only: `keras.models.clone_model` with a `clone_function` that
edits each layer's config, then `set_weights`, inside `strategy.scope()`. (Keras's own
BatchNormalization has the same argument, and the same copy sets it.)

JAX: the Keras distribution API, `keras.distribution.DataParallel` over the devices
`keras.distribution.list_devices()` finds (here 2 host devices from
`XLA_FLAGS=--xla_force_host_platform_device_count=2`, set before JAX is imported; GPUs or
TPUs when present). `synchronized=True` is TensorFlow-only in normswap's layers and is not
needed here: Keras's JAX trainer compiles one program over *global* arrays whose batch axis
is sharded across the devices, and inside it a mean over the batch axis is the mean of the
global batch — XLA inserts the cross-device reductions itself. So with DataParallel on JAX,
the batch statistics of BN, BatchRenorm, SwitchNorm and BLN always span the global batch (all
devices, all processes); there is no per-device mode. The script verifies both: a jitted
mean over a sharded batch against NumPy's mean of the whole batch, and a layer's training
step on the sharded batch against the same step on one device.

Across machines (the same script on every machine; nothing home-made, the engines do it):

- TensorFlow: replace `MirroredStrategy` with `tf.distribute.MultiWorkerMirroredStrategy()`
  and start one process per machine with `TF_CONFIG` describing the cluster, e.g.
  `TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type":
  "worker", "index": 0}}'` (index 1 on the second). Create and compile the model inside
  `strategy.scope()`; `model.fit` shards the dataset across workers, and
  `synchronized=True` layers all-reduce their moments across every replica of every worker
  (collective all-reduce). Give `batch_size` as the global batch: per-replica batch ×
  `strategy.num_replicas_in_sync`.
- JAX: call `keras.distribution.initialize(job_addresses="host0:1234", num_processes=2,
  process_id=i)` (a wrapper of `jax.distributed.initialize`; or set
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES`,
  `KERAS_DISTRIBUTION_PROCESS_ID`) first, before any other JAX work. Then
  `keras.distribution.list_devices()` returns the devices of all processes, and
  `DataParallel(devices=...)` shards each global batch across them; each process feeds its
  own part of the data (with a `tf.data.Dataset` Keras shards it per process). The batch
  statistics span the global batch, as on one machine.
"""

import argparse
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax")
SYNC_TARGETS = ("batchrenorm", "switchnorm", "bln")
DEVICES = 2  # logical CPU devices when there is no accelerator


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS,
                        help="run one backend in this process (default: each in a subprocess)")
    parser.add_argument("--target", default="batchrenorm", choices=SYNC_TARGETS)
    parser.add_argument("--per-device-batch", type=int, default=2)
    parser.add_argument("--samples", type=int, default=None,
                        help="fine-tuning samples seen (default 1000; 40 with --quick)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 40 if args.quick else 1000
    args.calibration_samples = 64 if args.quick else 250
    return args


def child_argv(args, backend):
    argv = [sys.executable, os.path.abspath(__file__), "--backend", backend,
            "--target", args.target, "--per-device-batch", str(args.per_device_batch),
            "--samples", str(args.samples), "--learning-rate", str(args.learning_rate)]
    return argv + (["--quick"] if args.quick else [])


def run_children(args):
    """Each backend in its own process, at the same time; their outputs in turn."""
    children = {b: subprocess.Popen(child_argv(args, b), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for b in BACKENDS}
    status = 0
    for backend, child in children.items():
        output, errors = child.communicate()
        print(f"===== {backend} " + "=" * 50)
        print(output.rstrip(), flush=True)
        if child.returncode:  # its stderr (TensorFlow's start-up lines too) only then
            print(errors.rstrip(), file=sys.stderr)
            print(f"{backend}: exit status {child.returncode}", file=sys.stderr)
            status = 1
    return status


# --------------------------------------------------------------------------- shared


def task(quick):
    """Inverted digits: (x_train, y_train, x_test, y_test) from the 500 shipped digits."""
    import numpy as np

    from normswap.demo_data import load_demo_digits

    x, y = load_demo_digits()
    x = np.float32(1.0) - x  # the new sensor
    return x[:250], y[:250], x[250:], y[250:]


def convert(target, x_unlabelled):
    import normswap
    from normswap.demo_data import load_demo_model

    return normswap.convert(load_demo_model(), target, calibration_data=x_unlabelled,
                            recalibrate_stats=True).model


def accuracy(model, x, y):
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=250, verbose=0), -1) == y))


def repeat_to(x, y, samples):
    import numpy as np

    index = np.arange(samples) % len(y)
    return x[index], y[index]


def layer_input(model, name, x):
    """What the layer `name` receives when the model runs on `x` (inference mode)."""
    import keras

    probe = keras.Model(model.inputs, model.get_layer(name).input)
    return keras.ops.convert_to_numpy(probe(x, training=False))


def first_statistics_layer(model):
    return next(layer for layer in model.layers if "synchronized" in layer.get_config())


def statistics_of(layer):
    import keras

    return [keras.ops.convert_to_numpy(w) for w in layer.non_trainable_weights]


def fine_tune_and_report(model, x_train, y_train, x_test, y_test, global_batch, args, say):
    before = accuracy(model, x_test, y_test)
    x_seen, y_seen = repeat_to(x_train, y_train, args.samples - args.samples % global_batch)
    start = time.perf_counter()
    model.fit(x_seen, y_seen, batch_size=global_batch, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    after = accuracy(model, x_test, y_test)
    say(f"fine-tuned {len(y_seen) // global_batch} steps at global batch {global_batch} "
        f"({args.per_device_batch} per device) in {seconds:.0f} s: test accuracy "
        f"{100 * before:.1f} % -> {100 * after:.1f} % on {len(y_test)} inverted digits")
    return before, after


# --------------------------------------------------------------------------- TensorFlow


def synchronized_copy(model):
    """`model` with every layer that takes `synchronized` set to True (public API only).

    Call it inside `strategy.scope()`, so the copy's variables are mirrored.
    """
    import keras

    def clone(layer):
        config = layer.get_config()
        if "synchronized" in config:
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def run_tensorflow(args, say):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:  # before TensorFlow initialises: split the CPU into logical devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(DEVICES)])
        strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(DEVICES)],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    else:
        strategy = tf.distribute.MirroredStrategy()  # every GPU
    import keras
    import numpy as np

    import normswap  # noqa: F401 - registers the layers for clone_model / from_config

    keras.utils.set_random_seed(0)
    replicas = strategy.num_replicas_in_sync
    say(f"TensorFlow {tf.__version__}, Keras {keras.__version__}: MirroredStrategy over "
        f"{replicas} replicas ({', '.join(strategy.extended.worker_devices)})")
    x_train, y_train, x_test, y_test = task(args.quick)
    converted = convert(args.target, x_train[:args.calibration_samples])
    with strategy.scope():
        model = synchronized_copy(converted)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss="sparse_categorical_crossentropy")
    flags = [(type(layer).__name__, layer.synchronized) for layer in model.layers
             if hasattr(layer, "synchronized")]
    say(f"{args.target}: {len(flags)} {flags[0][0]} layers, synchronized="
        f"{sorted({flag for _, flag in flags})}")

    # What the statistics span: one synchronized layer's training step on the replicas'
    # shares of a global batch, against the same layer on one device and the whole batch.
    name = first_statistics_layer(converted).name
    global_batch = args.per_device_batch * replicas
    x = layer_input(converted, name, x_train[:global_batch])
    report = {}
    for synchronized in (True, False):
        config = {**converted.get_layer(name).get_config(), "synchronized": synchronized}
        reference = converted.get_layer(name).__class__.from_config(config)
        reference.build(x.shape)
        reference.set_weights(converted.get_layer(name).get_weights())
        expected = keras.ops.convert_to_numpy(reference(x, training=True))
        with strategy.scope():
            layer = reference.__class__.from_config(config)
            layer.build(x.shape)
            layer.set_weights(converted.get_layer(name).get_weights())

        def share(context, x=x):
            i, n = context.replica_id_in_sync_group, args.per_device_batch
            return tf.constant(x[i * n:(i + 1) * n])

        @tf.function
        def step(values, layer=layer):
            return strategy.run(lambda v: layer(v, training=True), args=(values,))

        outputs = step(strategy.experimental_distribute_values_from_function(share))
        got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(outputs)])
        moving = [np.stack([r.numpy() for r in strategy.experimental_local_results(w.value)])
                  for w in layer.non_trainable_weights]
        moving_gap = max(float(np.max(np.abs(m - e))) for m, e in
                         zip(moving, statistics_of(reference)))
        report[synchronized] = (float(np.max(np.abs(got - expected))), moving_gap)
    say(f"check on '{name}' (global batch {global_batch}): max |output - one device on the "
        f"global batch| = {report[True][0]:.2e}, moving statistics {report[True][1]:.2e} "
        f"with synchronized=True; {report[False][0]:.2e} and {report[False][1]:.2e} with "
        "synchronized=False (per-replica statistics)")
    if report[True][0] > 1e-4 or report[True][1] > 1e-5:
        raise SystemExit("synchronized statistics do not match the global batch")
    before, after = fine_tune_and_report(model, x_train, y_train, x_test, y_test,
                                         global_batch, args, say)
    return {"check": report, "before": before, "after": after}


# --------------------------------------------------------------------------- JAX


def run_jax(args, say):
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    import normswap  # noqa: F401

    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)  # before the model is created
    keras.utils.set_random_seed(0)
    say(f"JAX {jax.__version__}, Keras {keras.__version__}: DataParallel over "
        f"{len(devices)} devices ({', '.join(devices)})")
    global_batch = args.per_device_batch * len(devices)
    x_train, y_train, x_test, y_test = task(args.quick)

    # 1. A jitted mean over the batch axis of a sharded global array is the global mean.
    sample = x_train[:global_batch].reshape(global_batch, -1)
    layout = distribution.get_data_layout(sample.shape)
    sharded = keras.distribution.distribute_tensor(sample, layout)
    per_device = [np.asarray(s.data).mean(0) for s in sharded.addressable_shards]
    jitted = np.asarray(jax.jit(lambda a: jnp.mean(a, axis=0))(sharded))
    say(f"batch of {global_batch} sharded over {len(sharded.sharding.device_set)} devices: "
        f"jit mean vs NumPy mean of the whole batch, max |Δ| = "
        f"{np.max(np.abs(jitted - sample.mean(0))):.1e}; vs one device's share "
        f"{np.max(np.abs(jitted - per_device[0])):.2f}")

    # 2. A converted layer's training step on the sharded batch equals one device's.
    converted = convert(args.target, x_train[:args.calibration_samples])
    layer = first_statistics_layer(converted)
    x = layer_input(converted, layer.name, x_train[:global_batch])

    def train_step(trainable, non_trainable, inputs):
        return layer.stateless_call(trainable, non_trainable, inputs, training=True)

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    x_sharded = keras.distribution.distribute_tensor(x, distribution.get_data_layout(x.shape))
    out_sharded, stats_sharded = jax.jit(train_step)(trainable, non_trainable, x_sharded)
    one_device = jax.devices()[0]
    out_one, stats_one = jax.jit(train_step)(
        jax.device_put(trainable, one_device), jax.device_put(non_trainable, one_device),
        jax.device_put(x, one_device))
    out_half, _ = jax.jit(train_step)(trainable, non_trainable, x[:args.per_device_batch])
    compiled = jax.jit(train_step).lower(trainable, non_trainable, x_sharded).compile()
    all_reduces = compiled.as_text().count("all-reduce(")
    gap = float(np.max(np.abs(np.asarray(out_sharded) - np.asarray(out_one))))
    stats_gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(stats_sharded, stats_one))
    local_gap = float(np.max(np.abs(np.asarray(out_half)
                                    - np.asarray(out_one)[:args.per_device_batch])))
    say(f"check on '{layer.name}' ({type(layer).__name__}, synchronized=False): the jitted "
        f"training step on the batch sharded over {len(x_sharded.sharding.device_set)} devices "
        f"({all_reduces} all-reduce ops in its compiled program) vs one device on the global "
        f"batch: outputs max |Δ| = "
        f"{gap:.1e}, moving statistics {stats_gap:.1e}; one device's share alone would be "
        f"{local_gap:.2f} off. The batch statistics span the global batch.")
    if gap > 1e-4 or stats_gap > 1e-5:
        raise SystemExit("the sharded training step does not match the global batch")

    # 3. Fine-tune: the trainer shards each global batch across the devices.
    converted.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss="sparse_categorical_crossentropy")
    before, after = fine_tune_and_report(converted, x_train, y_train, x_test, y_test,
                                         global_batch, args, say)
    return {"mean_gap": gap, "stats_gap": stats_gap, "before": before, "after": after}


def run_backend(args):
    """Run one backend in this process; the environment is set before Keras is imported."""
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
        raise SystemExit("Keras is already imported with another backend; run this "
                         "script as a program (python examples/distributed_finetune.py).")
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # start-up chatter
    if args.backend == "jax":  # several host devices; must precede importing JAX
        flag = f"--xla_force_host_platform_device_count={DEVICES}"
        if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    say = lambda text: print(text, flush=True)  # noqa: E731
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    return (run_tensorflow if args.backend == "tensorflow" else run_jax)(args, say)


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        return run_backend(args)
    return run_children(args)


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
