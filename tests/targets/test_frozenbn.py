"""The frozenbn target: the BN's inference map as a fixed per-channel affine."""

import pytest

import normswap
from tests.models import small_cnn


def test_exact_conversion_that_disagrees_fails_loudly(monkeypatch):
    from normswap.targets import frozenbn

    original = frozenbn.bn_affine
    monkeypatch.setattr(frozenbn, "bn_affine", lambda layer: (original(layer)[0] * 1.01,
                                                              original(layer)[1]))
    with pytest.raises(normswap.NormswapError, match="Verification failed"):
        normswap.convert(small_cnn(), "frozenbn")
