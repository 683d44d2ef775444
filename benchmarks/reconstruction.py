"""How much accuracy block-wise reconstruction keeps, before any fine-tuning, and its cost.

    python benchmarks/reconstruction.py           # full run (3 seeds; ~30 min on 2 cores)
    python benchmarks/reconstruction.py --quick   # smoke run, one seed, few steps

On two trained models nobody tuned for normswap (see benchmarks/calibration.py, whose
subjects this reuses):
  ResNet-8   MLPerf Tiny's CIFAR-10 reference; calibration on test images 0-99, accuracy
             on images 100-199 (one image is one point: gaps under 3 points are noise);
  demo CNN   normswap's MNIST model; calibration on 256 of its training digits, accuracy on
             the 500 held-out digits it ships with.
For every batch-independent target — groupnorm, layernorm, frn, evonorm, and groupnorm with
ws — the accuracy after closed-form calibration alone and after calibration + block-wise
reconstruction (normswap's defaults), the latter over several seeds (mean and range), and
the cost of reconstruction in multiples of one forward pass of the original and the
converted model over the samples it fits on (8× the calibration samples: mirrored and
shifted). No labels are used. Goals (issue: "fidelity you can bank on"): every target keeps
≥ 95 % of the original accuracy after calibration + reconstruction, groupnorm and layernorm
≥ 99 %.

Writes benchmarks/results/reconstruction.md (and --json FILE) with the machine beside it.
"""

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _timing  # noqa: E402

TARGETS = ("groupnorm", "layernorm", "frn", "evonorm", "groupnorm+ws")
GOAL = 0.95
STRICT_GOAL = 0.99
STRICT_TARGETS = ("groupnorm", "layernorm")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, 30 steps per block, ResNet-8 only")
    parser.add_argument("--seeds", type=int, default=3, help="reconstruction seeds (3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="most steps per block (default: normswap's)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--distill", type=int, default=200,
                        help="distillation steps after reconstruction, seed 0 (0: none)")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--out", type=Path, default=RESULTS / "reconstruction.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.distill = 1, args.steps or 30, 0
    return args


def accuracy(model, subject):
    from normswap.verify import outputs_of, top1_accuracy

    return top1_accuracy(outputs_of(model, subject.x_eval)[0], subject.y_eval)


def forward_seconds(model, samples):
    from normswap.verify import outputs_of

    outputs_of(model, samples[:64])  # warm
    began = time.perf_counter()
    outputs_of(model, samples)
    return time.perf_counter() - began


def convert(subject, target, **options):
    import normswap

    name, ws = target.replace("+ws", ""), target.endswith("+ws")
    began = time.perf_counter()
    result = normswap.convert(subject.model, name, ws=ws, calibration_data=subject.x_cal,
                              **options)
    return result, time.perf_counter() - began


def measure(subject, target, args, log):
    import numpy as np

    from normswap.samples import augmented

    calibrated, calibrate_seconds = convert(subject, target)
    row = {"calibrated": accuracy(calibrated.model, subject), "reconstructed": [],
           "seconds": [], "blocks_improved": []}
    for seed in range(args.seeds):
        options = {"seed": seed} | ({"steps": args.steps} if args.steps else {})
        result, seconds = convert(subject, target, reconstruct=True,
                                  reconstruct_options=options)
        row["reconstructed"].append(accuracy(result.model, subject))
        row["seconds"].append(seconds - calibrate_seconds)
        blocks = result.report.calibration["reconstruction"]
        row["blocks_improved"].append(f"{sum(b['improved'] for b in blocks)}/{len(blocks)}")
        log.print(f"  {subject.key} {target} seed {seed}: {row['reconstructed'][-1]:.3f} "
                  f"({seconds:.0f} s)")
    if args.distill:
        options = {"steps": args.steps} if args.steps else {}
        distilled, _ = convert(subject, target, reconstruct=True, reconstruct_options=options,
                               distill_steps=args.distill)
        row["distilled"] = accuracy(distilled.model, subject)
    fitted = np.concatenate([b[0] for b in augmented([[subject.x_cal]])])
    forward = (forward_seconds(subject.model, fitted)
               + forward_seconds(result.model, fitted))
    row["cost_forward_passes"] = statistics.median(row["seconds"]) / forward
    return row


def table(results, subjects):
    lines = []
    for subject in subjects:
        data = results[subject.key]
        original = data["original"]
        lines += [f"**{subject.title}** — original {100 * original:.1f} %; {subject.notes}",
                  "",
                  "| target | calibrated | + reconstruction (mean, range over seeds) | "
                  "share of original | goal | cost (× forward) | + distillation (seed 0) |",
                  "|---|---|---|---|---|---|---|"]
        for target, row in data["targets"].items():
            mean = statistics.mean(row["reconstructed"])
            low, high = min(row["reconstructed"]), max(row["reconstructed"])
            goal = STRICT_GOAL if target in STRICT_TARGETS else GOAL
            shortfall = 100 * (goal * original - mean)
            met = "met" if shortfall <= 0 else f"missed by {shortfall:.1f} pts"
            lines.append(f"| {target} | {100 * row['calibrated']:.1f} % | {100 * mean:.1f} % "
                         f"({100 * low:.1f}–{100 * high:.1f}) | {100 * mean / original:.0f} % | "
                         f"≥ {100 * goal:.0f} %: {met} | {row['cost_forward_passes']:.0f} | "
                         + (f"{100 * row['distilled']:.1f} % |" if "distilled" in row
                            else "- |"))
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    keras = _timing.import_keras_quietly()
    warnings.filterwarnings("ignore")
    import calibration as subjects_module  # benchmarks/calibration.py: the same subjects
    from rich.console import Console

    log = Console(stderr=True)
    subjects = [subjects_module.load_resnet8(subjects_module.REALMODELS)]
    if not args.quick:
        subjects.append(subjects_module.load_demo(0))
    began = time.perf_counter()
    results = {}
    for subject in subjects:
        results[subject.key] = {"original": accuracy(subject.model, subject), "targets": {}}
        for target in args.targets.split(","):
            results[subject.key]["targets"][target] = measure(subject, target, args, log)
    environment = _timing.environment()
    text = ("# Block-wise reconstruction: accuracy kept before fine-tuning\n\n"
            f"`python benchmarks/reconstruction.py{' --quick' if args.quick else ''}`, "
            f"{args.seeds} seed(s), keras {keras.__version__} ({keras.backend.backend()}); "
            f"{time.strftime('%Y-%m-%d')}; {(time.perf_counter() - began) / 60:.0f} min\n\n"
            + table(results, subjects)
            + "\nMachine: " + json.dumps(environment, default=str) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "environment": environment},
                                              indent=2, default=str))


if __name__ == "__main__":
    main()
