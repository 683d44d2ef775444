"""The groupnorm target: group counts (automatic, explicit, chosen by calibration)."""


import normswap
from tests.models import small_cnn


def test_groups_auto_rule_and_explicit_groups():
    from normswap.targets.groupnorm import auto_groups

    channels = (8, 16, 24, 64, 72, 144, 512, 2048)
    assert [auto_groups(c) for c in channels] == [1, 1, 1, 4, 4, 9, 32, 32]
    for channels in range(1, 600):
        groups = auto_groups(channels)
        assert channels % groups == 0 and (groups == 1 or channels // groups >= 16)
    the_plan = normswap.plan(small_cnn(), "groupnorm", groups=3)
    assert all(s.action == "skip" and "do not divide" in s.reason for s in the_plan.sites)
    report = normswap.convert(small_cnn(), "groupnorm", groups=4).report
    assert all(s.params == {"groups": 4} for s in report.sites)
