"""The converter under KERAS_BACKEND=jax (a subprocess: the suite itself runs on TensorFlow).

Keras's JAX trainer donates the buffers of the model it trains to the compiled step, which
deletes them. A converted model whose variables shared a buffer with the original's (JAX
arrays are immutable, so sharing looks harmless) left the original with deleted weights once
the new model was trained — by the user's `fit`, or by normswap's own reconstruction and
distillation — and the original then failed on its next call."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import numpy as np, keras, normswap
from tests.models import small_cnn

assert keras.backend.backend() == "jax"
model = small_cnn()
x = np.random.default_rng(0).normal(size=(48, 12, 12, 3)).astype("float32")
y = np.random.default_rng(1).integers(0, 5, size=48)
reference = np.asarray(model(x, training=False))

def original_intact(when):
    deleted = [v.path for v in model.weights if v.value.is_deleted()]
    assert not deleted, f"{when}: the original's buffers were deleted: {deleted}"
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), reference, when)

for target in ("fold", "frn"):
    new = normswap.swap(model, target)
    new.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    new.fit(x, y, batch_size=16, epochs=1, verbose=0)
    original_intact(f"after fitting the {target} model")
result = normswap.convert(model, "groupnorm", calibration_data=x, reconstruct=True,
                          reconstruct_options={"steps": 4, "check_every": 2}, distill_steps=3)
assert result.report.distillation["steps"] == 3
original_intact("after reconstruction and distillation")
print("original intact")
"""


def test_training_the_converted_model_leaves_the_original_intact_on_jax():
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            env=env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "original intact" in result.stdout
