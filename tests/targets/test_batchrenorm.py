"""The batchrenorm target: every statistic carried, the moving σ from the BN's variance."""

import numpy as np

import normswap
from tests.checks import gap
from tests.models import small_cnn


def test_batchrenorm_carries_mean_and_standard_deviation_and_the_warm_up():
    model = small_cnn()
    result = normswap.convert(model, "batchrenorm", warmup_steps=100)
    assert result.report.exact and gap(model, result.model) <= 1e-4
    bn, brn = model.get_layer("b1_bn"), result.model.get_layer("b1_bn")
    np.testing.assert_allclose(brn.moving_mean.numpy(), bn.moving_mean.numpy())
    np.testing.assert_allclose(brn.moving_stddev.numpy(),
                               np.sqrt(bn.moving_variance.numpy() + bn.epsilon), rtol=1e-6)
    np.testing.assert_allclose(brn.gamma.numpy(), bn.gamma.numpy())
    assert brn.warmup_steps == 100 and float(brn.step.numpy()) == 0.0
    site = result.report.sites[0]
    assert site.params == {"warmup_steps": 100} and "moving_variance" in site.carried
