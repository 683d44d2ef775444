"""The instancenorm target: per-sample, per-channel statistics; Dense sites kept."""

import keras

import normswap
from tests.models import small_cnn


def test_instancenorm_skips_dense_sites_and_warns_before_a_global_pooling():
    report = normswap.convert(small_cnn(), "instancenorm").report
    sites = {s.site.layer.name: s for s in report.sites}
    assert sites["fc_bn"].action == "skip" and "one value" in sites["fc_bn"].reason
    assert any("global pooling" in note for note in sites["post_add_bn"].notes)
    assert not any("global pooling" in note for note in sites["b1_bn"].notes)
    new = normswap.swap(small_cnn(), "instancenorm")
    assert new.get_layer("b1_bn").groups == 8  # -1 resolves to one group per channel
    assert isinstance(new.get_layer("fc_bn"), keras.layers.BatchNormalization)
