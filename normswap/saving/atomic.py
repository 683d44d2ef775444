"""Atomic saving: a temporary file in the target directory, made durable, then renamed.

One path for every format: Keras writes the model to a hidden temporary file beside the
output, the file is flushed to disk (fsync), renamed over the output (`os.replace`, atomic
within a directory), and the directory is flushed so that the rename itself survives a
power cut. A failure at any point (Keras raising, the disk filling up, the rename failing,
SIGINT or SIGTERM arriving) removes the temporary file and leaves an existing output as it
was; an interrupting signal is handed on to its previous handler once the cleanup is done.

`save_verified` overlaps the write with a check (normswap's verification): the check runs
in another thread while the temporary file is written and flushed, and the rename waits
for it. A check that raises removes the temporary file and nothing appears at the output.

A model with a layer shared across models, which Keras 3 writes but may not load back, is
loaded back from the temporary file before the rename (`round_trip.py`).
"""

import contextlib
import logging
import os
import secrets
import shutil
import signal
import threading
from pathlib import Path

import keras

from normswap.errors import SaveError
from normswap.saving.load_errors import error_summary
from normswap.saving.paths import check_output_path
from normswap.saving.round_trip import check_loads_back

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM")
                 if hasattr(signal, name))


def save_model(model, path, *, force=False, protected=()):
    """Save `model` atomically and return the path written.

    The format follows the extension: `.keras` (also added when `path` has no extension)
    or legacy `.h5`/`.hdf5`. The model is written to a hidden temporary file in the target
    directory, flushed to disk and renamed into place, so a failure or an interruption
    never leaves a half-written file or a temporary one, and never touches an existing
    output. SIGINT or SIGTERM received while saving (in the main thread) stops the write,
    and is delivered to its previous handler once the temporary file is gone.

    Args:
        model: the keras.Model to save.
        path: the output file.
        force: overwrite an existing output file.
        protected: paths never to write over (the input model), whatever `force` says.

    Raises:
        UsageError: bad extension, missing or read-only directory, the output is protected
            or exists (without force).
        SaveError: Keras failed to write the model, the disk or the rename failed, a
            signal whose handler returned interrupted the write, or Keras cannot load
            the written file back (`round_trip.py`; exit status 1).
    """
    return _save(model, path, None, force, protected)[0]


def save_verified(model, path, check, *, force=False, protected=()):
    """`save_model`, with `check()` run in another thread while the file is written.

    The temporary file is written and flushed while `check` runs; it is renamed into place
    only once `check` has returned. If `check` raises, the temporary file is removed,
    nothing appears at `path` (an existing file there is untouched) and `check`'s exception
    propagates as it is. A failure of the write itself is a SaveError, raised once `check`
    has finished. Returns (the path written, what `check` returned).

    `check` must not change `model` (verification only runs it).
    """
    return _save(model, path, check, force, protected)


def _save(model, path, check, force, protected):
    if not isinstance(model, keras.Model):
        raise TypeError(f"save_model expects a keras.Model. Received: {type(model).__name__}")
    path = check_output_path(path, force=force, protected=protected)
    temporary = _temporary_path(path)
    background = _Background(check) if check is not None else None
    with _SignalGuard() as guard:
        try:
            result = _write(model, temporary, path, guard, background)
        except _Interrupted as interrupted:
            _remove_quietly(temporary)
            raise SaveError(f"saving {path} was interrupted by {interrupted.name}; nothing "
                            "was written") from None
        except _CheckFailed as failed:
            _remove_quietly(temporary)
            raise failed.error from None
        except SaveError:  # the file does not load back (round_trip.py)
            _remove_quietly(temporary)
            raise
        except BaseException as error:
            _remove_quietly(temporary)
            if background is not None and isinstance(error, Exception):
                background.wait()  # no verification left running behind a failed save
            if isinstance(error, Exception):
                raise SaveError(
                    f"could not save the model to {path}: {error_summary(error)}") from error
            raise
    return path, result


def _write(model, temporary, path, guard, background=None):
    """Write `temporary` and flush it to disk, wait for the check running in `background`
    and, for a model Keras may not load back, load it back (`round_trip.py`); a signal may
    stop this part. Then rename it to `path` and flush the directory (signals wait for
    this part to finish). Returns the check's result."""
    guard.armed = True
    try:
        with _quiet_h5_legacy_warning():
            model.save(temporary)
        _fsync_file(temporary)
        result = background.result() if background is not None else None
        check_loads_back(model, temporary, path)
    finally:
        guard.armed = False
    os.replace(temporary, path)
    _fsync_directory(path.parent)
    return result


class _CheckFailed(BaseException):
    """The check run beside the write raised `error` (re-raised as it is, after cleanup)."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


class _Background:
    """A function run in a daemon thread (a signal ending the save does not wait for it)."""

    def __init__(self, function):
        self._result = self._error = None
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True,
                                        name="normswap-check")
        self._thread.start()

    def _run(self, function):
        try:
            self._result = function()
        except BaseException as error:  # noqa: BLE001 - handed to the saving thread
            self._error = error

    def wait(self):
        self._thread.join()

    def result(self):
        """Wait for the function (interruptible by signals); its result, or _CheckFailed."""
        self._thread.join()
        if self._error is not None:
            raise _CheckFailed(self._error)
        return self._result


def _temporary_path(path):
    while True:
        # Keras picks the format from the (lower-case) extension of the name it is given.
        suffix = path.suffix.lower()
        candidate = Path(path).with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{suffix}")
        if not os.path.lexists(candidate):
            return candidate


def _fsync_file(path):
    """Flush a file Keras wrote and closed to the disk. (Opened for writing: Windows only
    flushes a handle it may write through.)"""
    descriptor = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory):
    """Flush a directory's entries (the rename) to disk, where the platform allows: Windows
    cannot open a directory, and some file systems refuse to fsync one."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the model was being written."""

    def __init__(self, signum):
        super().__init__(signum)
        self.name = signal.Signals(signum).name


class _SignalGuard:
    """SIGINT and SIGTERM during a save: while `armed` (the write), the first one raises
    `_Interrupted`, so that the temporary file is removed; otherwise (the cleanup, the
    rename) it waits. On exit, the previous handlers are back and the signal is delivered
    to them: KeyboardInterrupt for Ctrl-C, termination for a default SIGTERM.

    Handlers are only set in the main thread (the only one that may), and not over a
    signal that is ignored or whose handler was set outside Python.
    """

    def __init__(self):
        self.armed = False
        self.caught = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                current = signal.getsignal(signum)
                if current is not None and current != signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.caught is None:
            self.caught = signum
        if self.armed:
            self.armed = False  # at most once
            raise _Interrupted(signum)

    def __exit__(self, kind, error, traceback):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.caught is not None:
            signal.raise_signal(self.caught)  # the restored handler runs now
        return False


class _DropMessage(logging.Filter):
    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.getMessage()).startswith(self.prefix)


@contextlib.contextmanager
def _quiet_h5_legacy_warning():
    """Silence Keras's "You are saving your model as an HDF5 file ... legacy" warning.

    Saving .h5 is what the user asked for; Keras logs the warning through absl.
    """
    absl_logger = logging.getLogger("absl")
    drop = _DropMessage("You are saving your model as an HDF5 file")
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)
