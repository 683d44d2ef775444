"""KerasHub models: BN backbones built from config (random weights, no preset download) and
an image-classifier task around one — converted, verified, saved and reloaded.

What a user gets (keras_hub 0.32, Keras 3.15):

- A backbone (`ResNetBackbone`, ...; Functional subclasses) converts to a plain Functional
  `keras.Model` with the same layers, names and weights: its KerasHub class, and with it
  `from_preset`, `save_to_preset`, `pyramid_outputs` and its config arguments, are gone.
- A task (`ResNetImageClassifier`, ...) converts to a plain Functional model as well: input,
  the backbone as a nested plain Functional, pooler, dropout and head, with the same
  outputs; its preprocessor (which is not part of the graph), its task API (`predict` on
  raw images through the preprocessor, `from_preset`) and its default compilation are gone.
  To keep the task, convert its backbone and wrap that in a new task, copying the head
  (`test_task_rebuilt_around_a_converted_backbone`): that task saves and loads as its class.
- Some KerasHub blocks are custom layers whose Python `call` runs BatchNormalization layers
  of their own (MobileNet's `InvertedResidualBlock`, EfficientNet's fused/unfused MBConv
  blocks, all of HGNetV2). normswap cannot rewrite inside them: their BNs are skipped, and
  the report says why; a model with no other BN has nothing to convert.
"""

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="KerasHub is not installed")

import normswap  # noqa: E402
from normswap.verify import outputs_of, probe_batch  # noqa: E402
from tests.checks import relative_gap  # noqa: E402
from tests.models import randomize_bn  # noqa: E402

M = keras_hub.models
EXACT = ["fold", "frozenbn", "batchrenorm", "bln", "switchnorm"]


def resnet():
    return M.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(16, 16, 3))


def resnet_v2():
    return M.ResNetBackbone(
        input_conv_filters=[8], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2],
        block_type="bottleneck_block", use_pre_activation=True, image_shape=(16, 16, 3))


def mobilenet():
    return M.MobileNetBackbone(
        stackwise_expansion=[[2], [2, 3]], stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[8], [16, 16]], stackwise_kernel_size=[[3], [3, 3]],
        stackwise_num_strides=[[2], [1, 1]], stackwise_se_ratio=[[None], [0.25, 0.25]],
        stackwise_activation=[["relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1], [1, 1]], output_num_filters=32, depthwise_filters=8,
        depthwise_stride=1, depthwise_residual=False, last_layer_filter=32,
        squeeze_and_excite=0.5, image_shape=(32, 32, 3))


def _efficientnet(block_types):
    return M.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2], stackwise_block_types=block_types,
        stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False],
        width_coefficient=1.0, depth_coefficient=1.0, num_features=32,
        input_shape=(32, 32, 3))


def efficientnet():
    """The original EfficientNet blocks ("v1"): Functional, every BN in the graph."""
    return _efficientnet(["v1", "v1"])


def efficientnet_v2():
    """Fused and unfused MBConv blocks: custom layers holding their BNs."""
    return _efficientnet(["fused", "unfused"])


def densenet():
    return M.DenseNetBackbone(stackwise_num_repeats=[1, 1], growth_rate=4,
                              image_shape=(32, 32, 3))


def cspnet():
    return M.CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=1, stackwise_depth=[1, 1],
        stackwise_strides=2, stackwise_num_filters=[8, 16], block_type="dark_block",
        stage_type="csp", stem_padding="same", down_growth=True, bottle_ratio=(0.5, 1.0),
        block_ratio=(1.0, 0.5), expand_ratio=(2.0, 1.0), image_shape=(32, 32, 3))


def xception():
    return M.XceptionBackbone(stackwise_conv_filters=[[8, 8], [16, 16]],
                              stackwise_pooling=[True, False], image_shape=(32, 32, 3))


def hgnetv2():
    return M.HGNetV2Backbone(
        depths=[1, 1], embedding_size=8, hidden_sizes=[16, 32], stem_channels=[3, 8, 8],
        hidden_act="relu", use_learnable_affine_block=False,
        stackwise_stage_filters=[(8, 8, 16, 1, 1, 3), (16, 8, 32, 1, 1, 3)],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
        image_shape=(32, 32, 3))


#: Backbone -> how many of its BNs custom layers hold (skipped; the rest convert).
BACKBONES = {resnet: 0, resnet_v2: 0, mobilenet: 12, efficientnet: 0, efficientnet_v2: 5,
             densenet: 0, cspnet: 0, xception: 0}


@pytest.fixture(scope="module", params=list(BACKBONES), ids=lambda b: b.__name__)
def backbone(request):
    return request.param, randomize_bn(request.param(), seed=3)


def batchnorms(model):
    return {layer.name for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)}


def convert_and_reload(model, target, tmp_path, **options):
    result = normswap.convert(model, target, **options)
    path = normswap.save_model(result.model, tmp_path / f"{model.name}-{target}.keras")
    reloaded = keras.models.load_model(path)
    batch = probe_batch(model, seed=5)
    for a, b in zip(outputs_of(result.model, batch), outputs_of(reloaded, batch)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * max(1.0, np.max(np.abs(a))))
    return result, reloaded


@pytest.mark.parametrize("target", EXACT + ["groupnorm"])
def test_backbone_converts_verifies_and_reloads(backbone, target, tmp_path):
    build, model = backbone
    result, reloaded = convert_and_reload(model, target, tmp_path, exact=target in EXACT)
    assert type(result.model) is keras.Model or isinstance(result.model, keras.Model)
    assert not isinstance(result.model, keras_hub.models.Backbone)
    batch = probe_batch(model, seed=5)
    if target in EXACT:
        assert result.report.exact
        assert relative_gap(model, reloaded, batch) <= 1e-4
    else:
        assert np.all(np.isfinite(outputs_of(reloaded, batch)[0]))
    skipped = {s.site.layer.name: s.reason for s in result.report.skipped}
    assert len(skipped) == BACKBONES[build]
    assert all("custom layer" in reason for reason in skipped.values())
    # counted, not named: KerasHub blocks name their sublayers anew when re-created from
    # their config (MobileNet's 'block_0_0_bn1' comes back as 'block_0_0_0_0_bn1')
    assert len(batchnorms(reloaded)) == len(skipped)


def test_backbone_whose_batchnorms_are_all_inside_custom_layers():
    model = randomize_bn(hgnetv2())
    with pytest.raises(normswap.NothingToConvertError, match="None of the 12"):
        normswap.convert(model, "frozenbn")
    plan = normswap.plan(model, "frozenbn")
    assert len(plan.sites) == 12 and not plan.swapped
    assert all("custom layer" in s.reason for s in plan.sites)


@pytest.fixture(scope="module")
def classifier():
    converter = keras_hub.layers.ResNetImageConverter(image_size=(16, 16), scale=1 / 255.0)
    preprocessor = M.ResNetImageClassifierPreprocessor(image_converter=converter)
    task = M.ResNetImageClassifier(backbone=resnet(), num_classes=3,
                                   preprocessor=preprocessor)
    return randomize_bn(task, seed=4)


@pytest.mark.parametrize("target", ["fold", "switchnorm"])
def test_image_classifier_task_becomes_a_plain_functional_model(classifier, target, tmp_path):
    result, reloaded = convert_and_reload(classifier, target, tmp_path, exact=True)
    batch = probe_batch(classifier, seed=6)
    assert relative_gap(classifier, reloaded, batch) <= 1e-4
    for model in (result.model, reloaded):  # what the user gets, in memory and from file
        assert type(model).__name__ == "Functional"
        assert not isinstance(model, keras_hub.models.Task)
        assert [type(layer).__name__ for layer in model.layers] == [
            "InputLayer", "Functional", "GlobalAveragePooling2D", "Dropout", "Dense"]
        assert [layer.name for layer in model.layers[1:]] == [
            layer.name for layer in classifier.layers[1:]]
        assert not hasattr(model, "preprocessor") and not hasattr(model, "backbone")
        assert not model.compiled
    assert batchnorms(result.model) == set()


def test_task_rebuilt_around_a_converted_backbone(classifier, tmp_path):
    """The way to keep a KerasHub task: convert its backbone, wrap it in a new task with the
    original preprocessor, copy the head's weights."""
    backbone = normswap.swap(classifier.backbone, "fold")
    task = M.ResNetImageClassifier(backbone=backbone, num_classes=3,
                                   preprocessor=classifier.preprocessor)
    task.get_layer("predictions").set_weights(
        classifier.get_layer("predictions").get_weights())
    batch = probe_batch(classifier, seed=6)
    assert relative_gap(classifier, task, batch) <= 1e-4
    path = normswap.save_model(task, tmp_path / "task.keras")
    with pytest.warns(UserWarning, match="compile"):  # KerasHub's custom compile()
        reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, M.ResNetImageClassifier)
    assert isinstance(reloaded.preprocessor, M.ResNetImageClassifierPreprocessor)
    assert relative_gap(classifier, reloaded, batch) <= 1e-4
    assert batchnorms(reloaded) == set()
