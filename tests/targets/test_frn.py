"""The frn target: FRN + TLU, the TLU standing in for a following ReLU."""

import numpy as np
import pytest

import normswap
from normswap.verify import probe_batch
from tests.models import small_cnn


def test_frn_replaces_the_following_relu_with_its_tlu():
    model = small_cnn()
    new = normswap.swap(model, "frn")
    names = {layer.name for layer in new.layers}
    assert "b1_relu" not in names and "b2_relu" not in names
    assert new.get_layer("b1_bn").use_tlu
    assert not new.get_layer("post_add_bn").use_tlu  # no ReLU after it: TLU off
    sites = {s.site.layer.name: s for s in normswap.convert(model, "frn").report.sites}
    assert "TLU replaces ReLU 'b1_relu'" in sites["b1_bn"].notes
    assert "TLU off" in sites["post_add_bn"].notes[-1]
    assert sites["fc_bn"].action == "fallback" and sites["fc_bn"].new_class == "LayerNormalization"


def test_frn_folds_the_bn_affine_into_its_conv():
    model = small_cnn()
    new = normswap.swap(model, "frn")
    frn = new.get_layer("b1_bn")
    np.testing.assert_array_equal(frn.gamma.numpy(), np.ones(8))
    x = probe_batch(model)[0]
    bn_out = model.get_layer("b1_bn")(model.get_layer("b1_conv")(x), training=False)
    np.testing.assert_allclose(new.get_layer("b1_conv")(x), bn_out, rtol=1e-4, atol=1e-5)
    # Where the BN cannot fold (after an Add), γ and β are copied instead.
    np.testing.assert_allclose(new.get_layer("post_add_bn").gamma.numpy(),
                               model.get_layer("post_add_bn").gamma.numpy())


def test_the_data_chooses_frn_epsilon_in_closed_form_as_by_running_the_layer():
    from normswap.calibration.closed_form import frn_stats, slice_moments
    from normswap.layers import FilterResponseNormalization

    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 2.0, size=(12, 5, 5, 6)).astype("float32")
    y = (np.tanh(x) * rng.uniform(0.5, 2, 6) + rng.normal(0, 0.1, x.shape)).astype("float32")
    moments = slice_moments([x[:5], x[5:]], [y[:5], y[5:]], axis=3)
    for epsilon in (1e-6, 0.1, 3.0):
        stats = frn_stats(moments, epsilon)
        layer = FilterResponseNormalization(epsilon=epsilon, use_tlu=False)
        n = np.asarray(layer(x)).reshape(-1, 6)
        target = y.reshape(-1, 6)
        sse = sst = 0.0
        for c in range(6):
            design = np.stack([n[:, c], np.ones(len(n))], axis=1)
            coef, *_ = np.linalg.lstsq(design, target[:, c], rcond=None)
            sse += np.sum((design @ coef - target[:, c]) ** 2)
            sst += np.sum((target[:, c] - target[:, c].mean()) ** 2)
            gamma, beta = stats.fit(True, True)
            np.testing.assert_allclose([gamma[c], beta[c]], coef, rtol=1e-4, atol=1e-5)
        assert stats.r2(*stats.fit(True, True)) == pytest.approx(1 - sse / sst, abs=1e-4)


def test_calibration_reports_the_epsilon_it_chose(trained):
    model, calibration, _ = trained
    report = normswap.convert(model, "frn", calibration_data=calibration).report
    chosen = [s.params.get("epsilon") for s in report.sites if s.target.name == "frn"]
    assert any(e is not None and e > 1e-6 for e in chosen)
    new = normswap.convert(model, "frn", calibration_data=calibration).model
    epsilons = {s.site.name: s.params.get("epsilon") for s in report.sites}
    for name, epsilon in epsilons.items():
        if epsilon is not None:
            assert new.get_layer(name).epsilon == pytest.approx(epsilon)
