"""save_model is atomic: a failure injected at each step (the write, a signal, the fsync, the
rename) leaves no partial or temporary file, an existing output byte for byte as it was,
and the input model file untouched; a completed write replaces the output whole."""

import errno
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from normswap.errors import SaveError, UsageError
from normswap.saving import load_model, save_model, save_verified

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")

OLD_OUTPUT = b"the previous output, which must survive"


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def input_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "input.h5"
    tiny_model().save(path)
    return path


@pytest.fixture
def model(input_file):
    """The input file's model, loaded the way the command loads it (a fresh copy per test,
    so that patching its `save` stays within the test)."""
    return load_model(input_file)


@pytest.fixture
def case(tmp_path, input_file, request):
    """A folder holding an output file from an earlier run; checks afterwards that the
    folder holds only that file and that the input file is unchanged."""
    suffix = getattr(request, "param", ".keras")
    output = tmp_path / f"out{suffix}"
    output.write_bytes(OLD_OUTPUT)
    before = digest(input_file)
    yield output
    assert digest(input_file) == before


def assert_untouched(output):
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temporary
    assert output.read_bytes() == OLD_OUTPUT


def writes_half_then(action):
    """A stand-in for model.save: writes half a file, then does `action()`."""

    def save(path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a model")
        action()
        raise AssertionError("the action should have stopped the save")

    return save


@pytest.fixture
def sigterm_handler():
    """Install a SIGTERM handler raising Terminated, for the test (the test process must
    survive the signal); the handler in place before is restored afterwards."""
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    yield handler, calls
    signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    pass


def send(signum):
    return lambda: os.kill(os.getpid(), signum)


# --- failures during the write ---------------------------------------------------------------


@pytest.mark.parametrize("case", [".keras", ".h5"], indirect=True)
def test_disk_full_halfway(model, case, monkeypatch):
    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(model, "save", writes_half_then(disk_full))
    with pytest.raises(SaveError) as caught:
        save_model(model, case, force=True)
    message = str(caught.value)
    assert caught.value.exit_code == 1 and "\n" not in message
    assert str(case) in message and os.strerror(errno.ENOSPC) in message
    assert_untouched(case)


@pytest.mark.parametrize("case", [".keras", ".h5"], indirect=True)
def test_keyboard_interrupt_halfway(model, case, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save", writes_half_then(interrupt))
    with pytest.raises(KeyboardInterrupt):
        save_model(model, case, force=True)
    assert_untouched(case)


@pytest.mark.parametrize("case", [".keras", ".h5"], indirect=True)
def test_sigterm_halfway_is_handed_on_after_the_cleanup(model, case, monkeypatch,
                                                        sigterm_handler):
    handler, calls = sigterm_handler
    seen_during_save = []

    def terminate():
        seen_during_save.append(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(model, "save", writes_half_then(terminate))
    with pytest.raises(Terminated) as caught:
        save_model(model, case, force=True)
    assert calls == [signal.SIGTERM]  # delivered once, to the handler in place before
    assert seen_during_save[0] is not handler  # save_model's own, for the save only
    assert signal.getsignal(signal.SIGTERM) is handler
    assert isinstance(caught.value.__context__, SaveError)
    assert "interrupted by SIGTERM" in str(caught.value.__context__)
    assert_untouched(case)


def test_sigterm_whose_handler_returns_is_a_save_error(model, case, monkeypatch):
    calls = []

    def record(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        monkeypatch.setattr(model, "save", writes_half_then(send(signal.SIGTERM)))
        with pytest.raises(SaveError, match=r"interrupted by SIGTERM; nothing was written"):
            save_model(model, case, force=True)
        assert signal.getsignal(signal.SIGTERM) is record
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == [signal.SIGTERM]
    assert_untouched(case)


def test_ctrl_c_halfway_is_a_keyboard_interrupt_after_the_cleanup(model, case, monkeypatch):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(model, "save", writes_half_then(send(signal.SIGINT)))
        with pytest.raises(KeyboardInterrupt):
            save_model(model, case, force=True)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_untouched(case)


def test_an_ignored_signal_stays_ignored(model, case, monkeypatch):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        real_save = model.save

        def save_despite_sigterm(path, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            real_save(path, *args, **kwargs)

        monkeypatch.setattr(model, "save", save_despite_sigterm)
        save_model(model, case, force=True)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert keras.models.load_model(case, compile=False).count_params() == model.count_params()


# --- failures after the write ----------------------------------------------------------------


@pytest.mark.parametrize("case", [".keras", ".h5"], indirect=True)
def test_rename_failing(model, case, monkeypatch):
    def no_rename(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(SaveError, match=os.strerror(errno.EXDEV)):
        save_model(model, case, force=True)
    assert_untouched(case)


def test_fsync_failing(model, case, monkeypatch):
    def io_error(descriptor):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", io_error)
    with pytest.raises(SaveError, match=os.strerror(errno.EIO)):
        save_model(model, case, force=True)
    assert_untouched(case)


def test_sigterm_during_the_rename_waits_for_it(model, case, monkeypatch, sigterm_handler):
    handler, calls = sigterm_handler
    real_replace = os.replace

    def replace_while_terminated(source, target):
        os.kill(os.getpid(), signal.SIGTERM)
        assert not calls  # not yet: the rename finishes first
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_while_terminated)
    with pytest.raises(Terminated):
        save_model(model, case, force=True)
    assert calls == [signal.SIGTERM]
    assert sorted(p.name for p in case.parent.iterdir()) == [case.name]
    assert keras.models.load_model(case, compile=False).count_params() == model.count_params()


# --- the steps of a save that succeeds -------------------------------------------------------


@pytest.mark.parametrize("case", [".keras", ".h5"], indirect=True)
def test_write_fsync_rename_fsync_directory(model, case, monkeypatch):
    steps = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        steps.append(("fsync", os.path.isdir(f"/proc/self/fd/{descriptor}")
                      if os.path.isdir("/proc/self/fd") else None))
        real_fsync(descriptor)

    def replace(source, target):
        steps.append(("replace", Path(source).parent == Path(target).parent))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert save_model(model, case, force=True) == case
    assert [name for name, _ in steps] == ["fsync", "replace", "fsync"]
    assert steps[1][1]  # the temporary file was in the output's directory
    if steps[0][1] is not None:
        assert (steps[0][1], steps[2][1]) == (False, True)  # the file, then the directory
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert sorted(p.name for p in case.parent.iterdir()) == [case.name]
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.models.load_model(case, compile=False).predict(x, verbose=0),
        model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_directory_that_cannot_be_opened(model, case, monkeypatch):
    # Windows: os.open on a directory fails; the save must not.
    real_open, refused = os.open, []

    def no_directories(path, flags, *args, **kwargs):
        if os.path.isdir(path) and Path(path) == case.parent:
            refused.append(path)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_directories)
    save_model(model, case, force=True)
    assert refused
    assert keras.models.load_model(case, compile=False).count_params() == model.count_params()


def test_save_in_another_thread_leaves_the_handlers_alone(model, tmp_path):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    errors = []

    def save():
        try:
            save_model(model, tmp_path / "out.keras")
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    thread = threading.Thread(target=save)
    thread.start()
    thread.join()
    assert not errors
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert (tmp_path / "out.keras").is_file()


def test_without_force_an_existing_output_is_never_touched(model, case):
    with pytest.raises(UsageError, match="already exists"):
        save_model(model, case)
    assert_untouched(case)


def test_signal_guard_is_not_left_installed_after_a_failure(model, case, monkeypatch):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def boom(path, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "save", boom)
    with pytest.raises(SaveError, match="boom"):
        save_model(model, case, force=True)
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_save_verified_renames_only_after_the_check_has_passed(model, case):
    """The check runs while the file is written; the output appears only once it returns."""
    seen_during_check = []

    def check():
        seen_during_check.append(case.read_bytes() == OLD_OUTPUT)
        return "verified"

    written, result = save_verified(model, case, check, force=True)
    assert (written, result) == (case, "verified") and seen_during_check == [True]
    assert sorted(p.name for p in case.parent.iterdir()) == [case.name]
    reloaded = keras.models.load_model(case, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(), model.get_weights()))


@pytest.mark.parametrize("case", [".keras", ".h5"], indirect=True)
def test_a_failing_check_leaves_nothing_and_raises_its_own_error(model, case):
    class NotVerified(Exception):
        pass

    def check():
        raise NotVerified("outputs differ")

    with pytest.raises(NotVerified, match="outputs differ"):
        save_verified(model, case, check, force=True)
    assert_untouched(case)


def test_a_failing_write_waits_for_the_check_and_is_a_save_error(model, case, monkeypatch):
    finished = []

    def check():
        time.sleep(0.2)
        finished.append(True)

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save", disk_full)
    with pytest.raises(SaveError, match="No space left"):
        save_verified(model, case, check, force=True)
    assert finished == [True]  # no verification left running behind the error
    assert_untouched(case)
