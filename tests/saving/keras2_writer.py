"""Write the Keras 2 (tf_keras) model files the saving tests load, as a user's Keras 2 program
would have written them, and what tf_keras computes on them.

Run as a script, in its own process (the tests never import tf_keras themselves):

    python tests/saving/keras2_writer.py OUT_DIR

For every model NAME it writes OUT_DIR/NAME.h5, and into OUT_DIR/expected.npz the input
`NAME__x` and the output `NAME__y` that tf_keras computed for that file: the output of the
model *reloaded* from the file by tf_keras, so the reference is what the file holds. The
BatchNormalization statistics are randomized so a loader that lost them would show.

It also writes Lambda files for the safe-mode tests: `lambda_code.h5`, whose lambda writes
OUT_DIR/ran_by_lambda_code when it runs (deleted again after writing), `lambda_named.h5`,
a Lambda of a named, registered function, and `lambda_builtin.h5`, a Lambda of the builtin
`abs`.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402
from tf_keras import layers  # noqa: E402

MOBILENET = dict(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)


class ScaleShift(layers.Layer):
    """x * scale + offset, a learned per-channel scale (its Keras 3 twin: custom_layers.py)."""

    def __init__(self, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer="ones")

    def call(self, inputs):
        return inputs * self.scale + self.offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


def conv_bn_relu(x, channels, name, **conv):
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv",
                      **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def sequential():
    return tf_keras.Sequential([
        tf_keras.Input((8, 8, 3)), layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(), layers.ReLU(), layers.GlobalAveragePooling2D(),
        layers.Dense(3)], name="plain_sequential")


def functional():
    inputs = tf_keras.Input((8, 8, 3))
    x = conv_bn_relu(inputs, 6, "b1")
    x = layers.Add()([conv_bn_relu(x, 6, "b2"), x])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.BatchNormalization(name="feature_bn")(layers.Dense(8)(x))
    return tf_keras.Model(inputs, layers.Dense(3)(x), name="plain_functional")


def functional_nested_sequential():
    """A Sequential feature block called inside a Functional model, and a Sequential head
    whose output is the model's output (Keras 2 numbers both calls node 1)."""
    block = tf_keras.Sequential([layers.Conv2D(4, 3, padding="same"),
                                 layers.BatchNormalization(), layers.ReLU()], name="block")
    head = tf_keras.Sequential([layers.Dense(6), layers.BatchNormalization(), layers.Dense(3)],
                               name="head")
    inputs = tf_keras.Input((8, 8, 3))
    x = layers.GlobalAveragePooling2D()(block(inputs))
    return tf_keras.Model(inputs, head(x), name="functional_nested_sequential")


def shared_nested_sequential():
    """One nested Sequential called twice (a siamese tower): nodes 1 and 2 in Keras 2."""
    tower = tf_keras.Sequential([layers.Conv2D(4, 3), layers.BatchNormalization(),
                                 layers.GlobalAveragePooling2D()], name="tower")
    left, right = tf_keras.Input((8, 8, 3)), tf_keras.Input((8, 8, 3))
    merged = layers.Concatenate()([tower(left), tower(right)])
    return tf_keras.Model([left, right], layers.Dense(2)(merged), name="siamese")


def sequential_nested_functional():
    inputs = tf_keras.Input((8, 8, 3))
    x = conv_bn_relu(inputs, 6, "b1")
    backbone = tf_keras.Model(inputs, conv_bn_relu(x, 6, "b2"), name="backbone")
    return tf_keras.Sequential([backbone, layers.GlobalAveragePooling2D(), layers.Dense(3)],
                               name="sequential_nested_functional")


def functional_mobilenetv2():
    """Fine-tuning, first phase: a frozen keras.applications backbone under a new head."""
    backbone = tf_keras.applications.MobileNetV2(**MOBILENET)
    backbone.trainable = False
    inputs = tf_keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    return tf_keras.Model(inputs, layers.Dense(2)(x), name="functional_mobilenetv2")


def sequential_mobilenetv2():
    """Fine-tuning, second phase: the backbone's first layers frozen, the rest trainable."""
    backbone = tf_keras.applications.MobileNetV2(**MOBILENET)
    for layer in backbone.layers[:30]:
        layer.trainable = False
    return tf_keras.Sequential([backbone, layers.GlobalAveragePooling2D(), layers.Dense(2)],
                               name="sequential_mobilenetv2")


def channels_first():
    inputs = tf_keras.Input((3, 8, 8))
    x = layers.Conv2D(4, 3, padding="same", data_format="channels_first")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(axis=1)(x))
    return tf_keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x)), name="channels_first")


def mixed_float16():
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = tf_keras.Input((8, 8, 3))
        x = conv_bn_relu(inputs, 8, "b1")
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(3, dtype="float32", name="logits")(x)
        return tf_keras.Model(inputs, outputs, name="mixed_float16")
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def custom_layer():
    inputs = tf_keras.Input((8, 8, 3))
    x = conv_bn_relu(inputs, 4, "b1")
    x = ScaleShift(offset=0.25, name="scale_shift")(x)
    return tf_keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)),
                          name="custom_layer")


MODELS = {f.__name__: f for f in (
    sequential, functional, functional_nested_sequential, shared_nested_sequential,
    sequential_nested_functional, functional_mobilenetv2, sequential_mobilenetv2,
    channels_first, mixed_float16, custom_layer)}


def randomize(model, rng):
    """Non-trivial γ, β and moving statistics in every BatchNormalization, nested included,
    and non-trivial custom-layer weights."""
    for layer in model.submodules:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.3, channels),
                               rng.normal(0, 0.5, channels), rng.uniform(0.5, 2.0, channels)])
        elif isinstance(layer, ScaleShift):
            layer.set_weights([rng.uniform(0.5, 1.5, layer.scale.shape)])


def calibrate(backbone, rng):
    """Set each BatchNormalization's moving statistics near those of its input on random
    images, in order: with random weights and random statistics a deep backbone's output
    no longer depends on its input, and the comparison would check little."""
    images = rng.uniform(-1, 1, size=(16,) + tuple(backbone.input_shape[1:]))
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            features = tf_keras.Model(backbone.input, layer.input)(images).numpy()
            mean, var = features.mean(axis=(0, 1, 2)), features.var(axis=(0, 1, 2))
            gamma, beta = layer.get_weights()[:2]
            layer.set_weights([gamma, beta, mean + 0.1 * np.sqrt(var) * rng.normal(size=mean.shape),
                               var * rng.uniform(0.8, 1.25, size=var.shape) + 1e-3])


def inputs_for(model, rng):
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    return [rng.normal(size=(4,) + shape).astype("float32") for shape in shapes]


def write_models(folder):
    rng = np.random.default_rng(0)
    arrays = {}
    for name, build in MODELS.items():
        tf_keras.utils.set_random_seed(0)
        model = build()
        randomize(model, rng)
        for layer in model.layers:
            if layer.name.startswith("mobilenetv2"):
                calibrate(layer, rng)
        path = folder / f"{name}.h5"
        model.save(path)
        reloaded = tf_keras.models.load_model(path, compile=False,
                                              custom_objects={"ScaleShift": ScaleShift})
        x = inputs_for(model, rng)
        y = reloaded.predict(x if len(x) > 1 else x[0], verbose=0)
        np.testing.assert_allclose(y, model.predict(x if len(x) > 1 else x[0], verbose=0),
                                   rtol=1e-6, atol=1e-6)
        for i, array in enumerate(x):
            arrays[f"{name}__x{i}"] = array
        arrays[f"{name}__y"] = np.asarray(y, dtype="float32")
        tf_keras.backend.clear_session()
    np.savez(folder / "expected.npz", **arrays)


def write_lambda_files(folder):
    """A lambda that writes a marker file when called: proof of whether its code ran."""
    marker = folder / "ran_by_lambda_code"
    code = eval(f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]")
    inputs = tf_keras.Input((3,))
    x = layers.BatchNormalization(name="bn")(layers.Dense(3, name="dense")(inputs))
    x = layers.Lambda(code, name="side_effect")(x)
    tf_keras.Model(inputs, x).save(folder / "lambda_code.h5")
    if not marker.is_file():
        raise RuntimeError("the lambda did not run when the model was built")
    marker.unlink()
    inputs = tf_keras.Input((3,))
    x = layers.Lambda(double, name="named")(layers.Dense(3, name="dense")(inputs))
    tf_keras.Model(inputs, x).save(folder / "lambda_named.h5")
    inputs = tf_keras.Input((3,))
    x = layers.Lambda(abs, name="absolute")(layers.Dense(3, name="dense")(inputs))
    tf_keras.Model(inputs, x).save(folder / "lambda_builtin.h5")


@tf_keras.saving.register_keras_serializable(package="nstest")
def double(x):
    """A named, registered function: tf_keras still stores its bytecode in a Lambda."""
    return 2 * x


def main(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_models(folder)
    write_lambda_files(folder)


if __name__ == "__main__":
    main(sys.argv[1])
