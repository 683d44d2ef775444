"""Affine calibration: re-fit each swapped layer's γ and β on unlabelled samples.

For every inexact swapped site, in topological order, the new layer's per-channel output
affine is fitted by least squares so that its output on the samples matches what the
original BN outputs on the same samples:

    n = the new layer's output with γ = 1, β = 0 (its normalized response)
    y = the BN's output in the original model (or what the target says it stands for)
    γ_c, β_c = argmin Σ (γ_c·n_c + β_c − y_c)²          (see affine_fit.py)

The inputs of site k already come from the calibrated sites before it, so errors do not
compound. Both models run once over the samples (see lockstep.py), whatever the number of
sites. Exact sites are never touched. (Re-estimating the moving statistics of
batch-dependent replacements on the samples, `recalibrate_stats=True`, is statistics.py's
job; `convert` runs it before calibration.)

What to fit, and any choice between parameter sets (the group count), comes from the
target's calibration hooks (`hooks.py`). Where the hooks give the response's statistics in
closed form (GroupNorm, LayerNorm, InstanceNorm and FRN: `closed_form.py`, from one set of
per-(sample, channel) moments for every candidate), the new layer never runs here, only
once in the forward pass with its fitted γ and β; otherwise it runs once per candidate
with γ = 1, β = 0. The BN's output comes from the original's own forward pass. Per site
the result says R² = 1 − SSE/SST of the layer output against its target, before (γ/β as
carried) and after, and the parameters chosen; the plan is never changed.
"""

import dataclasses

import numpy as np

from normswap.calibration.affine_fit import AffineStats, channel_rows
from normswap.calibration.lockstep import Lockstep
from normswap.replay import IDENTITY


@dataclasses.dataclass
class SiteFit:
    """What calibration did at one site: the parameters in force, the fit, notes."""

    params: dict
    fidelity: dict = None  # {"r2_before": ..., "r2_after": ...}
    notes: list = dataclasses.field(default_factory=list)


def _variable_value(variable):
    return None if variable is None else np.asarray(variable.numpy(), np.float64)


class _SiteCalibrator:
    """The lockstep hook: re-fits one swapped layer per call, records a SiteFit."""

    def __init__(self, site_plans, layer_map):
        self.plans = {id(sp.site.layer): sp for sp in site_plans}
        self.layer_map = layer_map
        self.fits = {}  # id(BN) -> SiteFit

    def __call__(self, bn, old_inputs, new_inputs, old_outputs):
        site_plan = self.plans[id(bn)]
        layer = self.layer_map[id(bn)]
        fit = self.fits[id(bn)] = SiteFit(params=dict(site_plan.params))
        hooks = site_plan.target.calibration
        outputs = [hooks.target_output(site_plan.site, site_plan.params, y)
                   for y in old_outputs]
        gamma_var, beta_var, neutral = hooks.weights(layer)
        carried = (_variable_value(gamma_var), _variable_value(beta_var))
        best = None
        for params, stats in self._candidates(site_plan, layer, (gamma_var, beta_var, neutral),
                                              new_inputs, outputs):
            fitted = stats.fit(gamma_var is not None, beta_var is not None)
            score = stats.r2(*fitted)
            if best is None:  # the first choice is the planned one: the "before" numbers
                before = stats.r2(*(c if c is not None else d for c, d in zip(carried, fitted)))
            if best is None or score > best[0]:
                best = (score, params, fitted)
        score, params, (gamma, beta) = best
        hooks.apply_params(layer, params)
        for variable, value in ((gamma_var, gamma), (beta_var, beta)):
            if variable is not None:
                variable.assign(value.astype(variable.dtype))
        fit.params.update(params)
        fit.fidelity = {"r2_before": before, "r2_after": score}

    def _candidates(self, site_plan, layer, weights, new_inputs, outputs):
        """(parameter set, AffineStats of the layer's normalized response with it), the
        planned set first. The target's hooks give the statistics in closed form where
        they can (the layer then never runs here); otherwise the layer runs once per set.
        `weights`: the hooks' (γ variable, β variable, neutral weights) of `layer`."""
        hooks, site = site_plan.target.calibration, site_plan.site
        choices = hooks.choices(site, site_plan.params, new_inputs)
        closed = hooks.response_stats(site, layer, choices, new_inputs, outputs)
        if closed is not None:
            yield from zip(choices, closed)
            return
        targets = [channel_rows(y, site.axis) for y in outputs]
        for params in choices:
            hooks.apply_params(layer, params)
            yield params, _response_stats(layer, *weights, new_inputs, targets, site.axis)


def _response_stats(layer, gamma_var, beta_var, neutral, new_inputs, targets, axis):
    """AffineStats of the layer's normalized response (γ = 1, β = 0, neutral weights
    switched off) against the targets, with the layer's weights restored afterwards."""
    variables = [gamma_var, beta_var] + [v for v, _ in neutral]
    saved = [(v, v.numpy()) for v in variables if v is not None]
    if gamma_var is not None:
        gamma_var.assign(np.ones(gamma_var.shape, gamma_var.dtype))
    if beta_var is not None:
        beta_var.assign(np.zeros(beta_var.shape, beta_var.dtype))
    for variable, value in neutral:
        variable.assign(np.full(variable.shape, value, variable.dtype))
    stats = AffineStats(targets[0].shape[1])
    for x, y in zip(new_inputs, targets):
        stats.add(channel_rows(layer(x, training=False), axis), y)
    for variable, value in saved:
        variable.assign(value)
    return stats


def calibrate(model, layer_map, site_plans, batches, *, reconstruct=None, progress=None):
    """Re-fit the swapped layers of the new model (see module doc) in one lockstep pass.

    `reconstruct` (a `reconstruct.ReconstructOptions`): also fit each block's new layers
    and feeding convs by gradient steps in the same pass (block-wise reconstruction);
    `progress(block_name, blocks_done)` is called after each block.

    Returns (summary dict, {id(BN layer): SiteFit}) — the SiteFits of the sites calibration
    looked at, including shared ones it left alone (with a note saying why).
    """
    sites = [sp for sp in site_plans
             if sp.target is not None and layer_map.get(id(sp.site.layer)) is not IDENTITY
             and not sp.exact]
    fits = {id(sp.site.layer): SiteFit(
        params=dict(sp.params),
        notes=[f"not calibrated: one layer serves {sp.site.calls} call sites with "
               "different inputs"]) for sp in sites if sp.site.calls > 1}
    sites = [sp for sp in sites if sp.site.calls == 1]
    hook = _SiteCalibrator(sites, layer_map)
    hooked = [id(sp.site.layer) for sp in sites]
    if reconstruct is None:
        lockstep = Lockstep(layer_map, hooked=hooked, on_site=hook)
    else:
        from normswap.calibration.reconstruct import Reconstruction

        lockstep = Reconstruction(layer_map, {id(sp.site.layer): sp.site for sp in sites},
                                  reconstruct, progress, hooked=hooked, on_site=hook)
    if sites:  # exact conversions have nothing to fit: no pass at all
        lockstep.run_batches(model, batches)
    fits.update(hook.fits)
    summary = {"samples": int(sum(len(b[0]) for b in batches)),
               "sites_calibrated": sum(f.fidelity is not None for f in hook.fits.values()),
               "layer_calls": lockstep.calls}
    if reconstruct is not None:
        summary["reconstruction"] = _attach_blocks(lockstep.results, sites, fits)
    return summary, fits


def _attach_blocks(results, sites, fits):
    """Each site's block fit (block R² before and after) in its SiteFit; the block list."""
    by_name = {sp.site.name: id(sp.site.layer) for sp in sites}
    for result in results:
        for name in result["sites"]:
            fit = fits.get(by_name.get(name))
            if fit is not None and fit.fidelity is not None:
                fit.fidelity["block"] = {k: result[k] for k in ("block", "r2_before",
                                                                  "r2_after", "improved")}
    return results
