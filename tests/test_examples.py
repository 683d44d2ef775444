"""The examples and the small-batch study run end to end, as a user runs them (--quick).

Each runs as its own program (a fresh interpreter: the examples choose their backend and
devices before Keras is imported, and set warning filters a test process should not get).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def run(script, *args, env=None, timeout=300):
    """Run `script` with `args` from the repository root; return the CompletedProcess."""
    environment = {**os.environ, "NORMSWAP_QUIET": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "KERAS_BACKEND": "tensorflow", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_resnet8_every_target_table():
    out = ok(run(EXAMPLES / "resnet8_cifar10.py", "--quick"))
    assert "7 BatchNormalization layers" in out
    for target in ("fold", "groupnorm", "frn"):
        assert f"│ {target}" in out
    assert "= (exact)" in out  # fold reproduces the model


def test_finetune_small_batch_story():
    out = ok(run(EXAMPLES / "finetune_small_batch.py", "--quick"))
    for step in ("1. trained BN model", "2. converted to batchrenorm", "3. fine-tuned with "
                 "model.fit at batch size 2", "4. saved", "5. for comparison"):
        assert step in out
    assert "same predictions" in out


def test_resnet50_pipeline_on_generated_images():
    out = ok(run(EXAMPLES / "resnet50_imagenet.py", "--quick"))
    for target in ("groupnorm+ws", "switchnorm", "frn"):
        assert f"{target}: 53 BN sites converted" in out
    assert out.count("saved and reloaded") == 3


def test_resnet50_without_imagenet_weights_says_so_in_one_line(tmp_path):
    # An empty Keras cache and a proxy nobody listens on: the download fails at once,
    # with or without a network.
    proxy = "http://127.0.0.1:9"
    env = {"KERAS_HOME": str(tmp_path / "keras_home"), "HTTPS_PROXY": proxy,
           "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "",
           "no_proxy": ""}
    result = run(EXAMPLES / "resnet50_imagenet.py", "--calibration", str(tmp_path),
                 "--train", str(tmp_path), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--weights PATH" in lines[0] and "--weights none" in lines[0]


def test_resnet50_missing_weights_file(tmp_path):
    result = run(EXAMPLES / "resnet50_imagenet.py", "--weights", str(tmp_path / "no.h5"),
                 "--calibration", str(tmp_path), "--train", str(tmp_path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no such file" in result.stderr


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only; main() is not called
    return module


def test_resnet50_reads_local_weight_files(tmp_path):
    import keras

    example = load_example("resnet50_imagenet")
    source = keras.applications.ResNet50(weights=None, include_top=False,
                                         input_shape=(32, 32, 3), pooling="avg")
    expected = keras.ops.convert_to_numpy(source.get_layer("conv1_conv").kernel)
    source.save_weights(tmp_path / "notop.weights.h5")
    source.save(tmp_path / "legacy_model.h5")  # a legacy HDF5 file: matched by layer name
    for name in ("notop.weights.h5", "legacy_model.h5"):
        loaded = example.backbone(str(tmp_path / name), 32)
        got = keras.ops.convert_to_numpy(loaded.get_layer("conv1_conv").kernel)
        np.testing.assert_array_equal(got, expected)
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    with pytest.raises(example.UsageProblem, match="no ResNet50 weights"):
        example.backbone(str(tmp_path / "junk.keras"), 32)


def test_distributed_finetune_on_both_backends():
    out = ok(run(EXAMPLES / "distributed_finetune.py", "--quick"))
    assert "MirroredStrategy over 2 replicas" in out
    assert "synchronized=[True]" in out
    assert "DataParallel over 2 devices" in out
    assert "The batch statistics span the global batch." in out
    assert out.count("fine-tuned") == 2


def test_small_batch_study_quick(tmp_path):
    out = ok(run(REPO / "benchmarks" / "small_batch.py", "--quick", "--out", str(tmp_path)))
    assert "test accuracy" in out
    markdown = (tmp_path / "small_batch.md").read_text(encoding="utf-8")
    assert "| bn |" in markdown and "| groupnorm |" in markdown
    payload = json.loads((tmp_path / "small_batch.json").read_text(encoding="utf-8"))
    study = payload["studies"][0]
    assert set(study["methods"]) == {"bn", "groupnorm"}
    for entry in study["methods"].values():
        for batch in entry["batch"].values():
            assert len(batch["runs"]) == payload["seeds"]
            assert {r["seed"] for r in batch["runs"]} == set(range(payload["seeds"]))
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "small_batch.png").stat().st_size > 10_000
