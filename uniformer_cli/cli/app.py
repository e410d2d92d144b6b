"""The `uniformer` command: a thin Typer layer that parses options, calls the engine and prints."""

from __future__ import annotations

import sys

import typer

from uniformer_cli.cli import convert, evaluate, features, flops, models, predict, train
from uniformer_cli.errors import Terminated, UniformerError
from uniformer_cli.progress import print_error, stderr_console

app = typer.Typer(
    name="uniformer",
    help="UniFormer video classification: predict, evaluate, train, count FLOPs and convert checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
app.command("predict")(predict.predict)
app.command("eval", epilog=evaluate.LAYOUTS_EPILOG)(evaluate.evaluate)
app.command("train")(train.train)
app.command("features")(features.features)
app.command("flops")(flops.flops)
app.command("convert")(convert.convert)
app.command("models")(models.models)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every `UniformerError` becomes one red line on stderr and exit status 1."""
    try:
        app(args=argv, prog_name="uniformer")
    except UniformerError as error:
        print_error(error)
        sys.exit(1)
    except Terminated:
        stderr_console.print("[bold red]terminated[/] (SIGTERM)")
        sys.exit(143)
    except KeyboardInterrupt:
        stderr_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
