"""One validation of ε (and of the other shared arguments) for every bundled layer."""

import pytest

from normswap.layers import (
    FRN,
    BatchLayerNormalization,
    BatchRenormalization,
    EvoNormB0,
    EvoNormS0,
    SwitchNormalization,
    WSConv2D,
)
from normswap.layers._checks import check_count, check_epsilon, check_flag, check_momentum

LAYERS = [BatchLayerNormalization, BatchRenormalization, EvoNormB0, EvoNormS0, FRN,
          SwitchNormalization]


@pytest.mark.parametrize("epsilon", [0, 0.0, -1e-3, float("nan"), float("inf"), "1e-3", True])
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_every_layer_refuses_an_epsilon_that_is_not_positive(cls, epsilon):
    with pytest.raises(ValueError, match=f"{cls.__name__}: `epsilon` .* Received: epsilon="):
        cls(epsilon=epsilon)


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_every_layer_keeps_a_positive_epsilon_as_a_float(cls):
    layer = cls(epsilon=2e-4)
    assert layer.epsilon == 2e-4 and type(layer.epsilon) is float


def test_frn_allows_zero_only_with_a_learned_epsilon():
    assert FRN(epsilon=0, learned_epsilon=True).epsilon == 0.0
    with pytest.raises(ValueError, match="learned_epsilon=True .* Received: epsilon=0"):
        FRN(epsilon=0)
    with pytest.raises(ValueError, match="non-negative .* Received: epsilon=-1"):
        FRN(epsilon=-1, learned_epsilon=True)


def test_weight_standardization_names_its_own_epsilon():
    with pytest.raises(ValueError, match="WSConv2D: `ws_epsilon` .* Received: ws_epsilon=0"):
        WSConv2D(4, 3, ws_epsilon=0)


@pytest.mark.parametrize("check,args,match", [
    (check_epsilon, (0.0, "L"), "positive"),
    (check_momentum, (1.01, "L"), "between 0 and 1 .*Received: momentum=1.01"),
    (check_momentum, ("0.9", "L"), "momentum='0.9'"),
    (check_flag, (2, "L", "center"), "center=2"),
    (check_count, (-1, "L", "steps"), "non-negative integer. Received: steps=-1"),
    (check_count, (0, "L", "groups", 1), "positive integer. Received: groups=0"),
    (check_count, (2.5, "L", "steps"), "steps=2.5"),
    (check_count, (True, "L", "steps"), "steps=True"),
])
def test_shared_checks_quote_what_was_received(check, args, match):
    with pytest.raises(ValueError, match=match):
        check(*args)


def test_shared_checks_return_canonical_values():
    assert check_epsilon(1, "L") == 1.0
    assert check_momentum(1, "L") == 1.0
    assert check_flag(1, "L", "f") is True
    assert check_count(5000.0, "L", "steps") == 5000
