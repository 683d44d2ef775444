"""The lockstep pass: both models replayed side by side, call by call, once."""

import keras
import numpy as np

import normswap
from tests.models import randomize_bn


def chain(blocks):
    inputs = keras.Input((8, 8, 2))
    x = inputs
    for i in range(blocks):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return randomize_bn(keras.Model(inputs, x))


def test_one_pass_cost_grows_linearly_with_the_number_of_sites(monkeypatch):
    from normswap.calibration import calibrate as module

    counts = {}
    original = module.Lockstep.run

    def counting_run(self, model, batches):
        result = original(self, model, batches)
        counts[len(model.layers)] = self.calls
        return result

    monkeypatch.setattr(module.Lockstep, "run", counting_run)
    samples = np.random.default_rng(1).normal(size=(16, 8, 8, 2)).astype("float32")
    for blocks in (2, 4, 8):
        normswap.convert(chain(blocks), "layernorm", calibration_data=samples)
    calls = [counts[k] for k in sorted(counts)]
    # Each block adds the same number of layer calls: linear, not quadratic, in depth.
    assert calls[2] - calls[1] == 2 * (calls[1] - calls[0])
    # One forward pass of each model: 3 layers per block, 16 samples in one batch.
    assert calls[0] == 2 * 3 * 2


def test_both_models_run_side_by_side_through_raw_operations_and_nested_models():
    from normswap.calibration.lockstep import Lockstep
    from normswap.rewrite import rebuild
    from tests.models import raw_ops_model

    model = raw_ops_model()
    site = {s.name: s for s in normswap.find_sites(model)}["bn1"]
    replacement = normswap.get_target("instancenorm").replace(site, {}).layers[site.layer]
    new_model, layer_map = rebuild(model, {id(site.layer): replacement})
    rng = np.random.default_rng(3)
    batches = [[rng.normal(size=(n, 6, 6, 3)).astype("float32")] for n in (5, 3)]
    seen = []
    inner_bn = model.get_layer("inner").get_layer("inner_bn")
    lockstep = Lockstep(layer_map, hooked=[id(inner_bn)],
                        on_site=lambda layer, old, new, outputs: seen.append((layer.name,
                                                                              len(old))))
    old, new = lockstep.run_batches(model, batches)
    assert seen == [("inner_bn", 2)]  # hooked inside the nested model, both batches at once
    for b, batch in enumerate(batches):
        np.testing.assert_allclose(old[b][0], model(batch[0], training=False), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(new[b][0], new_model(batch[0], training=False), rtol=1e-5,
                                   atol=1e-6)


def test_calibration_through_raw_operations():
    from tests.models import raw_ops_model

    model = raw_ops_model()
    samples = np.random.default_rng(4).normal(size=(24, 6, 6, 3)).astype("float32")
    report = normswap.convert(model, "groupnorm", calibration_data=samples).report
    fitted = {s.site.name: s.fidelity for s in report.sites if s.fidelity}
    assert set(fitted) == {"bn1", "bn_after_op", "inner/inner_bn", "fc_bn"}
    assert all(f["r2_after"] >= f["r2_before"] - 1e-9 for f in fitted.values())
