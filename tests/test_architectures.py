"""Every keras.applications architecture with BatchNormalization, under every target.

Each pair (architecture, target): the model is built at the smallest input it accepts
(weights=None, logits out, BN statistics randomized), converted — exact targets with
`exact=True`, so they verify themselves — saved with `normswap.save_model`, reloaded with
`keras.models.load_model`, and checked: exact targets agree with the original to float32
round-off, inexact ones give finite outputs, and no BatchNormalization is left except at
the sites the plan skipped (with its reason). Random weights and statistics make the two
deepest EfficientNetV2s (M, L) amplify float32 round-off to their whole output scale; for
them an exact conversion must be refused as unverifiable, and the checks run on a variant
with every BN's γ halved, which is well-conditioned.

The default run converts a fixed-seed sample of the pairs (about a minute on 2 CPU cores);
the whole matrix (33 architectures × every target: 40 minutes on 2 cores) runs with

    NORMSWAP_FULL_SWEEP=1 pytest tests/test_architectures.py

(`NORMSWAP_SWEEP_SEED=N` draws another sample.)
"""

import os
import random

import keras
import numpy as np
import pytest

import normswap
from normswap.verify import EXACT_TOLERANCE, outputs_of, probe_batch, roundoff_sensitivity
from tests.checks import relative_gap
from tests.models import randomize_bn

#: Architecture -> the smallest square input side it accepts (checked with Keras 3.15:
#: 32 is the floor of `obtain_input_shape`; Xception needs 71, the Inceptions 75).
ARCHITECTURES = {
    "ResNet50": 32, "ResNet101": 32, "ResNet152": 32,
    "ResNet50V2": 32, "ResNet101V2": 32, "ResNet152V2": 32,
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "MobileNetV3Large": 32,
    "EfficientNetB0": 32, "EfficientNetB1": 32, "EfficientNetB2": 32, "EfficientNetB3": 32,
    "EfficientNetB4": 32, "EfficientNetB5": 32, "EfficientNetB6": 32, "EfficientNetB7": 32,
    "EfficientNetV2B0": 32, "EfficientNetV2B1": 32, "EfficientNetV2B2": 32,
    "EfficientNetV2B3": 32, "EfficientNetV2S": 32, "EfficientNetV2M": 32, "EfficientNetV2L": 32,
    "DenseNet121": 32, "DenseNet169": 32, "DenseNet201": 32,
    "Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75,
    "NASNetMobile": 32, "NASNetLarge": 32,
}
#: The big members of each family: in the full sweep only (same blocks, more of them).
LARGE = {"ResNet152", "ResNet152V2", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
         "EfficientNetV2M", "EfficientNetV2L", "DenseNet201", "InceptionResNetV2",
         "NASNetLarge"}
#: Architectures without any BatchNormalization: the clean "nothing to convert" answer.
WITHOUT_BN = {"ConvNeXtTiny": 32}

TARGETS = sorted(normswap.all_targets())
#: Targets that can reproduce the BN at inference: converted with exact=True.
EXACT = [t for t in TARGETS if normswap.get_target(t).exact_options({}) is not None]

FULL = os.environ.get("NORMSWAP_FULL_SWEEP", "") not in ("", "0")
SEED = int(os.environ.get("NORMSWAP_SWEEP_SEED", "20240611"))
SAMPLE_ARCHITECTURES = 5


def family(name):
    """ResNet50V2 -> "ResNetV2", EfficientNetB3 -> "EfficientNet", NASNetMobile -> "NASNet"."""
    for prefix in ("ResNet", "MobileNet", "EfficientNetV2", "EfficientNet", "DenseNet",
                   "NASNet", "Inception", "Xception"):
        if name.startswith(prefix):
            return prefix + ("V2" if prefix == "ResNet" and name.endswith("V2") else "")
    return name


def sample_pairs(seed=SEED):
    """A fixed-seed sample: architectures outside LARGE from as many families, the targets
    dealt out among them so that every target runs once, in architecture order."""
    rng = random.Random(seed)
    by_family = {}
    for name in sorted(set(ARCHITECTURES) - LARGE):
        by_family.setdefault(family(name), []).append(name)
    families = rng.sample(sorted(by_family), SAMPLE_ARCHITECTURES)
    names = [rng.choice(by_family[f]) for f in families]
    targets = rng.sample(TARGETS, len(TARGETS))
    pairs = [(names[i % len(names)], t) for i, t in enumerate(targets)]
    return sorted(pairs)


def all_pairs():
    return [(a, t) for a in ARCHITECTURES for t in TARGETS]


PAIRS = all_pairs() if FULL else sample_pairs()


def build(name, seed=1):
    side = {**ARCHITECTURES, **WITHOUT_BN}[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3),
                                              classes=10, classifier_activation=None)
    return randomize_bn(model, seed=seed)


def damped(model, factor=0.5):
    """`model` with every BN's γ scaled by `factor`: random weights and statistics make the
    deepest EfficientNetV2s chaotic (float32 round-off in the input moves their output by
    its whole scale); halving γ makes each block contract, and them well-conditioned."""
    for layer in batchnorms(model):
        if layer.scale:
            layer.gamma.assign(layer.gamma * factor)
    return model


@pytest.fixture(scope="module")
def application():
    """`application(name)`: (the built model, its round-off sensitivity, a well-conditioned
    variant or None), cached for the module; only the latest architecture is held (pairs run
    in architecture order), which bounds memory in the full sweep."""
    cache = {}

    def get(name):
        if name not in cache:
            cache.clear()
            model = build(name)
            sensitivity = roundoff_sensitivity(model, probe_batch(model, seed=7))
            conditioned = damped(build(name)) if sensitivity > EXACT_TOLERANCE else None
            cache[name] = (model, sensitivity, conditioned)
        return cache[name]

    return get


def batchnorms(model):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize(("architecture", "target"), PAIRS,
                         ids=[f"{a}-{t}" for a, t in PAIRS])
def test_architecture_converts_saves_and_reloads(application, architecture, target, tmp_path):
    model, sensitivity, conditioned = application(architecture)
    exact = target in EXACT
    if conditioned is not None:
        # The model itself amplifies round-off: an exact conversion either happens to agree
        # or is refused as unverifiable (never blamed on the conversion). Then the checks
        # below run on the well-conditioned variant.
        if exact:
            try:
                normswap.convert(model, target, exact=True)
            except normswap.VerificationError as error:
                assert "amplifies float32 round-off" in str(error)
        model = conditioned
        assert roundoff_sensitivity(model, probe_batch(model, seed=7)) <= EXACT_TOLERANCE
    result = normswap.convert(model, target, exact=exact)  # exact ones verify themselves
    path = normswap.save_model(result.model, tmp_path / f"{architecture}-{target}.keras")
    reloaded = keras.models.load_model(path)
    os.remove(path)  # the full sweep would write gigabytes otherwise

    batch = probe_batch(model, seed=7)
    converted = outputs_of(result.model, batch)
    restored = outputs_of(reloaded, batch)
    for a, b in zip(converted, restored):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.max(np.abs(a)))
    if exact:
        assert result.report.exact
        assert relative_gap(model, reloaded, batch) <= 1e-4
    else:
        assert all(np.all(np.isfinite(y)) for y in restored)

    skipped = {s.site.layer.name: s.reason for s in result.report.skipped}
    left = {layer.name for layer in batchnorms(reloaded)}
    assert left == set(skipped), f"BN left: {sorted(left - set(skipped))}"
    if target == "instancenorm":  # the one target that skips sites: Dense outputs
        assert all("Dense" in reason for reason in skipped.values())
    else:
        assert not skipped, skipped


@pytest.mark.parametrize("target", TARGETS if FULL else ["fold"])
@pytest.mark.parametrize("architecture", sorted(WITHOUT_BN))
def test_architecture_without_batchnorm_has_nothing_to_convert(application, architecture,
                                                               target):
    with pytest.raises(normswap.NothingToConvertError, match="No BatchNormalization"):
        normswap.convert(application(architecture)[0], target)


def test_the_default_sample_covers_every_target():
    pairs = sample_pairs()
    assert {t for _, t in pairs} == set(TARGETS)
    assert sample_pairs() == pairs  # fixed seed: the same sample every run
    names = {a for a, _ in pairs}
    assert not names & LARGE and len({family(a) for a in names}) == len(names)
