"""What every registered target promises, checked on small sites of every kind.

A target plans (`check`, `parameters`), replaces (`replace`, which never changes the
parameters it is given) and carries: what it says it carried is really there, and a target
that declares itself exact really reproduces the BN.
"""

import ast
import copy
import pathlib

import keras
import numpy as np
import pytest

import normswap
from normswap.graph import find_sites
from normswap.plan import known_options
from normswap.replay import IDENTITY
from normswap.targets import Replacement, Skip, Target, all_targets
from tests.checks import relative_gap
from tests.models import randomize_biases, randomize_bn

TARGETS = sorted(all_targets())
BN_NAMES = {"gamma", "beta", "moving_mean", "moving_variance", "epsilon"}


def site_models():
    """One-site models: conv+BN+ReLU, BN after an Add, a Dense BN, channels-first."""
    models = {}
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    models["conv_relu"] = keras.Model(inputs, keras.layers.ReLU(name="relu")(x))
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Add()([keras.layers.Conv2D(4, 1)(inputs), inputs])
    models["after_add"] = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    inputs = keras.Input((5,))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(6, name="fc")(inputs))
    models["dense"] = keras.Model(inputs, x)
    inputs = keras.Input((3, 6, 6))
    x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv")(inputs)
    models["channels_first"] = keras.Model(
        inputs, keras.layers.BatchNormalization(axis=1, name="bn")(x))
    return {name: randomize_biases(randomize_bn(m, seed=7), seed=8) for name, m in models.items()}


MODELS = site_models()


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", TARGETS)
def test_plan_and_replace_contract(name, kind):
    target = all_targets()[name]
    model = MODELS[kind]
    (site,) = find_sites(model)
    options = known_options()
    refusal = target.check(site, options)
    if refusal is not None:
        assert isinstance(refusal, Skip) and refusal.reason
        return
    params = target.parameters(site, options)
    frozen = copy.deepcopy(params)
    replacement = target.replace(site, params)
    assert params == frozen, "replace must not change the parameters it is given"
    assert isinstance(replacement, Replacement) and site.layer in replacement.layers
    new = replacement.layers[site.layer]
    assert new is IDENTITY or new.built
    weight_names = set()
    for layer in replacement.layers.values():
        if layer is not IDENTITY:
            weight_names |= {w.path.split("/")[-1] for w in layer.weights}
    for carried in replacement.carried:
        assert carried in weight_names or carried in BN_NAMES, carried


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", [n for n in TARGETS if all_targets()[n].exact])
def test_exact_targets_reproduce_the_bn(name, kind):
    model = MODELS[kind]
    result = normswap.convert(model, name)
    assert result.report.exact
    batch = [np.random.default_rng(9).normal(size=(4,) + tuple(model.input.shape[1:]))]
    assert relative_gap(model, result.model, batch) <= 1e-5


def test_targets_are_registered_subclasses_with_documented_options():
    for name, target in all_targets().items():
        assert isinstance(target, Target) and target.name == name and target.summary
        assert all(isinstance(option, str) for option in target.options)


def test_target_modules_never_import_each_other():
    folder = pathlib.Path(normswap.targets.__file__).parent
    names = {path.stem for path in folder.glob("*.py")} - {"__init__", "base"}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = node.module.split(".")
                assert not (imported[:2] == ["normswap", "targets"] and len(imported) > 2
                            and imported[2] in names), f"{path.name} imports {node.module}"
