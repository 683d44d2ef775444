"""The one exception type normswap raises for problems a user can act on."""


class NormswapError(Exception):
    """A failure with a message meant for the user, and the CLI exit status it maps to.

    `exit_code` 2 means bad usage or an unreadable input; 1 any other failure.
    """

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(NormswapError):
    """Bad arguments or an input that cannot be read (CLI exit status 2)."""

    def __init__(self, message):
        super().__init__(message, exit_code=2)
