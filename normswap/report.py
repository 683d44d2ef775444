"""The per-site report of a conversion: a rich table for people, a dict/JSON for programs.

A report is built from the plan and what each step returned (the targets' replacements,
calibration's per-site fits, distillation's summary, the verification), never by editing
the plan: `build_report(...)`.
"""

import dataclasses

from rich.console import Console
from rich.table import Table

from normswap.plan import FALLBACK, SKIP
from normswap.replay import IDENTITY


@dataclasses.dataclass(frozen=True)
class SiteReport:
    """One BN site after the conversion: its plan and its outcome."""

    plan: object  # the SitePlan
    new_class: str = None  # class of what now stands in the BN's place; "(removed)"
    carried: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    params: dict = dataclasses.field(default_factory=dict)  # as converted (and calibrated)
    fidelity: dict = None  # calibration's R² before/after, when it fitted the site

    site = property(lambda self: self.plan.site)
    target = property(lambda self: self.plan.target)
    action = property(lambda self: self.plan.action)
    reason = property(lambda self: self.plan.reason)
    ws = property(lambda self: self.plan.ws)
    exact = property(lambda self: self.plan.exact)

    def to_dict(self):
        planned = self.plan.to_dict()
        return {**planned, "to": self.new_class or planned["to"], "params": self.params,
                "carried": list(self.carried), "notes": list(self.notes),
                "fidelity": self.fidelity}


@dataclasses.dataclass
class Report:
    model: str
    target: str
    sites: list  # SiteReport, one per BN site
    params_before: int
    params_after: int
    exact: bool
    fidelity: object = None  # verify.Fidelity of the whole model
    calibration: dict = None  # calibration's summary, when it ran
    distillation: dict = None  # distillation's summary, when asked for (or why skipped)

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
            "distillation": self.distillation,
            "sites": [s.to_dict() for s in self.sites],
        }


def _site_report(site_plan, replacement, fit, restated):
    if replacement is None:
        return SiteReport(site_plan, notes=list(site_plan.notes), params=dict(site_plan.params))
    new = replacement.layers[site_plan.site.layer]
    restat = (["moving statistics re-estimated"]
              if new is not IDENTITY and new.name in restated else [])
    return SiteReport(
        site_plan,
        new_class="(removed)" if new is IDENTITY else type(new).__name__,
        carried=list(replacement.carried),
        notes=(list(site_plan.notes) + list(replacement.notes) + restat
               + (fit.notes if fit else [])),
        params=dict(fit.params) if fit else dict(site_plan.params),
        fidelity=fit.fidelity if fit else None)


def build_report(model, new_model, plan, replacements, *, exact, fidelity, fits=None,
                 calibration=None, distillation=None):
    """The report of a conversion of `model` into `new_model` following `plan`.

    `replacements`: {id(BN layer): Replacement} of the swapped sites; `fits`: calibration's
    {id(BN layer): SiteFit}; `calibration`, `distillation`: their summaries.
    """
    fits = fits or {}
    restated = set((calibration or {}).get("recalibrated_stats") or ())
    rows = [_site_report(sp, replacements.get(id(sp.site.layer)), fits.get(id(sp.site.layer)),
                         restated) for sp in plan.sites]
    return Report(model=model.name, target=plan.target.name, sites=rows,
                  params_before=model.count_params(), params_after=new_model.count_params(),
                  exact=exact, fidelity=fidelity, calibration=calibration,
                  distillation=distillation)


SYMBOLS = {"gamma": "γ", "beta": "β", "moving_mean": "μ", "moving_variance": "σ²",
           "epsilon": "ε"}


def _carried_text(carried):
    return " ".join(SYMBOLS.get(name, name) for name in carried) or "-"


def _params_text(params):
    text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items() if k != "auto") or "-"
    return text + (" (auto)" if params.get("auto") else "")


def _fit_text(fidelity):
    """Calibration's R² before → after, and the site's block after reconstruction."""
    if not fidelity:
        return "-"
    text = f"{fidelity['r2_before']:.2f} → {fidelity['r2_after']:.2f}"
    block = fidelity.get("block")
    if block:
        text += f" (block {block['r2_before']:.2f} → {block['r2_after']:.2f})"
    return text


def site_table(rows, title):
    """A rich table with one row per planned (SitePlan) or converted (SiteReport) site."""
    table = Table(title=title, show_lines=False)
    fitted = any(getattr(row, "fidelity", None) for row in rows)
    columns = ["BN site", "to", "params", "carried", "exact"] + (["fit R²"] if fitted else [])
    for column in columns + ["note"]:
        table.add_column(column, overflow="fold")
    for row in rows:
        note = "; ".join(filter(None, [row.reason] + list(row.notes)))
        to = (getattr(row, "new_class", None) or (row.target.name if row.target else None)
              or "[dim]kept[/dim]")
        cells = [row.site.name, to, _params_text(row.params),
                 _carried_text(getattr(row, "carried", ())),
                 "yes" if row.exact else ("-" if row.target is None else "no")]
        if fitted:
            cells.append(_fit_text(getattr(row, "fidelity", None)))
        table.add_row(*cells, note)
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
        given = c.get("samples_given", c["samples"])
        samples = (f"{given} samples" if given == c["samples"] else
                   f"{given} samples ({c['samples']} with mirrored and shifted copies)")
        console.print(f"Calibrated {c['sites_calibrated']} sites on {samples} in "
                      f"one pass ({c['layer_calls']} layer calls)"
                      + ("; moving statistics re-estimated" if c["recalibrated_stats"] else "")
                      + ".", soft_wrap=True)
    blocks = (report.calibration or {}).get("reconstruction")
    if blocks:
        improved = sum(b["improved"] for b in blocks)
        before = sum(b["r2_before"] for b in blocks) / len(blocks)
        after = sum(b["r2_after"] for b in blocks) / len(blocks)
        console.print(f"Reconstructed {len(blocks)} blocks: held-out R² {before:.3f} → "
                      f"{after:.3f} on average; {improved} improved, "
                      f"{len(blocks) - improved} kept as calibrated.", soft_wrap=True)
    if report.distillation and report.distillation.get("skipped"):
        console.print(f"Distillation skipped: {report.distillation['skipped']}.",
                      soft_wrap=True)
    elif report.distillation:
        d = report.distillation
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
        if f.also_calibration:
            console.print(f"Note: {f.also_calibration} of the {f.samples} {f.source} samples "
                          "were calibration samples too: measured on them, the converted "
                          "model looks closer to the original than on new data.",
                          soft_wrap=True)
