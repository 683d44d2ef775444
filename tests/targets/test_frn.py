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
