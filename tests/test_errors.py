"""The error taxonomy: one base class, a subclass per kind of refusal, one exit-code table."""

import pytest

import normswap
from normswap import errors


@pytest.mark.parametrize("cls, code", [
    (errors.UsageError, 2), (errors.InputFileError, 2), (errors.UnsafeModelError, 2),
    (errors.UnsupportedModelError, 1), (errors.NothingToConvertError, 1),
    (errors.VerificationError, 1), (errors.SaveError, 1), (errors.NormswapError, 1),
])
def test_every_error_is_a_normswap_error_with_its_exit_code(cls, code):
    error = cls("message")
    assert isinstance(error, normswap.NormswapError) and str(error) == "message"
    assert errors.exit_code_for(error) == code and error.exit_code == code
    assert getattr(normswap, cls.__name__) is cls


def test_input_file_errors_are_usage_errors():
    assert issubclass(errors.UnsafeModelError, errors.InputFileError)
    assert issubclass(errors.InputFileError, errors.UsageError)
    assert not issubclass(errors.VerificationError, errors.UsageError)
