"""Small models with BatchNormalization in every arrangement the converter must handle."""

import keras
import numpy as np
from keras import layers


def randomize_bn(model, seed=0):
    """Give every BN non-trivial statistics, γ and β, so carry-over is really tested."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, channels))
    return model


def count_bn(model):
    return sum(isinstance(layer, layers.BatchNormalization)
               for layer in model._flatten_layers(include_self=False, recursive=True))


def conv_bn_relu(x, channels, name, **conv):
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv", **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def small_cnn(name="small_cnn", input_shape=(12, 12, 3), classes=5):
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, 8, "b1")
    shortcut = x
    x = conv_bn_relu(x, 8, "b2")
    x = layers.Add(name="add")([x, shortcut])
    x = layers.BatchNormalization(name="post_add_bn")(x)  # no foldable producer
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(16, name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    x = layers.Activation("relu", name="fc_relu")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return randomize_bn(keras.Model(inputs, outputs, name=name))


def nested_model():
    """Sequential([Functional backbone, pooling, Dense]) with BN inside the backbone."""
    backbone = small_cnn("backbone")
    inner = keras.Model(backbone.input, backbone.get_layer("post_add_bn").output, name="inner")
    return keras.Sequential([keras.Input((12, 12, 3)), inner, layers.GlobalAveragePooling2D(),
                             layers.Dense(3)], name="outer")


def shared_bn_model():
    """One BN layer called on two branches."""
    inputs = keras.Input((10, 10, 4))
    shared = layers.BatchNormalization(name="shared_bn")
    a = shared(layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs))
    b = shared(layers.Conv2D(4, 1, name="conv_b")(inputs))
    x = layers.Concatenate()([a, b])
    return randomize_bn(keras.Model(inputs, layers.GlobalAveragePooling2D()(x), name="shared"))


def multi_io_model():
    """Two inputs, two outputs, a conv whose output feeds the BN and another branch."""
    image = keras.Input((8, 8, 3), name="image")
    vector = keras.Input((6,), name="vector")
    c = layers.Conv2D(6, 3, padding="same", name="conv")(image)
    x = layers.BatchNormalization(name="conv_bn")(c)
    side = layers.GlobalMaxPooling2D(name="side")(c)  # the conv feeds two paths
    v = layers.Dense(6, name="dense")(vector)
    v = layers.BatchNormalization(name="dense_bn")(v)
    merged = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), side, v])
    return randomize_bn(keras.Model([image, vector],
                                    [layers.Dense(2, name="out_a")(merged),
                                     layers.Dense(1, name="out_b")(v)], name="multi"))


def channels_first_model():
    inputs = keras.Input((3, 8, 8))
    x = layers.Conv2D(4, 3, padding="same", data_format="channels_first", name="conv")(inputs)
    x = layers.BatchNormalization(axis=1, name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    return randomize_bn(keras.Model(inputs, layers.Dense(3)(x), name="cf"))


def affine_free_model():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(center=False, name="no_center")(x)
    x = layers.Conv2D(4, 3, name="conv2")(x)
    x = layers.BatchNormalization(scale=False, name="no_scale")(x)
    x = layers.Conv2D(4, 1, name="conv3")(x)
    x = layers.BatchNormalization(center=False, scale=False, name="neither")(x)
    return randomize_bn(keras.Model(inputs, layers.GlobalAveragePooling2D()(x), name="affine_free"))


def randomize_biases(model, seed=0):
    """Give every conv/dense bias non-zero values, so carry math that drops a bias shows."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        bias = getattr(layer, "bias", None)
        if bias is not None and not isinstance(layer, layers.BatchNormalization):
            bias.assign(rng.normal(0, 0.5, bias.shape))
    return model


def raw_ops_model(name="raw_ops"):
    """Raw keras.ops nodes before, between and after BN sites, and inside a nested model.

    `x * 0.5 + 1` feeds the first conv, a BN's output goes through `ops.relu6(x + 3) / 6`
    (MobileNetV3's hard-swish gate) before the next conv, a BN reads a raw op directly
    (no foldable producer), and the head reshapes with ops.
    """
    inner_in = keras.Input((6, 6, 8), name="inner_in")
    y = layers.Conv2D(8, 3, padding="same", name="inner_conv")(inner_in)
    y = layers.BatchNormalization(name="inner_bn")(y)
    y = y * keras.ops.sigmoid(y)  # raw ops inside the nested model
    inner = keras.Model(inner_in, y, name="inner")

    inputs = keras.Input((6, 6, 3), name="image")
    x = inputs * 0.5 + 1.0
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = x * keras.ops.relu6(x + 3.0) / 6.0
    x = layers.Conv2D(8, 1, name="conv2")(x)
    x = keras.ops.multiply(x, 2.0)
    x = layers.BatchNormalization(name="bn_after_op")(x)
    x = layers.ReLU(name="relu")(x)
    x = inner(x)
    x = keras.ops.mean(x, axis=(1, 2))
    x = layers.Dense(6, name="fc")(keras.ops.reshape(x, (-1, 8)))
    x = layers.BatchNormalization(name="fc_bn")(x)
    outputs = layers.Dense(4, name="logits")(x - 0.1)
    return randomize_biases(randomize_bn(keras.Model(inputs, outputs, name=name), seed=2))
