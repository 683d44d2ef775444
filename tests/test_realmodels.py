"""Conversions of real trained models other people made (tests/data)."""

import numpy as np
import pytest

import normswap
from normswap.verify import outputs_of
from tests.models import count_bn


def cifar(realmodels):
    data = np.load(realmodels / "cifar10_test200_mlperftiny_ic01.npz")
    return data["x"].astype("float32"), data["y"].ravel()


@pytest.mark.parametrize("target", ["fold", "batchrenorm", "frozenbn", "bln"])
def test_resnet8_accuracy_is_exactly_unchanged(real_model, realmodels, target):
    model = real_model("mlperftiny_ic01_resnet8_cifar10.h5")
    x, y = cifar(realmodels)
    result = normswap.convert(model, target, probe=x[:32])
    assert result.report.exact
    before = outputs_of(model, x)[0].argmax(1)
    after = outputs_of(result.model, x)[0].argmax(1)
    np.testing.assert_array_equal(before, after)
    assert np.mean(after == y) == pytest.approx(0.855)


def test_mobilenet_v1_with_depthwise_convs_folds_exactly(real_model):
    model = real_model("mlperftiny_vww01_mobilenetv1_025_96.h5")
    assert count_bn(model) == 27
    samples = np.random.default_rng(0).uniform(0, 1, size=(8, 96, 96, 3)).astype("float32")
    result = normswap.convert(model, "fold", probe=samples)
    assert count_bn(result.model) == 0
    assert {s.site.producer_kind for s in result.report.sites} == {"Conv2D", "DepthwiseConv2D"}
    assert all(s.action == "swap" for s in result.report.sites)
    gn = normswap.convert(model, "groupnorm", probe=samples)
    assert np.all(np.isfinite(outputs_of(gn.model, samples)[0]))


def test_dense_autoencoder_scores_are_kept(real_model, realmodels):
    model = real_model("mlperftiny_ad01_toycar_autoencoder.h5")
    spectrograms = np.load(realmodels / "toyadmos_car_ad01_logmel_32files.npz")["x"][:2]
    windows = np.concatenate([np.stack([s[i:i + 5].ravel() for s in spectrograms])
                              for i in range(0, 190, 10)]).astype("float32")
    for target in ("fold", "frozenbn", "switchnorm"):
        result = normswap.convert(model, target, probe=windows, exact=target == "switchnorm")
        assert result.report.exact, target
        old = np.mean((outputs_of(model, windows)[0] - windows) ** 2, axis=1)
        new = np.mean((outputs_of(result.model, windows)[0] - windows) ** 2, axis=1)
        np.testing.assert_allclose(new, old, rtol=1e-4)
    calibrated = normswap.convert(model, "layernorm", calibration_data=windows)
    assert all(s.site.rank == 2 for s in calibrated.report.sites)
    assert all(s.fidelity["r2_after"] >= s.fidelity["r2_before"] for s in calibrated.report.sites)
