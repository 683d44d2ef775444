"""Property-based tests: random small models (tests/strategies.py) under every target.

For every drawn model and target, normswap either converts — an exact target reproducing
the original (relative gap ≤ 1e-4 on a fresh batch), every target giving finite outputs,
keeping the names of the layers it does not remove, leaving the original untouched and
saving a model that reloads with the same outputs (or refusing to write one that Keras
cannot load back) — or refuses with a declared `normswap.NormswapError`. Never another
exception, and never a failed verification.

The "ci" profile (default) runs a fixed set of examples; HYPOTHESIS_PROFILE=deep many more
(see tests/strategies.py).
"""

import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normswap
from normswap.verify import outputs_of, probe_batch, roundoff_sensitivity
from tests.models import randomize_bn
from tests.strategies import ConvBNBlock, build_model, recipes

TARGETS = sorted(normswap.all_targets())
EXACT = [t for t in TARGETS if normswap.get_target(t).exact_options({}) is not None]
INEXACT = [t for t in TARGETS if t not in EXACT]
#: Refusals a well-formed model may legitimately get: every site skipped by the target
#: (e.g. instancenorm on Dense outputs only).
REFUSALS = (normswap.NothingToConvertError,)


def all_layers(model):
    return model._flatten_layers(include_self=False, recursive=True)


def graph_layers(model):
    """The layers of the model's graph and of its nested graph models (not the sublayers
    of custom layers, which get new automatic names when re-created from their config)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(graph_layers(layer))
    return found


def batchnorm_names(model):
    return {layer.name for layer in all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)}


def shared_across_models(model):
    """The layers that belong to more than one of the model's (nested) graph models."""
    owners = {}
    for owner in [model] + [m for m in all_layers(model) if isinstance(m, keras.Model)]:
        for layer in owner.layers:
            owners.setdefault(id(layer), (layer, set()))[1].add(id(owner))
    return [layer for layer, models in owners.values() if len(models) > 1]


def convert_or_refuse(model, target, **options):
    """The Conversion, or None for a declared refusal (checked to be one we expect)."""
    try:
        return normswap.convert(model, target, **options)
    except REFUSALS as error:
        assert "nothing to convert" in str(error)
        plan = normswap.plan(model, target, **options)
        assert not plan.swapped and all(s.reason for s in plan.sites)
        return None


def check_conversion(model, result, tmp_path, exact):
    batch = probe_batch(model, seed=11)
    old = outputs_of(model, batch)
    new = outputs_of(result.model, batch)
    assert all(np.all(np.isfinite(y)) for y in new)
    if exact:
        assert result.report.exact
        # tests.checks.relative_gap, with verify's floor on the scale: a tiny model may
        # output only zeros (a ReLU after a one-channel BN)
        scale = max(1e-6, max(float(np.max(np.abs(y))) for y in old))
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(old, new)) <= 1e-4 * scale

    # Names: nothing renamed; every layer kept unless the conversion removed it.
    removed = {r.site.layer.name for r in result.report.swapped}
    removed |= {n.split("'")[1] for r in result.report.sites for n in r.notes
                if n.startswith(("TLU replaces ReLU", "replaces ReLU"))}
    old_names = {layer.name for layer in graph_layers(model)}
    new_names = {layer.name for layer in graph_layers(result.model)}
    assert new_names <= old_names
    assert old_names - removed <= new_names
    # every BN left is a skipped site (those inside custom layers counted, not named)
    skipped = result.report.skipped
    assert len(batchnorm_names(result.model)) == len(skipped)
    assert {r.site.layer.name for r in skipped if r.site.inside is None} <= new_names

    try:
        path = normswap.save_model(result.model, tmp_path / "model.keras", force=True)
    except normswap.SaveError as error:
        # Keras 3.15 cannot load back a layer shared by two models (a nested model and its
        # parent, or two nested models), so normswap writes no such file
        # (saving/round_trip.py). Not normswap's doing: the original fails the same way.
        assert shared_across_models(model) and "belongs to" in str(error)
        assert list(tmp_path.iterdir()) == []
        original = tmp_path / "original.keras"
        model.save(original)
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras.models.load_model(original)
        original.unlink()
        return old
    try:
        reloaded = keras.models.load_model(path)
    finally:
        path.unlink()
    for a, b in zip(new, outputs_of(reloaded, batch)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * max(1.0, np.max(np.abs(a))))
    return old


@given(recipe=recipes(), target=st.sampled_from(EXACT))
def test_exact_targets_reproduce_the_model(recipe, target, tmp_path_factory):
    model = build_model(recipe)
    weights = [w.copy() for w in model.get_weights()]
    result = convert_or_refuse(model, target, exact=True)
    if result is not None:
        check_conversion(model, result, tmp_path_factory.mktemp("exact"), exact=True)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


@given(recipe=recipes(), target=st.sampled_from(INEXACT))
def test_inexact_targets_convert_or_refuse(recipe, target, tmp_path_factory):
    model = build_model(recipe)
    weights = [w.copy() for w in model.get_weights()]
    result = convert_or_refuse(model, target)
    if result is not None:
        check_conversion(model, result, tmp_path_factory.mktemp("inexact"), exact=False)
        assert result.report.fidelity is not None
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


@given(recipe=recipes())
def test_every_batchnorm_is_a_site_and_every_target_plans(recipe):
    model = build_model(recipe)
    sites = normswap.find_sites(model)
    assert {s.layer.name for s in sites} == batchnorm_names(model)
    assert all(0 <= s.axis < s.rank and s.channels == s.input_shape[s.axis] for s in sites)
    for target in TARGETS:
        plan = normswap.plan(model, target, exact=target in EXACT)
        assert len(plan.sites) == len(sites)
        for site_plan in plan.sites:
            assert site_plan.target is not None or site_plan.reason
            if target in EXACT and site_plan.target is not None:
                assert site_plan.exact


# ---------------------------------------------------------------------------------------
# Regressions: what the properties found, pinned as plain examples


def test_unnamed_inputs_keep_their_layer_names():
    """rewrite.py named the new InputLayer after the input *tensor* ("keras_tensor_7")
    rather than the InputLayer ("input_layer"): unnamed inputs came back renamed."""
    first, second = keras.Input((4, 4, 3)), keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Add()([first, second]))
    model = keras.Model([first, second], x)
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                                   keras.layers.BatchNormalization()])
    for original in (model, sequential):
        new = normswap.swap(original, "frozenbn")
        assert [layer.name for layer in graph_layers(new)] == [
            layer.name for layer in graph_layers(original)]
        assert [t._keras_history.operation.name for t in new.inputs] == [
            t._keras_history.operation.name for t in original.inputs]


def test_batchnorm_inside_a_custom_layer_is_a_skipped_site():
    """graph.py saw only BNs called from the graph: one inside a custom layer's Python code
    was silently left in place, and a model with only such BNs was said to have none."""
    inputs = keras.Input((6, 6, 3))
    hidden = ConvBNBlock(4, name="block")
    x = keras.layers.Conv2D(4, 1, name="conv")(hidden(inputs))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    sites = normswap.find_sites(model)
    assert [(s.name, s.inside) for s in sites] == [("bn", None),
                                                   (f"block/{hidden.bn.name}", hidden)]
    assert sites[1].channels == 4 and sites[1].input_shape == (None, 6, 6, 4)
    result = normswap.convert(model, "fold")
    (skipped,) = result.report.skipped
    assert skipped.site.layer is hidden.bn and "custom layer 'block'" in skipped.reason
    only_hidden = keras.Model(inputs, hidden(inputs))
    with pytest.raises(normswap.NothingToConvertError, match="None of the 1 "):
        normswap.convert(only_hidden, "frozenbn")


def test_a_model_that_amplifies_round_off_is_refused_as_unverifiable():
    """An exact conversion of a chaotic model (here: 40 steps of the logistic map after a
    BN) cannot agree to 1e-4, whatever the rewrite: verify.py blamed the conversion
    ("please report this model"); it now measures the original's own round-off
    sensitivity and says the model cannot be verified. (Found by the architecture sweep:
    EfficientNetV2M/L with random weights and BN statistics move by 50-130 % of their
    output when their input moves by float32 round-off.)"""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(8)(inputs))
    x = keras.layers.Activation("sigmoid")(x)
    for _ in range(40):  # r = 3.9: chaotic, and never rounds to the fixed point 0
        x = 3.9 * x * (1.0 - x)
    model = randomize_bn(keras.Model(inputs, x), seed=5)
    assert roundoff_sensitivity(model, probe_batch(model)) > 1e-4
    with pytest.raises(normswap.VerificationError, match="amplifies float32 round-off"):
        normswap.convert(model, "fold")  # the folded kernel rounds differently
    small = randomize_bn(keras.Model(inputs, keras.layers.Dense(4)(inputs)))
    assert roundoff_sensitivity(small, probe_batch(small)) < 1e-5
