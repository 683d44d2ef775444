"""ResNet50 with ImageNet weights, converted for fine-tuning at batch size 2 on your images.

    python examples/resnet50_imagenet.py --calibration photos/ --train labelled/
    python examples/resnet50_imagenet.py --weights notop.h5 --calibration x.npz --train xy.npz
    python examples/resnet50_imagenet.py --weights none ...     # random weights: a dry run
    python examples/resnet50_imagenet.py --quick                # smoke run, generated images

1. `keras.applications.ResNet50` (53 BatchNormalization layers) with ImageNet weights, from
   the Keras cache or downloaded (`--weights imagenet`, the default), from a local file
   (`--weights PATH`: the `.h5` weights Keras distributes, with or without the top, a
   `.weights.h5`, or a `.keras` model of a ResNet50), or random (`--weights none`). A new
   softmax head for your classes goes on the pooled features.
2. Converted three ways (`--targets`): GroupNorm with Weight-Standardized convs
   (`groupnorm+ws`, the combination of Kolesnikov et al.'s BiT), Switchable Norm and FRN.
   Each is calibrated on your unlabelled images (`calibration_data=`): a folder of images
   (any sub-folders; resized to the input size) or an `.npz`/`.npy` of raw RGB 0-255 images.
3. Each converted model is saved with `normswap.save_model`, reloaded with plain
   `keras.models.load_model` (after `import normswap`), and fine-tuned with `model.fit` at
   batch size 2 (`--batch-size`) for `--steps` steps on your labelled images: a folder with
   one sub-folder per class, or an `.npz` with `x` (raw RGB 0-255) and `y` (class indices).
   Every fifth labelled image is held out to measure accuracy before and after (all of them
   are used for both when there are fewer than 10).

Images are preprocessed as ResNet50 expects (`keras.applications.resnet50.preprocess_input`:
BGR, ImageNet mean subtracted) outside the model. Without the ImageNet weights (no internet
and nothing in the Keras cache, ~/.keras/models) the script says so in one line and exits
with status 2; `--weights PATH` or `--weights none` then run the whole pipeline.
`--quick` uses random weights, 32x32 inputs and generated images, and fine-tunes 1 step per
target eagerly (no graph tracing), so the pipeline is checked in seconds.
"""

import argparse
import importlib.util
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TARGETS = ("groupnorm+ws", "switchnorm", "frn")
DOWNLOAD_TIMEOUT = 30  # seconds without an answer before the weights download gives up


class UsageProblem(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet (default), none (random: a dry run) or a local file")
    parser.add_argument("--calibration", type=Path,
                        help="unlabelled images: a folder, or an .npz/.npy of raw RGB images")
    parser.add_argument("--train", type=Path,
                        help="labelled images: a folder with one sub-folder per class, or an "
                             ".npz with x and y")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated (default {','.join(TARGETS)}; "
                             "'+ws' adds Weight Standardization)")
    parser.add_argument("--input-size", type=int, default=None, help="default 224 (32 quick)")
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None,
                        help="fine-tuning steps per target (default 50; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam (default 1e-4)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the converted and fine-tuned models (default "
                             "./resnet50_normswap; with --quick a temporary folder)")
    parser.add_argument("--quick", action="store_true",
                        help="random weights, 32x32 generated images, 1 eager step per target")
    args = parser.parse_args(argv)
    if args.quick:
        args.weights = "none"
    args.input_size = args.input_size or (32 if args.quick else 224)
    args.steps = args.steps if args.steps is not None else (1 if args.quick else 50)
    if not args.quick and (args.calibration is None or args.train is None):
        parser.error("--calibration and --train are required (or --quick)")
    return args


# --------------------------------------------------------------------------- images


def image_files(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(paths, size):
    import keras
    import numpy as np

    if importlib.util.find_spec("PIL") is None:
        raise UsageProblem("reading image files needs Pillow (pip install pillow); or pass "
                           "an .npz of images")
    return np.stack([keras.utils.img_to_array(
        keras.utils.load_img(p, color_mode="rgb", target_size=(size, size))) for p in paths])


def read_npz(path, size, labelled):
    import keras
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # an .npy file: one array
            x, y = data, None
        else:
            with data:
                x = data["x"] if "x" in data.files else data[data.files[0]]
                y = data["y"] if "y" in data.files else None
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise UsageProblem(f"{path}: not a readable .npz/.npy ({error})") from None
    if x.ndim != 4 or x.shape[-1] != 3:
        raise UsageProblem(f"{path}: expected images shaped (N, H, W, 3), got {x.shape}")
    x = x.astype("float32")
    if x.shape[1:3] != (size, size):
        x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (size, size)))
    if labelled and y is None:
        raise UsageProblem(f"{path}: a labelled .npz needs an array 'y' of class indices")
    return x, (None if y is None else y.astype("int64").reshape(-1))


def unlabelled_images(path, size, limit):
    """Raw RGB float32 images (N, size, size, 3) from a folder or an .npz/.npy."""
    if not path.exists():
        raise UsageProblem(f"--calibration {path}: no such file or folder")
    if path.is_dir():
        files = image_files(path)[:limit]
        if not files:
            raise UsageProblem(f"--calibration {path}: no image files found")
        return load_images(files, size)
    return read_npz(path, size, labelled=False)[0][:limit]


def labelled_images(path, size):
    """(x, y, class names) from a folder of class sub-folders or an .npz with x and y."""
    import numpy as np

    if not path.exists():
        raise UsageProblem(f"--train {path}: no such file or folder")
    if not path.is_dir():
        x, y = read_npz(path, size, labelled=True)
        return x, y, [str(c) for c in np.unique(y)]
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    pairs = [(f, i) for i, c in enumerate(classes) for f in image_files(path / c)]
    if len(classes) < 2 or not pairs:
        raise UsageProblem(f"--train {path}: expected one sub-folder of images per class "
                           f"(found {len(classes)} sub-folders, {len(pairs)} images)")
    x = load_images([f for f, _ in pairs], size)
    return x, np.array([i for _, i in pairs], dtype="int64"), classes


def generate_images(folder, size, classes=2, per_class=4, seed=0):
    """Random images with a class-dependent colour ramp: PNG files in one sub-folder per
    class (an .npz with x and y when Pillow is not installed). Returns the path."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (classes * per_class, size, size, 3))
    y = np.repeat(np.arange(classes), per_class)
    for image, c in zip(x, y):
        image[:, :, c % 3] = np.linspace(0, 255, size)[None, :] * (c + 1) / classes
    x = x.astype("uint8")
    if importlib.util.find_spec("PIL") is None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "generated.npz", x=x, y=y)
        return folder / "generated.npz"
    for i, (image, c) in enumerate(zip(x, y)):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(folder / f"class_{c}" / f"{i}.png", image)
    return folder


# --------------------------------------------------------------------------- model


def backbone(weights, size):
    """ResNet50 without its top, global-average pooled, with the requested weights."""
    import keras

    kwargs = {"include_top": False, "input_shape": (size, size, 3), "pooling": "avg"}
    if weights == "none":
        return keras.applications.ResNet50(weights=None, **kwargs)
    if weights == "imagenet":
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
        try:
            return keras.applications.ResNet50(weights="imagenet", **kwargs)
        except Exception as error:  # Keras raises a bare Exception for a failed download
            reason = str(error).split(" -- ")[-1].strip() or type(error).__name__
            raise UsageProblem(
                f"The ImageNet weights of ResNet50 are not in the Keras cache and could not "
                f"be downloaded ({reason}): pass --weights PATH (a local .h5/.keras of the "
                f"weights) or --weights none (random initialisation, a dry run of the whole "
                f"pipeline).") from None
        finally:
            socket.setdefaulttimeout(previous)
    return backbone_from_file(Path(weights), size, kwargs)


def backbone_from_file(path, size, kwargs):
    """Load weights from a file: top or no top, legacy .h5, .weights.h5 or .keras."""
    import keras
    import numpy as np

    if not path.is_file():
        raise UsageProblem(f"--weights {path}: no such file (give imagenet, none or a file)")
    model = keras.applications.ResNet50(weights=None, **kwargs)
    probe = model.get_layer("conv1_conv").kernel
    before = keras.ops.convert_to_numpy(probe).copy()
    errors = []
    name = path.name.lower()
    if name.endswith((".h5", ".hdf5")) and not name.endswith(".weights.h5"):
        try:  # legacy weights files (Keras's own downloads): matched by layer name
            model.load_weights(path, by_name=True)
        except Exception as error:  # noqa: BLE001 - reported below if nothing loads
            errors.append(str(error))
    else:
        for source in ("notop", "top"):
            try:
                if source == "notop":
                    model.load_weights(path)
                else:  # a file of the whole ResNet50 (224x224, with its 1000-class top)
                    full = keras.applications.ResNet50(weights=None)
                    full.load_weights(path)
                    for layer in model.layers:
                        if layer.weights:
                            layer.set_weights(full.get_layer(layer.name).get_weights())
                break
            except Exception as error:  # noqa: BLE001 - try the other layout
                errors.append(str(error).splitlines()[0])
    if np.array_equal(before, keras.ops.convert_to_numpy(probe)):
        detail = f" ({errors[-1][:200]})" if errors else ""
        raise UsageProblem(f"--weights {path}: no ResNet50 weights could be read from it"
                           f"{detail}")
    return model


def classifier(base, classes):
    import keras

    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(base.output)
    return keras.Model(base.input, outputs, name="resnet50_classifier")


def accuracy(model, x, y, chunk=16):
    """Top-1 accuracy in inference mode (eager calls: no predict graph to trace)."""
    import keras
    import numpy as np

    scores = [keras.ops.convert_to_numpy(model(x[i:i + chunk], training=False))
              for i in range(0, len(x), chunk)]
    return float(np.mean(np.argmax(np.concatenate(scores), -1) == y))


def run(args, out, say):
    import keras
    import numpy as np

    import normswap

    start = time.perf_counter()
    base = backbone(args.weights, args.input_size)  # first: fail fast without weights
    if args.quick:
        images = generate_images(out / "generated", args.input_size)
        args.calibration = args.train = images
    preprocess = keras.applications.resnet50.preprocess_input
    x_cal = preprocess(unlabelled_images(args.calibration, args.input_size,
                                         args.calibration_samples))
    x, y, classes = labelled_images(args.train, args.input_size)
    x = preprocess(x)
    held = np.arange(len(y)) % 5 == 4 if len(y) >= 10 else np.ones(len(y), bool)
    train = ~held if len(y) >= 10 else held
    model = classifier(base, len(classes))
    say(f"ResNet50 ({args.weights} weights, {args.input_size}x{args.input_size}) with a "
        f"{len(classes)}-class head; {len(x_cal)} calibration images; {int(train.sum())} "
        f"labelled images to fine-tune, {int(held.sum())} to measure "
        f"({time.perf_counter() - start:.0f} s)")
    results = {}
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        name, ws = (target[:-3], True) if target.endswith("+ws") else (target, False)
        t = time.perf_counter()
        result = normswap.convert(model, name, ws=ws, calibration_data=x_cal)
        fits = [s.fidelity["r2_after"] for s in result.report.sites if s.fidelity]
        path = normswap.save_model(result.model, out / f"resnet50_{target.replace('+', '_')}"
                                   ".keras", force=True)
        reloaded = keras.models.load_model(path)
        before = accuracy(reloaded, x[held], y[held])
        reloaded.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                         loss="sparse_categorical_crossentropy", run_eagerly=args.quick)
        samples = args.steps * args.batch_size
        index = np.flatnonzero(train)[np.arange(samples) % int(train.sum())]
        history = reloaded.fit(x[index], y[index], batch_size=args.batch_size, epochs=1,
                               shuffle=False, verbose=0)
        after = accuracy(reloaded, x[held], y[held])
        tuned = None if args.quick else str(normswap.save_model(
            reloaded, out / f"resnet50_{target.replace('+', '_')}_finetuned.keras", force=True))
        results[target] = {"sites": len(result.report.swapped), "r2_median": (
            float(np.median(fits)) if fits else None), "before": before, "after": after,
            "loss": history.history["loss"][-1], "saved": str(path), "fine_tuned": tuned}
        say(f"{target}: {len(result.report.swapped)} BN sites converted, calibration R² "
            f"median {results[target]['r2_median']:.2f}; saved and reloaded "
            f"({os.path.getsize(path) / 1e6:.0f} MB); {args.steps} steps at batch "
            f"{args.batch_size}: accuracy {100 * before:.0f} % -> {100 * after:.0f} % on "
            f"{int(held.sum())} images, last loss {results[target]['loss']:.3f} "
            f"({time.perf_counter() - t:.0f} s)")
    return results


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("NORMSWAP_QUIET", "1")  # TensorFlow's start-up lines off stderr
    import warnings

    import normswap  # noqa: F401 - registers the bundled layers for load_model

    warnings.filterwarnings("ignore", category=UserWarning)
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        if args.quick and args.out is None:
            with tempfile.TemporaryDirectory() as folder:
                return run(args, Path(folder), say)
        out = args.out or Path("resnet50_normswap")
        out.mkdir(parents=True, exist_ok=True)
        return run(args, out, say)
    except UsageProblem as problem:
        print(f"resnet50_imagenet.py: {problem}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
