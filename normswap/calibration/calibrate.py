"""Affine calibration: re-fit each swapped layer's γ and β on unlabelled samples.

For every inexact swapped site, in topological order, the new layer's per-channel output
affine is fitted by least squares so that its output on the samples matches what the
original BN outputs on the same samples:

    n = the new layer's output with γ = 1, β = 0 (its normalized response)
    y = the BN's output in the original model
    γ_c, β_c = argmin Σ (γ_c·n_c + β_c − y_c)²   →   γ_c = cov(n_c, y_c)/var(n_c),
                                                      β_c = ȳ_c − γ_c·n̄_c

The sums behind it are accumulated batch by batch in float64 (closed form, no optimizer),
and the inputs of site k already come from the calibrated sites before it, so errors do not
compound. Both models run once over the samples (see lockstep.py), whatever the number of
sites. Exact sites are never touched. Optionally (`recalibrate_stats=True`) the moving mean
and variance of batch-dependent layers are re-estimated on the samples first (a new domain).

Per site the fit's quality is R² = 1 − SSE/SST of the layer output against the BN output,
before (γ/β as carried) and after. Targets with a free parameter (the group count) may offer
several choices; the one with the best R² wins.
"""

import numpy as np
from keras import ops

from normswap.lockstep import Lockstep


class AffineStats:
    """Per-channel count, means and centred second moments of (n, y), merged batch by batch.

    Each batch's means and centred sums are computed on the backend in float32 and merged
    into float64 totals with the pairwise update of Chan et al., which stays accurate when
    the means are large against the spread (no E[x²] − E[x]² cancellation).
    """

    def __init__(self, channels):
        self.count = 0.0
        self.mean_n = np.zeros(channels)
        self.mean_y = np.zeros(channels)
        self.cnn = np.zeros(channels)  # Σ (n − n̄)²
        self.cny = np.zeros(channels)  # Σ (n − n̄)(y − ȳ)
        self.cyy = np.zeros(channels)  # Σ (y − ȳ)²

    def add(self, n, y):
        """Merge one batch of (positions, channels) float32 tensors."""
        k = float(n.shape[0])
        mean_n, mean_y = ops.mean(n, axis=0), ops.mean(y, axis=0)
        dn, dy = n - mean_n, y - mean_y
        batch = [np.asarray(ops.convert_to_numpy(v), np.float64) for v in (
            mean_n, mean_y, ops.sum(dn * dn, axis=0), ops.sum(dn * dy, axis=0),
            ops.sum(dy * dy, axis=0))]
        total = self.count + k
        delta_n, delta_y = batch[0] - self.mean_n, batch[1] - self.mean_y
        weight = self.count * k / total
        self.cnn += batch[2] + delta_n * delta_n * weight
        self.cny += batch[3] + delta_n * delta_y * weight
        self.cyy += batch[4] + delta_y * delta_y * weight
        self.mean_n += delta_n * k / total
        self.mean_y += delta_y * k / total
        self.count = total

    def fit(self, has_gamma, has_beta):
        """The least-squares (γ, β) per channel; γ fixed at 1 / β at 0 where absent."""
        n, mean_n, mean_y = self.count, self.mean_n, self.mean_y
        if has_gamma and has_beta:
            gamma = np.where(self.cnn > 1e-12 * n, self.cny / np.maximum(self.cnn, 1e-300), 0.0)
            return gamma, mean_y - gamma * mean_n
        if has_gamma:
            snn = self.cnn + n * mean_n ** 2
            sny = self.cny + n * mean_n * mean_y
            return np.where(snn > 0, sny / np.maximum(snn, 1e-300), 0.0), np.zeros_like(snn)
        if has_beta:
            return np.ones_like(mean_n), mean_y - mean_n
        return np.ones_like(mean_n), np.zeros_like(mean_n)

    def r2(self, gamma, beta):
        """1 − SSE/SST over all channels for the output γ·n + β."""
        residual_mean = self.mean_y - gamma * self.mean_n - beta
        sse = (self.cyy - 2 * gamma * self.cny + gamma ** 2 * self.cnn
               + self.count * residual_mean ** 2)
        return float(1.0 - max(sse.sum(), 0.0) / max(self.cyy.sum(), 1e-300))


def channel_rows(value, axis):
    """A tensor as a float32 (positions, channels) backend tensor, channels from `axis`."""
    value = ops.cast(value, "float32")
    value = ops.moveaxis(value, axis, -1)
    return ops.reshape(value, (-1, value.shape[-1]))


def _variable_value(variable):
    return None if variable is None else np.asarray(variable.numpy(), np.float64)


class _SiteCalibrator:
    """The lockstep hook: re-fits one swapped layer per call."""

    def __init__(self, site_plans, layer_map, recalibrate_stats):
        self.plans = {id(sp.site.layer): sp for sp in site_plans}
        self.layer_map = layer_map
        self.recalibrate_stats = recalibrate_stats

    def __call__(self, bn, old_inputs, new_inputs):
        site_plan = self.plans[id(bn)]
        layer = self.layer_map[id(bn)]
        target, axis = site_plan.target, site_plan.site.axis
        if self.recalibrate_stats:
            self._restat(site_plan, layer, new_inputs)
        if site_plan.exact:
            return
        outputs = [target.calibration_target(site_plan.site, site_plan.params,
                                             bn(x, training=False)) for x in old_inputs]
        targets = [channel_rows(y, axis) for y in outputs]
        gamma_var, beta_var, neutral = target.calibration_weights(layer)
        carried = (_variable_value(gamma_var), _variable_value(beta_var))
        choices = target.calibration_choices(site_plan.site, site_plan.params)
        if len(choices) > 1:  # a target that can rank its choices cheaply spares the re-runs
            ranked = target.rank_choices(site_plan.site, layer, choices, new_inputs, outputs)
            if ranked is not None:
                choices = [choices[0]] + ([choices[ranked]] if ranked else [])
        best = None
        for params in choices:
            target.apply_params(layer, params)
            stats = self._response_stats(layer, gamma_var, beta_var, neutral, new_inputs,
                                         targets, axis)
            fitted = stats.fit(gamma_var is not None, beta_var is not None)
            score = stats.r2(*fitted)
            if best is None:  # the first choice is the planned one: the "before" numbers
                before = stats.r2(*(c if c is not None else d for c, d in zip(carried, fitted)))
            if best is None or score > best[0]:
                best = (score, params, fitted)
        score, params, (gamma, beta) = best
        target.apply_params(layer, params)
        site_plan.params.update(params)
        for variable, value in ((gamma_var, gamma), (beta_var, beta)):
            if variable is not None:
                variable.assign(value.astype(variable.dtype))
        site_plan.fidelity = {"r2_before": before, "r2_after": score}

    def _response_stats(self, layer, gamma_var, beta_var, neutral, new_inputs, targets, axis):
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

    def _restat(self, site_plan, layer, new_inputs):
        stats = AffineStats(site_plan.site.channels)
        for x in new_inputs:
            rows = channel_rows(x, site_plan.site.axis)
            stats.add(rows, rows)
        mean, var = stats.mean_n, stats.cnn / stats.count
        if site_plan.target.set_statistics(layer, mean, var, site_plan.site.epsilon):
            site_plan.notes.append("moving statistics re-estimated")


def calibrate(model, layer_map, site_plans, batches, *, recalibrate_stats=False):
    """Re-fit the swapped layers of the new model (see module doc) in one lockstep pass.

    Returns a summary dict; per-site R² before/after goes to each SitePlan's `fidelity`.
    """
    sites = [sp for sp in site_plans
             if sp.target is not None and not isinstance(layer_map.get(id(sp.site.layer)), str)
             and (recalibrate_stats or not sp.exact)]
    for shared in [sp for sp in sites if sp.site.calls > 1]:
        shared.notes.append(f"not calibrated: one layer serves {shared.site.calls} call sites "
                            "with different inputs")
    sites = [sp for sp in sites if sp.site.calls == 1]
    hook = _SiteCalibrator(sites, layer_map, recalibrate_stats)
    lockstep = Lockstep(layer_map, hooked=[id(sp.site.layer) for sp in sites], on_site=hook)
    if sites:  # exact conversions have nothing to fit: no pass at all
        lockstep.run(model, batches)
    return {"samples": int(sum(len(b[0]) for b in batches)),
            "sites_calibrated": sum(sp.fidelity is not None for sp in sites),
            "recalibrated_stats": bool(recalibrate_stats),
            "layer_calls": lockstep.calls}
