"""BN sites + target + options -> a plan: per site, what will change, or why it will not.

The plan is built without touching the model; `normswap --dry-run` prints it and stops.
A conversion never changes its plan: the report (`report.py`) is built from the plan and
the outcome of each step.
"""

import dataclasses
import fnmatch

from normswap.errors import UsageError
from normswap.graph import find_sites
from normswap.targets import Skip, all_targets, get_target
from normswap.ws import ws_note

SWAP, FALLBACK, SKIP = "swap", "fallback", "skip"


@dataclasses.dataclass
class SitePlan:
    """One BN site's fate. `target` is None when the site is skipped."""

    site: object
    target: object
    params: dict
    action: str
    reason: str = None
    notes: list = dataclasses.field(default_factory=list)
    ws: bool = False  # the producer conv becomes its weight-standardized counterpart

    @property
    def exact(self):
        return self.target is not None and not self.ws and self.target.is_exact(self.params)

    def to_dict(self):
        return {
            "path": self.site.name,
            "action": self.action,
            "from": type(self.site.layer).__name__,
            "to": self.target.name if self.target else None,
            "target": self.target.name if self.target else None,
            "params": self.params,
            "exact": self.exact,
            "ws": self.ws,
            "reason": self.reason,
            "notes": list(self.notes),
            "channels": self.site.channels,
            "rank": self.site.rank,
            "producer": self.site.producer.name if self.site.producer is not None else None,
        }


@dataclasses.dataclass
class Plan:
    target: object
    options: dict
    sites: list

    @property
    def swapped(self):
        return [s for s in self.sites if s.target is not None]

    def to_dict(self):
        return {"target": self.target.name, "options": _jsonable(self.options),
                "sites": [s.to_dict() for s in self.sites]}


def _jsonable(options):
    return {k: v for k, v in options.items()
            if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}


def known_options():
    """Every target-specific option a registered target declares, with its default."""
    options = {}
    for target in all_targets().values():
        options.update(target.options)
    return options


def _patterns(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _matches(site, patterns):
    return any(fnmatch.fnmatchcase(site.layer.name, p) or fnmatch.fnmatchcase(site.name, p)
               for p in patterns)


def _selection_skip(site, only, skip):
    if only and not _matches(site, only):
        return "not selected by --only"
    if skip and _matches(site, skip):
        return "excluded by --skip"
    return None


def make_plan(model, target, *, only=None, skip=None, exact=False, ws=False, **options):
    """Decide every BN site's fate. Raises UsageError for unknown options or targets."""
    target = get_target(target)
    defaults = known_options()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UsageError(f"Unknown option(s) {', '.join(unknown)}. "
                         f"Target options: {', '.join(sorted(defaults)) or 'none'}.")
    options = {**defaults, **options}
    if exact:
        options = _exact_options(target, options, ws)
    if ws and not target.normalizes:
        raise UsageError(f"ws=True standardizes the convs that feed a normalization, but "
                         f"'{target.name}' removes the normalization.")
    only, skip = _patterns(only), _patterns(skip)
    plans = [_plan_site(site, target, options, only, skip, ws) for site in find_sites(model)]
    return Plan(target=target, options={**options, "exact": exact, "ws": ws}, sites=plans)


def _exact_options(target, options, ws):
    if ws:
        raise UsageError("ws=True standardizes the conv kernels, which changes what the model "
                         "computes, so it cannot be combined with exact=True.")
    exact_options = target.exact_options(options)
    if exact_options is None:
        exact_names = [n for n, t in all_targets().items() if t.exact_options({}) is not None]
        raise UsageError(
            f"Target '{target.name}' cannot reproduce a BatchNormalization at inference, "
            f"so exact=True is refused. Targets that can: {', '.join(exact_names)}.")
    return exact_options


def _hidden_skip(site):
    holder = site.inside
    return (f"called from the Python code of the custom layer '{holder.name}' "
            f"({type(holder).__name__}), not from the model's graph: normswap cannot "
            "rewrite inside it")


def _statistics_skip(site, target):
    """A compatibility layer of a Keras-2 library has no BN statistics to carry."""
    if site.is_batchnorm or not target.needs_bn_statistics:
        return None
    usable = ", ".join(n for n, t in all_targets().items() if not t.needs_bn_statistics)
    return Skip(f"a {type(site.layer).__name__} (a Keras-2 library's layer) has no "
                f"BatchNormalization statistics for '{target.name}' to carry; targets that "
                f"need none: {usable}")


def _plan_site(site, target, options, only, skip, ws):
    reason = _hidden_skip(site) if site.inside is not None else _selection_skip(site, only, skip)
    if reason:
        return SitePlan(site, None, {}, SKIP, reason)
    refusal = _statistics_skip(site, target) or target.check(site, options)
    if refusal is None:
        site_plan = SitePlan(site, target, target.parameters(site, options), SWAP,
                             notes=target.warnings(site))
    elif refusal.fallback and get_target(refusal.fallback).check(site, options) is None:
        fallback = get_target(refusal.fallback)
        site_plan = SitePlan(site, fallback, fallback.parameters(site, options), FALLBACK,
                             f"{refusal.reason}; used {fallback.name}")
    else:
        return SitePlan(site, None, {}, SKIP, refusal.reason)
    if ws and site_plan.target.normalizes:
        note = ws_note(site)
        site_plan.ws = note is None
        if note:
            site_plan.notes.append(note)
    return site_plan
