"""What the commands share: the consoles, the command group, loading, a spinner."""

import contextlib

import click
from rich.console import Console

stderr = Console(stderr=True)
stdout = Console()
if not stdout.is_terminal:  # a pipe or a file: room for the report's columns
    stdout = Console(width=140)


class _DefaultToConvert(click.Group):
    """A group whose first argument, when not a subcommand, is the MODEL of `convert`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h",
                                                                      "--version"):
            args = ["convert"] + list(args)
        return super().parse_args(ctx, args)


@contextlib.contextmanager
def step(message, quiet=False):
    """A spinner on stderr for a step that may take more than a second."""
    if quiet or not stderr.is_terminal:
        yield
        return
    with stderr.status(message):
        yield


@click.group(cls=_DefaultToConvert, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="normswap", message="normswap %(version)s")
def cli():
    """Swap the BatchNormalization layers of a trained Keras model for another
    normalization, carry the learned weights, verify, and save.

    \b
    normswap model.h5 --to groupnorm -o out.keras
    normswap inspect model.h5
    normswap targets
    normswap demo
    """


def load(source, weights, custom_objects, unsafe=False, group_norm_seed=None):
    from normswap import saving

    objects = saving.load_custom_objects(custom_objects) if custom_objects else None
    return saving.load_model(source, weights=weights, custom_objects=objects,
                             safe_mode=not unsafe, group_norm_seed=group_norm_seed)


def model_source_options(command):
    """--weights, --custom-objects and --unsafe: how MODEL is loaded."""
    for option in reversed([
        click.option("--weights", default="imagenet", show_default=True,
                     help="For keras:<Application>: imagenet, none, or a weights file."),
        click.option("--custom-objects", type=click.Path(),
                     help="A Python file defining the model's custom layers."),
        click.option("--unsafe", is_flag=True,
                     help="Load a model file even if it holds Python code (Lambda layers), "
                          "which runs while loading: only for files you trust."),
    ]):
        command = option(command)
    return command


def group_norm_seed_option(command):
    """--group-norm-seed: which Keras 2 library wrote a legacy file's GroupNormalization
    layers (normswap/saving/seeds/), for the commands that load a model to convert or
    inspect it."""
    return click.option(
        "--group-norm-seed", type=click.Choice(["titu1994", "keras-contrib"]),
        help="The Keras 2 library that wrote a legacy .h5 file's GroupNormalization layers, "
             "where the two compute different functions and the file cannot tell.")(command)
