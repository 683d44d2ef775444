"""The `normswap` command.

    normswap MODEL --to TARGET -o OUT [options]   convert and save
    normswap inspect MODEL                         the model's BN sites
    normswap targets                               what can be swapped in
    normswap restat MODEL --data FILE -o OUT       precise population statistics
    normswap plot MODEL -o out.png [--report F]    SwitchNorm shares, site fidelity
    normswap demo [--to TARGET]                    the embedded example

One module a command (convert.py, inspection.py, restat.py, plot.py, targets.py, demo.py);
_common.py holds the command group and what the commands share.

Exit status: 0 on success, 2 for bad usage or an unreadable input, 1 for any other failure.
A failure prints one line on stderr; --debug shows the traceback.
"""

import sys
import traceback
import warnings

import click

from normswap.cli import convert, demo, inspection, plot, restat, targets  # noqa: F401
from normswap.cli._common import cli, stderr
from normswap.errors import NormswapError


def main(argv=None):
    """Entry point: run the command, turn every failure into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]
    debug = "--debug" in argv
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
        return _run(argv, debug)


def _run(argv, debug):
    try:
        cli.main(args=argv, prog_name="normswap", standalone_mode=False)
    except click.exceptions.Abort:
        stderr.print("normswap: aborted", highlight=False)
        return 130
    except click.ClickException as error:
        _fail(error.format_message(), 2, debug)
        return 2
    except NormswapError as error:
        _fail(str(error), error.exit_code, debug)
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - the last line of defence for users
        _fail(f"unexpected {type(error).__name__}: {error} (rerun with --debug for details)",
              1, debug)
        return 1
    return 0


def _fail(message, code, debug):
    if debug:
        traceback.print_exc()
    first_line = " ".join(str(message).split("\n")[0].split())
    print(f"normswap: error: {first_line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
