"""The group-count rules of normswap/layers/_groups.py, against brute-force searches."""

import pytest

from normswap.layers._groups import auto_groups, groups_for


def _divisors(channels):
    return [d for d in range(1, channels + 1) if channels % d == 0]


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 16, 24, 31, 32, 48, 64, 72, 96, 144, 512,
                                      1000, 2048])
def test_auto_groups_is_the_largest_divisor_up_to_32_with_16_channels_per_group(channels):
    valid = [g for g in _divisors(channels) if g <= 32 and channels // g >= 16]
    assert auto_groups(channels) == (max(valid) if valid else 1)


@pytest.mark.parametrize("channels,expected", [(16, 1), (64, 4), (512, 32), (24, 1),
                                               (96, 6), (8, 1)])
def test_auto_groups_documented_examples(channels, expected):
    assert auto_groups(channels) == expected


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize("channels,groups", [(24, 32), (72, 32), (144, 32), (64, 32), (7, 32),
                                             (7, 3), (32, 32), (6, 32), (2, 32), (9, 4)])
def test_groups_for_is_the_largest_valid_divisor(channels, groups, rank):
    # at rank 2 a group needs at least 2 channels (no spatial axis to pool over)
    valid = [g for g in _divisors(channels)
             if g <= groups and (rank > 2 or channels // g >= 2)]
    assert groups_for(channels, groups, rank) == max(valid)


def test_groups_for_refuses_a_single_channel_at_rank_2():
    with pytest.raises(ValueError) as refused:
        groups_for(1, 32, 2)
    assert str(refused.value) == (
        "Cannot group 1 channel(s) of a rank-2 input: each group's statistics would be a "
        "single number, whose variance is 0. Use a target without group statistics "
        "(e.g. 'frn' or 'frozenbn') for this layer.")
