"""The per-site report of a conversion: a rich table for people, a dict/JSON for programs."""

import dataclasses
import json

from rich.console import Console
from rich.table import Table

from normswap.plan import FALLBACK, SKIP


@dataclasses.dataclass
class Report:
    model: str
    target: str
    sites: list  # SitePlan, outcome filled in
    params_before: int
    params_after: int
    exact: bool
    fidelity: object = None  # verify.Fidelity on the probe (or user) batch
    calibration: dict = None

    @property
    def swapped(self):
        return [s for s in self.sites if s.action != SKIP]

    @property
    def skipped(self):
        return [s for s in self.sites if s.action == SKIP]

    def to_dict(self):
        return {
            "model": self.model,
            "target": self.target,
            "summary": {
                "sites": len(self.sites),
                "swapped": len(self.swapped),
                "fallback": sum(s.action == FALLBACK for s in self.sites),
                "skipped": len(self.skipped),
                "params_before": self.params_before,
                "params_after": self.params_after,
                "exact": self.exact,
            },
            "fidelity": self.fidelity.to_dict() if self.fidelity else None,
            "calibration": self.calibration,
            "sites": [s.to_dict() for s in self.sites],
        }

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, default=str)


SYMBOLS = {"gamma": "γ", "beta": "β", "moving_mean": "μ", "moving_variance": "σ²",
           "epsilon": "ε"}


def _carried_text(carried):
    return " ".join(SYMBOLS.get(name, name) for name in carried) or "-"


def _params_text(params):
    text = ", ".join(f"{k}={v}" for k, v in params.items() if k != "auto") or "-"
    return text + (" (auto)" if params.get("auto") else "")


def site_table(site_plans, title):
    """A rich table with one row per planned or converted site."""
    table = Table(title=title, show_lines=False)
    fitted = any(sp.fidelity for sp in site_plans)
    columns = ["BN site", "to", "params", "carried", "exact"] + (["fit R²"] if fitted else [])
    for column in columns + ["note"]:
        table.add_column(column, overflow="fold")
    for sp in site_plans:
        note = "; ".join(filter(None, [sp.reason] + list(sp.notes)))
        to = sp.new_class or (sp.target.name if sp.target else "[dim]kept[/dim]")
        row = [sp.site.name, to, _params_text(sp.params), _carried_text(sp.carried),
               "yes" if sp.exact else ("-" if sp.target is None else "no")]
        if fitted:
            row.append(f"{sp.fidelity['r2_before']:.2f} → {sp.fidelity['r2_after']:.2f}"
                       if sp.fidelity else "-")
        table.add_row(*row, note)
    return table


def render(report, console=None):
    """Print the report's table and summary."""
    console = console or Console()
    console.print(site_table(report.sites, f"{report.model}: BatchNormalization → {report.target}"))
    summary = report.to_dict()["summary"]
    console.print(
        f"{summary['swapped']} of {summary['sites']} sites converted "
        f"({summary['fallback']} by fallback), {summary['skipped']} kept; "
        f"parameters {report.params_before:,} → {report.params_after:,}.", soft_wrap=True)
    if report.calibration:
        c = report.calibration
        console.print(f"Calibrated {c['sites_calibrated']} sites on {c['samples']} samples in "
                      f"one pass ({c['layer_calls']} layer calls)"
                      + ("; moving statistics re-estimated" if c["recalibrated_stats"] else "")
                      + ".", soft_wrap=True)
        if "distillation" in c:
            d = c["distillation"]
            console.print(f"Distilled {d['steps']} steps ({', '.join(d['loss_kinds'])}): "
                          f"loss {d['first_loss']:.4g} → {d['last_loss']:.4g}.", soft_wrap=True)
    if report.fidelity is not None:
        f = report.fidelity
        line = (f"Output deviation on {f.samples} {f.source} samples: max {f.max_abs:.3g}, "
                f"mean {f.mean_abs:.3g} ({f.relative:.2e} of output scale)")
        if f.top1_agreement is not None:
            line += f", top-1 agreement {100 * f.top1_agreement:.1f} %"
        verdict = "exact: verified" if report.exact else "not exact by design"
        console.print(f"{line} — {verdict}.", soft_wrap=True)
