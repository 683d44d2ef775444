"""Try every normswap target on a real trained model before choosing one.

    python examples/resnet8_cifar10.py                    # every target (about a minute)
    python examples/resnet8_cifar10.py --quick            # 3 targets on 64 images (smoke run)
    python examples/resnet8_cifar10.py --model mine.h5 --data mine.npz    # your own model

The model is MLPerf Tiny's pre-trained ResNet-8 (CIFAR-10; input raw 0-255 RGB as float32)
and the 200 CIFAR-10 test images MLPerf Tiny evaluates it on, both in tests/data/ of the
repository (see tests/data/README.md). The first half of the images serves as unlabelled
calibration samples, the second half measures accuracy.

For every target (and groupnorm with Weight-Standardized convs, `ws=True`) the model is
converted twice: with the BN's numbers carried only, and calibrated on the unlabelled half
(`calibration_data=`; `recalibrate_stats=True` for the targets that keep batch statistics).
The table shows the accuracy of each, how often the converted model's top-1 agrees with the
original's, and whether the conversion is exact (then calibration has nothing to change and
the row says so). That is the check to make on your own model: `--model` takes a `.keras` or
legacy `.h5` file, `--data` an `.npz` with `x` (already shaped and scaled as the model's
input) and `y` (class indices).
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "data" / "mlperftiny_ic01_resnet8_cifar10.h5"
DATA = REPO / "tests" / "data" / "cifar10_test200_mlperftiny_ic01.npz"
STATISTICS_TARGETS = ("switchnorm", "batchrenorm", "bln")
QUICK_TARGETS = ("fold", "groupnorm", "frn")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL,
                        help="a .keras or legacy .h5 classifier (default: the ResNet-8)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="an .npz with x (model input) and y (class indices)")
    parser.add_argument("--calibration-samples", type=int, default=None,
                        help="how many of the first samples calibrate (default: half); the "
                             "rest measure accuracy")
    parser.add_argument("--targets", default=None,
                        help="comma-separated targets (default: every target, and "
                             "groupnorm+ws)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {', '.join(QUICK_TARGETS)} on 32 + 32 images")
    return parser.parse_args(argv)


def top1(model, x):
    """The model's top-1 class for each sample, in inference mode."""
    import keras
    import numpy as np

    out = [keras.ops.convert_to_numpy(model(x[i:i + 100], training=False))
           for i in range(0, len(x), 100)]
    return np.concatenate(out).argmax(-1)


def check_target(model, target, x_cal, x_eval, y_eval):
    """Accuracy with the BN's numbers carried, and calibrated; one row of the table."""
    import numpy as np

    import normswap

    name, ws = (target[:-3], True) if target.endswith("+ws") else (target, False)
    start = time.perf_counter()
    carried = normswap.convert(model, name, ws=ws, eval_data=x_eval)
    row = {"target": target, "exact": carried.report.exact,
           "swapped": len(carried.report.swapped), "sites": len(carried.report.sites),
           "carried": float(np.mean(top1(carried.model, x_eval) == y_eval))}
    if carried.report.exact:
        row["calibrated"] = row["carried"]
        row["agreement"] = carried.report.fidelity.top1_agreement
    else:
        calibrated = normswap.convert(model, name, ws=ws, calibration_data=x_cal,
                                      eval_data=x_eval,
                                      recalibrate_stats=name in STATISTICS_TARGETS)
        row["calibrated"] = float(np.mean(top1(calibrated.model, x_eval) == y_eval))
        row["agreement"] = calibrated.report.fidelity.top1_agreement
        fits = [s.fidelity["r2_after"] for s in calibrated.report.sites if s.fidelity]
        row["r2_min"] = min(fits) if fits else None
    row["seconds"] = time.perf_counter() - start
    return row


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("NORMSWAP_QUIET", "1")  # TensorFlow's start-up lines off stderr
    import warnings

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    import normswap

    # A legacy model declares its one input as a list; calling it with an array is fine.
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    console = Console(width=None if sys.stdout.isatty() else 120)
    model = normswap.load_model(str(args.model))
    with np.load(args.data, allow_pickle=False) as data:
        x = data["x"].astype(np.float32)
        y = data["y"].astype(np.int64).reshape(-1)
    if args.quick:
        x, y = x[:64], y[:64]
    half = args.calibration_samples or len(x) // 2
    x_cal, x_eval, y_eval = x[:half], x[half:], y[half:]
    targets = (args.targets.split(",") if args.targets
               else QUICK_TARGETS if args.quick
               else [*normswap.all_targets(), "groupnorm+ws"])
    original = float(np.mean(top1(model, x_eval) == y_eval))
    console.print(f"{args.model.name}: {len(normswap.find_sites(model))} BatchNormalization "
                  f"layers; calibration on {len(x_cal)} unlabelled samples, accuracy on the "
                  f"other {len(x_eval)}: original {100 * original:.1f} %.", soft_wrap=True)
    rows = []
    for target in targets:
        rows.append(check_target(model, target.strip(), x_cal, x_eval, y_eval))
        console.print(f"  {target}: done in {rows[-1]['seconds']:.1f} s", style="dim")

    table = Table(title=f"{args.model.name}: accuracy on {len(x_eval)} held-out samples "
                        f"(original {100 * original:.1f} %)")
    for column in ("target", "exact", "sites swapped", "γ/β carried", "calibrated",
                   "top-1 agreement", "worst site R²"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for row in sorted(rows, key=lambda r: -r["calibrated"]):
        table.add_row(
            row["target"], "yes" if row["exact"] else "no", f"{row['swapped']}/{row['sites']}",
            f"{100 * row['carried']:.1f} %",
            "= (exact)" if row["exact"] else f"{100 * row['calibrated']:.1f} %",
            f"{100 * row['agreement']:.1f} %" if row["agreement"] is not None else "—",
            f"{row['r2_min']:.2f}" if row.get("r2_min") is not None else "—")
    console.print(table)
    console.print("Exact targets reproduce the model (fold removes the BN, frozenbn freezes it, "
                  "batchrenorm and bln keep fine-tuning at small batches close to it); for the "
                  "others calibration decides what is kept. Fine-tune to recover the rest.",
                  soft_wrap=True)
    return {"original": original, "rows": rows}


if __name__ == "__main__":
    main()
