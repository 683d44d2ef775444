"""Plans: which sites a conversion takes, with which parameters, or why not."""

import keras

import normswap
from tests.models import count_bn, small_cnn


def test_only_and_skip_select_by_glob():
    model = small_cnn()
    report = normswap.convert(model, "frozenbn", only=["b*_bn"]).report
    assert {s.site.layer.name for s in report.swapped} == {"b1_bn", "b2_bn"}
    report = normswap.convert(model, "frozenbn", skip="fc_*").report
    assert "fc_bn" in {s.site.layer.name for s in report.skipped}
    assert all("skip" in s.reason for s in report.skipped)
    new = normswap.swap(model, "frozenbn", skip="fc_*")
    assert isinstance(new.get_layer("fc_bn"), keras.layers.BatchNormalization)


def test_plan_changes_nothing_and_lists_every_site():
    model = small_cnn()
    the_plan = normswap.plan(model, "fold")
    assert [s.action for s in the_plan.sites] == ["swap", "swap", "fallback", "swap"]
    assert count_bn(model) == 4
    assert the_plan.to_dict()["sites"][2]["target"] == "frozenbn"
