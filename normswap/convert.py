"""The public entry points: plan, convert and swap."""

import dataclasses

import keras

from normswap.errors import NormswapError
from normswap.plan import make_plan
from normswap.report import Report
from normswap.rewrite import rebuild
from normswap.targets import IDENTITY
from normswap.verify import verify as verify_models


@dataclasses.dataclass
class Conversion:
    """What `convert` returns: the new model and the report of what changed."""

    model: keras.Model
    report: Report


def _as_model(model, custom_objects=None):
    if isinstance(model, keras.Model):
        return model
    from normswap.io import load_model  # a path or keras:<Name>
    return load_model(model, custom_objects=custom_objects)


def plan(model, target, *, only=None, skip=None, exact=False, **options):
    """The plan of a conversion (per site: target, parameters, or why skipped), no model built."""
    return make_plan(_as_model(model), target, only=only, skip=skip, exact=exact, **options)


def _apply(site_plan):
    replacement = site_plan.target.replace(site_plan.site, site_plan.params)
    site_plan.carried = replacement.carried
    site_plan.notes += replacement.notes
    new = replacement.layers[site_plan.site.layer]
    site_plan.new_class = "(removed)" if new is IDENTITY else type(new).__name__
    return replacement.layers


def convert(model, target, *, only=None, skip=None, exact=False, calibration_data=None,
            probe=None, **options):
    """Swap every selected BatchNormalization of `model` for `target`, carry, verify.

    `model` is a keras.Model (left untouched), or a path / `keras:<Name>` to load.
    Returns a `Conversion` with `.model` and `.report`. Raises NormswapError when there is
    nothing to convert or when an exact conversion does not reproduce the original.
    """
    model = _as_model(model)
    the_plan = make_plan(model, target, only=only, skip=skip, exact=exact, **options)
    if not the_plan.sites:
        raise NormswapError(f"No BatchNormalization found in '{model.name}': nothing to convert.")
    if not the_plan.swapped:
        raise NormswapError(f"None of the {len(the_plan.sites)} BatchNormalization sites of "
                            f"'{model.name}' was selected or convertible: nothing to convert.")
    edits = {}
    for site_plan in the_plan.swapped:
        edits.update({id(old): new for old, new in _apply(site_plan).items()})
    new_model = rebuild(model, edits)
    calibration = None
    if calibration_data is not None:
        from normswap.calibrate import calibrate
        calibration = calibrate(model, new_model, the_plan, calibration_data)
    is_exact = all(sp.exact for sp in the_plan.swapped)
    fidelity = verify_models(model, new_model, probe, exact=is_exact)
    report = Report(model=model.name, target=the_plan.target.name, sites=the_plan.sites,
                    params_before=model.count_params(), params_after=new_model.count_params(),
                    exact=is_exact, fidelity=fidelity, calibration=calibration)
    return Conversion(model=new_model, report=report)


def swap(model, target, **options):
    """`convert(...)` returning only the new model (see `convert` for the arguments)."""
    return convert(model, target, **options).model
