"""What normswap raises for problems a user can act on, and the exit status of each.

Every error is a `NormswapError`; catch that to catch them all, or a subclass for one kind:

- `UsageError`: bad arguments (an unknown target or option, a bad group count, an
  output path that cannot be written, calibration data of the wrong shape).
- `InputFileError` (a `UsageError`): a model file that cannot be read or is not a model
  (missing, weights only, a SavedModel, an unknown custom layer, ...).
- `UnsafeModelError` (an `InputFileError`): a model file holding Python code (a Lambda
  layer) that normswap will not run unless asked to (`safe_mode=False`, `--unsafe`).
- `UnsupportedModelError`: a model normswap cannot rewrite (a subclassed model whose
  layers are called from Python code).
- `NothingToConvertError`: no BatchNormalization site was found or selected.
- `VerificationError`: an exact conversion did not reproduce the original model.
- `SaveError`: Keras failed while writing the output file.

The command line maps them to exit statuses in one place, `exit_code_for`: 2 for usage
errors and unreadable inputs, 1 for everything else.
"""


class NormswapError(Exception):
    """Base class of every error normswap raises on purpose. The message is for the user."""

    @property
    def exit_code(self):
        """The command line's exit status for this error (see `exit_code_for`)."""
        return exit_code_for(self)


class UsageError(NormswapError):
    """Bad arguments: the call or the command line must change."""


class InputFileError(UsageError):
    """A model file that cannot be read, or is not a Keras model normswap can load."""


class UnsafeModelError(InputFileError):
    """A model file whose loading would run Python code stored in it (a Lambda layer)."""


class UnsupportedModelError(NormswapError):
    """A model normswap cannot rewrite, such as a subclassed model."""


class NothingToConvertError(NormswapError):
    """No BatchNormalization site was found, or none was selected or convertible."""


class VerificationError(NormswapError):
    """An exact conversion does not reproduce the original model: nothing is written."""


class SaveError(NormswapError):
    """Keras failed to write the output model (the output path is left as it was)."""


EXIT_CODES = {UsageError: 2, NormswapError: 1}


def exit_code_for(error):
    """The exit status of the command line for `error`: 2 for a `UsageError` (bad usage,
    an unreadable or unsafe input), 1 for any other failure."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
