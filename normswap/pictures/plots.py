"""`normswap plot MODEL -o out.png`: what a converted model learned, and how faithful it is.

- For every SwitchNormalization layer, its learned importance weights: the softmax shares
  of the instance, layer and batch statistics, for the mean and for the variance — the
  figure of Luo et al. (2018), which the keras-switchnorm README showed its users.
- For a converted model saved with its report (`--report FILE`, the JSON that
  `normswap … --json` prints or `--report-file` writes), the per-site fidelity: R² of each
  new layer's output against its BN's, before and after calibration (and of its block
  after reconstruction).
"""

import json
from pathlib import Path

import numpy as np

from normswap.errors import UsageError
from normswap.layers import SwitchNormalization
from normswap.pictures import pyplot

BRANCHES = ("IN", "LN", "BN")


def switch_shares(model):
    """[(layer name, mean shares, variance shares)] of every SwitchNormalization in `model`
    (nested models included); shares over (IN, LN, BN), or (IN, LN) without the BN branch."""
    import keras

    rows = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, SwitchNormalization) and layer.built:
            shares = [np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(w)))
                      for w in (layer.mean_weights, layer.variance_weights)]
            rows.append((layer.name, *shares))
    return rows


def site_fidelity(report):
    """[(site, R² before, R² after calibration, block R² after reconstruction or None)]
    from a report dict."""
    rows = []
    for site in report.get("sites", []):
        fidelity = site.get("fidelity")
        if fidelity:
            block = fidelity.get("block") or {}
            rows.append((site["path"], fidelity["r2_before"], fidelity["r2_after"],
                         block.get("r2_after")))
    return rows


def read_report(path):
    """A report JSON file (`--report-file`, or `normswap … --json` output) as a dict."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not a normswap report JSON file ({error})") from error
    if not isinstance(report, dict) or "sites" not in report:
        raise UsageError(f"{path}: not a normswap report (no 'sites')")
    return report


def plot(model, output, report=None):
    """Draw the SwitchNorm shares of `model` and the fidelity of `report` to `output`.
    Raises UsageError when there is nothing to draw."""
    switches = switch_shares(model)
    fidelity = site_fidelity(report) if report else []
    if not switches and not fidelity:
        raise UsageError("nothing to plot: the model has no SwitchNormalization layer and no "
                         "report with calibrated sites was given (--report FILE)")
    plt = pyplot()
    panels = [p for p in (switches and "switch", fidelity and "fidelity") if p]
    figure, axes = plt.subplots(len(panels), 1, squeeze=False,
                                figsize=(9, 2.5 + 0.3 * max(len(switches), len(fidelity))
                                         * len(panels)))
    for axis, panel in zip(axes[:, 0], panels):
        if panel == "switch":
            _draw_switches(axis, switches)
        else:
            _draw_fidelity(axis, fidelity)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output


def _draw_switches(axis, rows):
    names = [name for name, _, _ in rows]
    y = np.arange(len(rows))
    colours = ("#264653", "#2a9d8f", "#e9c46a")
    for offset, (label, column) in enumerate((("mean", 1), ("variance", 2))):
        left = np.zeros(len(rows))
        for branch in range(3):
            shares = np.array([r[column][branch] if branch < len(r[column]) else 0.0
                               for r in rows])
            axis.barh(y + 0.4 * offset - 0.2, shares, height=0.38, left=left,
                      color=colours[branch], label=BRANCHES[branch] if offset == 0 else None,
                      hatch="//" if label == "variance" else None, edgecolor="white")
            left += shares
    axis.set_yticks(y, names)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of each statistic (upper bar: mean; hatched: variance)")
    axis.set_title("SwitchNormalization: learned importance of IN, LN and BN statistics")
    axis.legend(loc="lower right", fontsize=8)


def _draw_fidelity(axis, rows):
    names = [r[0] for r in rows]
    y = np.arange(len(rows))
    axis.barh(y - 0.25, [r[1] for r in rows], height=0.25, color="#e76f51",
              label="γ/β carried")
    axis.barh(y, [r[2] for r in rows], height=0.25, color="#2a9d8f", label="calibrated")
    if any(r[3] is not None for r in rows):
        axis.barh(y + 0.25, [r[3] if r[3] is not None else 0 for r in rows], height=0.25,
                  color="#264653", label="block, reconstructed")
    axis.set_yticks(y, names)
    axis.invert_yaxis()
    axis.set_xlim(min(0.0, min(min(r[1], r[2]) for r in rows)), 1.0)
    axis.set_xlabel("R² of the new layer's output against its BN's")
    axis.set_title("Per-site fidelity")
    axis.legend(loc="lower left", fontsize=8)
