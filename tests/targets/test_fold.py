"""The fold target: the BN folded into the Conv/Dense before it, exactly, or a fallback."""

import normswap
from normswap.verify import probe_batch
from tests.checks import relative_gap
from tests.models import multi_io_model, small_cnn


def test_fold_falls_back_where_it_cannot_fold():
    result = normswap.convert(small_cnn(), "fold")
    by_name = {s.site.layer.name: s for s in result.report.sites}
    assert by_name["b1_bn"].action == "swap" and "b1_conv" in by_name["b1_bn"].notes[0]
    assert by_name["post_add_bn"].action == "fallback"
    assert "Add" in by_name["post_add_bn"].reason
    assert by_name["post_add_bn"].new_class == "ChannelAffine"
    assert by_name["fc_bn"].action == "swap"  # Dense folds too


def test_fold_refuses_a_conv_that_feeds_another_path():
    model = multi_io_model()
    result = normswap.convert(model, "fold")
    site = {s.site.layer.name: s for s in result.report.sites}["conv_bn"]
    assert site.action == "fallback" and "also feeds" in site.reason
    batch = probe_batch(model)
    assert relative_gap(model, result.model, batch) <= 1e-4
    assert [o.shape for o in result.model.outputs] == [o.shape for o in model.outputs]


def test_fold_adds_a_bias_when_the_conv_has_none():
    model = small_cnn()
    new = normswap.swap(model, "fold")
    assert model.get_layer("b1_conv").use_bias is False
    assert new.get_layer("b1_conv").use_bias is True
