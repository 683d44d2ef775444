"""The `normswap` command end to end, in real subprocesses, as a user runs it."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import normswap  # noqa: F401 - registers the layers for load_model
from normswap.demo_data import load_demo_digits

RESNET8 = "mlperftiny_ic01_resnet8_cifar10.h5"


def run(*args, cwd=None):
    """Run `normswap ARGS` the way the console script does; return the CompletedProcess."""
    code = ("import sys; sys.argv[0] = 'normswap'; from normswap.cli import main; "
            "sys.exit(main())")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def run_here(capsys, *args):
    """Run the command in this process (fast); returns (exit status, stdout, stderr)."""
    from normswap.cli import main

    status = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def resnet8(realmodels, tmp_path_factory):
    copy = tmp_path_factory.mktemp("in") / RESNET8
    shutil.copy(realmodels / RESNET8, copy)
    return copy


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("normswap: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_convert_fold_real_model_keeps_accuracy_exactly(resnet8, realmodels, tmp_path):
    out = tmp_path / "folded.keras"
    before = digest(resnet8)
    result = run(str(resnet8), "--to", "fold", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert "exact: verified" in result.stdout and f"Wrote {out}" in result.stdout
    assert digest(resnet8) == before
    data = np.load(realmodels / "cifar10_test200_mlperftiny_ic01.npz")
    x, y = data["x"].astype("float32"), data["y"].ravel()
    original = keras.models.load_model(resnet8, compile=False)
    converted = keras.models.load_model(out)
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in converted.layers)
    old = original.predict(x, verbose=0).argmax(1)
    new = converted.predict(x, verbose=0).argmax(1)
    np.testing.assert_array_equal(old, new)
    assert np.mean(new == y) >= 0.85


def test_json_report_and_h5_output(resnet8, tmp_path):
    out = tmp_path / "renorm.h5"
    result = run(str(resnet8), "--to", "batchrenorm", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["swapped"] == 7 and report["summary"]["exact"] is True
    assert report["fidelity"]["relative_max_deviation"] <= 1e-4
    assert all(site["to"] == "BatchRenormalization" for site in report["sites"])
    assert keras.models.load_model(out).count_params() > 0


def test_dry_run_writes_nothing(capsys, resnet8, tmp_path):
    out = tmp_path / "never.keras"
    result = run_here(capsys, str(resnet8), "--to", "groupnorm", "-o", str(out), "--dry-run",
                      "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert len(plan["sites"]) == 7 and plan["sites"][0]["params"]["groups"] == 1
    assert not out.exists()


def test_inspect_json_lists_every_site(resnet8):
    result = run("inspect", str(resnet8), "--json")
    assert result.returncode == 0, result.stderr
    sites = json.loads(result.stdout)["sites"]
    assert len(sites) == 7
    assert sites[0]["producer_kind"] == "Conv2D" and sites[0]["relu_after"]
    assert json.loads(result.stdout)["other_normalizations"] == {}


def test_inspect_counts_the_normalization_layers_a_converted_model_holds(capsys, tmp_path):
    from tests.models import small_cnn

    path = tmp_path / "switch.keras"
    normswap.convert(small_cnn(), "switchnorm", output=path)
    result = run_here(capsys, "inspect", str(path))
    assert result.returncode == 0
    assert "small_cnn: 0 BatchNormalization sites" in result.stdout
    assert "Other normalization layers: 4 SwitchNormalization" in result.stdout
    path = tmp_path / "mixed.keras"
    normswap.convert(small_cnn(), "fold", output=path, only=["b1_*", "post_add_bn"])
    result = run_here(capsys, "inspect", str(path), "--json")
    assert json.loads(result.stdout)["other_normalizations"] == {"ChannelAffine": 1}
    assert len(json.loads(result.stdout)["sites"]) == 2
    # a Keras-2 compatibility layer is a BN site, listed above, not counted again
    from normswap.cli.inspection import other_normalizations
    from normswap.layers import Keras2SwitchNormalization, SwitchNormalization

    inputs = keras.Input((4, 4, 3))
    seeded = keras.Model(inputs, SwitchNormalization()(Keras2SwitchNormalization()(inputs)))
    assert len(normswap.find_sites(seeded)) == 1
    assert other_normalizations(seeded) == {"SwitchNormalization": 1}


def test_targets_lists_every_registered_target(capsys):
    result = run_here(capsys, "targets", "--json")
    assert result.returncode == 0
    assert set(json.loads(result.stdout)) == set(normswap.all_targets())


def test_typo_in_target_name(capsys, resnet8, tmp_path):
    result = run_here(capsys, str(resnet8), "--to", "swtichnorm", "-o", str(tmp_path / "x.keras"))
    assert result.returncode == 2
    assert "Did you mean 'switchnorm'" in one_error_line(result)


@pytest.mark.parametrize("make_input, phrase", [
    (lambda d: d / "missing.h5", "no such file"),
    (lambda d: d, "directory"),
    (lambda d: (d / "notes.h5").write_text("hello") and d / "notes.h5", "not"),
])
def test_unreadable_inputs(capsys, tmp_path, make_input, phrase):
    source = make_input(tmp_path)
    out = tmp_path / "out.keras"
    result = run_here(capsys, str(source), "--to", "fold", "-o", str(out))
    assert result.returncode == 2
    assert phrase in one_error_line(result)
    assert not out.exists()


def test_weights_only_file(capsys, realmodels, tmp_path):
    result = run_here(capsys, str(realmodels / "crepe_model-tiny_weights_only.h5"), "--to", "fold",
                 "-o", str(tmp_path / "out.keras"))
    assert result.returncode == 2
    assert "weights only" in one_error_line(result)


def test_no_batchnorm_is_a_failure_and_writes_nothing(capsys, tmp_path):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    source = tmp_path / "plain.keras"
    plain.save(source)
    out = tmp_path / "out.keras"
    result = run_here(capsys, str(source), "--to", "groupnorm", "-o", str(out))
    assert result.returncode == 1
    assert "No BatchNormalization" in one_error_line(result)
    assert not out.exists()


def test_refuses_to_overwrite_input_or_existing_output(capsys, resnet8, tmp_path):
    before = digest(resnet8)
    result = run_here(capsys, str(resnet8), "--to", "fold", "-o", str(resnet8))
    assert result.returncode == 2 and "input" in one_error_line(result)
    assert digest(resnet8) == before
    existing = tmp_path / "exists.keras"
    existing.write_bytes(b"keep me")
    result = run_here(capsys, str(resnet8), "--to", "fold", "-o", str(existing))
    assert result.returncode == 2 and "--force" in one_error_line(result)
    assert existing.read_bytes() == b"keep me"
    forced = run_here(capsys, str(resnet8), "--to", "fold", "-o", str(existing), "--force")
    assert forced.returncode == 0
    assert existing.read_bytes() != b"keep me"


def test_bad_options(capsys, resnet8, tmp_path):
    out = str(tmp_path / "o.keras")
    zero = run_here(capsys, str(resnet8), "--to", "groupnorm", "-o", out, "--groups", "0")
    assert zero.returncode == 2
    missing_output = run_here(capsys, str(resnet8), "--to", "fold")
    assert missing_output.returncode == 2 and "--output" in one_error_line(missing_output)
    inexact = run_here(capsys, str(resnet8), "--to", "groupnorm", "--exact", "-o", out)
    assert inexact.returncode == 2 and "cannot reproduce" in one_error_line(inexact)


def test_demo_runs_and_reports_accuracy():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert "Accuracy on 250 held-out digits" in result.stdout
    assert "after calibrating on 250 other unlabelled digits" in result.stdout
    assert "after reconstruction" in result.stdout


def test_demo_scores(capsys):
    from rich.console import Console

    from normswap.demo import run_demo

    exact = run_demo("frozenbn", console=Console())
    assert exact["original"] == exact["converted"] >= 0.95 and "calibrated" not in exact
    inexact = run_demo("layernorm", reconstruct=False, console=Console())
    assert inexact["converted"] < 0.5 < 0.9 * inexact["original"] <= inexact["calibrated"]
    assert "reconstructed" not in inexact


def test_cli_calibration_and_bad_file(tmp_path, capsys, trained):
    from normswap.cli import main

    model, calibration, held_out = trained
    x, y = load_demo_digits()
    source = tmp_path / "demo.keras"
    model.save(source)
    np.savez(tmp_path / "calib.npz", x=calibration)
    np.savez(tmp_path / "eval.npz", x=held_out, y=y[128:256])
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 5)))
    out = tmp_path / "out.keras"
    status = main([str(source), "--to", "layernorm", "-o", str(out), "--json",
                   "--calibrate", str(tmp_path / "calib.npz"),
                   "--eval", str(tmp_path / "eval.npz")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    import json

    report = json.loads(captured.out)
    assert report["calibration"]["samples"] == 128 and report["fidelity"]["source"] == "eval"
    assert report["accuracy"]["converted"] >= 0.9 * report["accuracy"]["original"]
    bad_out = tmp_path / "bad_out.keras"
    status = main([str(source), "--to", "layernorm", "-o", str(bad_out),
                   "--calibrate", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "do not fit" in err[0]
    assert not bad_out.exists()


def test_cli_reconstruction(tmp_path, capsys, trained):
    from normswap.cli import main

    model, calibration, _ = trained
    source = tmp_path / "demo.keras"
    model.save(source)
    np.savez(tmp_path / "calib.npz", x=calibration[:32])
    out = tmp_path / "out.keras"
    status = main([str(source), "--to", "evonorm", "-o", str(out), "--json",
                   "--calibrate", str(tmp_path / "calib.npz"), "--reconstruct",
                   "--reconstruct-steps", "5"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    blocks = json.loads(captured.out)["calibration"]["reconstruction"]
    assert len(blocks) == 7 and all(b["r2_after"] >= b["r2_before"] for b in blocks)
    status = main([str(source), "--to", "evonorm", "-o", str(tmp_path / "x.keras"),
                   "--reconstruct"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--calibrate" in err[0]


@pytest.mark.parametrize("command, place", [
    (("{model}", "--to", "fold", "-o", "{out}", "--report-file", "{side}"), "the report"),
    (("inspect", "{model}", "--graph", "{side}"), "the graph"),
])
def test_a_side_file_that_cannot_be_written_fails_before_any_work(capsys, resnet8, tmp_path,
                                                                 command, place):
    """A report or graph path in a missing directory, or naming the model itself, is refused
    at once: before, the model was converted and written, then the report failed with an
    'unexpected FileNotFoundError'."""
    out = tmp_path / "out.keras"
    for side, phrase in [(tmp_path / "missing" / "side.dot", "does not exist"),
                         (resnet8, "which this command reads or writes"),
                         (tmp_path, "is a directory")]:
        before = digest(resnet8)
        args = [a.format(model=resnet8, out=out, side=side) for a in command]
        result = run_here(capsys, *args)
        assert result.returncode == 2
        line = one_error_line(result)
        assert phrase in line, line
        assert place in line or phrase == "is a directory"  # that one is click's own check
        assert not out.exists() and digest(resnet8) == before


def test_the_report_never_overwrites_the_model_written_or_the_data_read(capsys, resnet8,
                                                                        realmodels, tmp_path):
    data = tmp_path / "data.npz"
    shutil.copy(realmodels / "cifar10_test200_mlperftiny_ic01.npz", data)
    before = digest(data)
    for args in (["-o", str(tmp_path / "out"), "--report-file", str(tmp_path / "out.keras")],
                 ["-o", str(tmp_path / "o.keras"), "--calibrate", str(data),
                  "--report-file", str(data)],
                 ["-o", str(tmp_path / "o.keras"), "--eval", str(data),
                  "--report-file", str(data)]):
        result = run_here(capsys, str(resnet8), "--to", "frn", *args)
        assert result.returncode == 2
        assert "which this command reads or writes" in one_error_line(result)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
        assert digest(data) == before
