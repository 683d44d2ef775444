"""The switchnorm target: switch initialisations, exact mode, statistics carried."""

import numpy as np
import pytest

import normswap
from tests.checks import gap
from tests.models import small_cnn


def test_switchnorm_switch_initialisations():
    model = small_cnn()
    uniform = normswap.convert(model, "switchnorm", switch_init="uniform")
    favoured = normswap.convert(model, "switchnorm")
    exact = normswap.convert(model, "switchnorm", switch_init="exact")
    layer = uniform.model.get_layer("b1_bn")
    np.testing.assert_allclose(layer.mean_weights.numpy(), [0, 0, 0])
    assert favoured.report.sites[0].params["bn_weight"] == pytest.approx(0.9867, abs=1e-4)
    assert exact.report.exact and not favoured.report.exact and not uniform.report.exact
    assert gap(model, exact.model) <= 1e-4
    assert gap(model, favoured.model) < gap(model, uniform.model)
    sn = exact.model.get_layer("b1_bn")
    np.testing.assert_array_equal(sn.moving_mean.numpy(),
                                  model.get_layer("b1_bn").moving_mean.numpy())
    with pytest.raises(normswap.UsageError, match="switch_init"):
        normswap.convert(model, "switchnorm", switch_init="uniform", exact=True)
    with pytest.raises(normswap.UsageError, match="switch_init must be"):
        normswap.convert(model, "switchnorm", switch_init="bogus")
