"""Precise statistics: population statistics as true averages over the data (PreciseBN)."""

import json

import keras
import numpy as np
import pytest

import normswap
from normswap.layers import (
    BatchLayerNormalization,
    BatchRenormalization,
    EvoNormB0,
    SwitchNormalization,
)
from tests.models import randomize_biases, randomize_bn

RNG = np.random.default_rng(0)


def two_stage(norm_factory):
    """Conv → norm → ReLU → Conv → norm: the second norm's input depends on the first."""
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = norm_factory("norm1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1, name="conv2")(x)
    x = norm_factory("norm2")(x)
    return randomize_biases(randomize_bn(keras.Model(inputs, x), seed=1), seed=2)


def reference(model, batches, epsilon):
    """NumPy PreciseBN: per batch, norm1 normalizes with the batch's own statistics; the
    population statistics of each norm's input over all batches, in float64."""
    conv1, conv2 = model.get_layer("conv1"), model.get_layer("conv2")
    norm1 = model.get_layer("norm1")
    gamma = norm1.gamma.numpy().astype(np.float64)
    beta = norm1.beta.numpy().astype(np.float64)
    firsts, seconds = [], []
    for batch in batches:
        a = np.asarray(conv1(batch), np.float64)
        firsts.append(a.reshape(-1, 4))
        mean, var = a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))
        b = np.maximum(gamma * (a - mean) / np.sqrt(var + epsilon) + beta, 0.0)
        seconds.append(np.asarray(conv2(b.astype("float32")), np.float64).reshape(-1, 6))
    return [(np.concatenate(v).mean(0), np.concatenate(v).var(0)) for v in (firsts, seconds)]


@pytest.fixture
def batches():
    return [RNG.normal(1.0, 2.0, size=(n, 5, 5, 3)).astype("float32") for n in (7, 3, 5)]


def test_batch_normalization_statistics_are_true_averages_over_every_batch(batches):
    model = two_stage(lambda name: keras.layers.BatchNormalization(name=name))
    kernel = model.get_layer("conv2").kernel.numpy().copy()
    summary = normswap.recompute_statistics(model, iter(batches))
    assert summary["layers"] == ["norm1", "norm2"] and summary["samples"] == 15
    assert summary["batches"] == 3
    for name, (mean, var) in zip(("norm1", "norm2"), reference(model, batches, 1e-3)):
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.get_layer("conv2").kernel.numpy(), kernel)


def test_batch_renorm_gets_the_standard_deviation_and_keeps_its_step(batches):
    model = two_stage(lambda name: BatchRenormalization(name=name, epsilon=1e-3))
    layer = model.get_layer("norm1")
    layer.step.assign(123.0)
    normswap.recompute_statistics(model, iter(batches))
    (mean, var), _ = reference(model, batches, 1e-3)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_stddev.numpy(), np.sqrt(var + 1e-3), rtol=1e-4)
    assert float(layer.step.numpy()) == 123.0


def test_other_batch_layers_and_what_is_left_alone():
    inputs = keras.Input((6, 4))
    x = SwitchNormalization(name="sn")(inputs)
    x = SwitchNormalization(name="sn_no_bn", using_bn=False)(x)
    x = EvoNormB0(name="b0")(x)
    x = BatchLayerNormalization(name="bln", feature_statistics="position")(x)
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    model = keras.Model(inputs, frozen(x))
    data = RNG.normal(0.5, 3.0, size=(12, 6, 4)).astype("float32")
    before = model.get_layer("frozen").moving_mean.numpy().copy()
    summary = normswap.recompute_statistics(model, data, batch_size=4)
    assert summary["layers"] == ["sn", "b0", "bln"]
    assert set(summary["left_alone"]) == {"sn_no_bn", "frozen"}
    np.testing.assert_allclose(model.get_layer("sn").moving_mean.numpy(),
                               data.reshape(-1, 4).mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("sn").moving_variance.numpy(),
                               data.reshape(-1, 4).var(0), rtol=1e-4)
    np.testing.assert_array_equal(model.get_layer("frozen").moving_mean.numpy(), before)
    bln = model.get_layer("bln")
    assert float(bln.moving_feature_variance.numpy()) > 0
    assert bln.moving_feature_mean.numpy().shape == ()


def test_bln_feature_statistics_are_averages_of_the_per_position_ones():
    inputs = keras.Input((5, 3))
    layer = BatchLayerNormalization(name="bln", feature_statistics="position")
    model = keras.Model(inputs, layer(inputs))
    data = RNG.normal(2.0, 1.5, size=(10, 5, 3)).astype("float32")
    normswap.recompute_statistics(model, data, batch_size=4, layers=["bln"])
    np.testing.assert_allclose(layer.moving_feature_mean.numpy(), data.mean(-1).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(layer.moving_feature_variance.numpy(), data.var(-1).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), data.reshape(-1, 3).var(0),
                               rtol=1e-4)


def test_nested_models_and_the_command(tmp_path, capsys):
    from normswap.cli import main

    inner_in = keras.Input((5, 5, 3))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="bn")(inner_in),
                        name="inner")
    model = keras.Sequential([keras.Input((5, 5, 3)), inner, keras.layers.Flatten()])
    source, out = tmp_path / "m.keras", tmp_path / "out.keras"
    model.save(source)
    data = RNG.normal(4.0, 2.0, size=(20, 5, 5, 3)).astype("float32")
    np.savez(tmp_path / "data.npz", x=data)
    status = main(["restat", str(source), "--data", str(tmp_path / "data.npz"), "-o", str(out),
                   "--batch-size", "8", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert json.loads(captured.out)["layers"] == ["bn"]
    bn = keras.models.load_model(out).get_layer("inner").get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), data.reshape(-1, 3).mean(0), rtol=1e-5)
    status = main(["restat", str(source), "--data", str(tmp_path / "missing.npz"),
                   "-o", str(tmp_path / "x.keras")])
    assert status == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "x.keras").exists()


def test_the_command_writes_nothing_when_there_is_nothing_to_re_estimate(tmp_path, capsys):
    from normswap.cli import main

    inputs = keras.Input((5, 5, 3))
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    cases = {"plain": keras.Model(inputs, keras.layers.GroupNormalization(3)(inputs)),
             "frozen": keras.Model(inputs, frozen(inputs))}
    np.savez(tmp_path / "data.npz", x=RNG.normal(size=(8, 5, 5, 3)).astype("float32"))
    expected = {
        ("plain", ()): "No BatchNormalization, BatchRenormalization, SwitchNormalization, "
                       "BatchLayerNormalization or EvoNormB0 in ",
        ("frozen", ("--only", "bn*")): "SwitchNormalization, BatchLayerNormalization or "
                                       "EvoNormB0 matching bn* in ",
        ("frozen", ()): "every batch-dependent layer selected is left as it was ('frozen': "
                        "frozen (trainable=False))",
    }
    for (name, extra), message in expected.items():
        source, out = tmp_path / f"{name}.keras", tmp_path / "out.keras"
        cases[name].save(source)
        status = main(["restat", str(source), "--data", str(tmp_path / "data.npz"),
                       "-o", str(out), *extra])
        error = capsys.readouterr().err.strip()
        assert status == 1 and len(error.splitlines()) == 1, error
        assert message in error and error.endswith("Nothing was written.")
        assert not out.exists()
