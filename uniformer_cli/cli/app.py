"""The `uniformer` command: a thin Typer layer that parses options, calls the engine and prints."""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Annotated, Any

import typer

from uniformer_cli import engine
from uniformer_cli.cli import (
    cache,
    convert,
    data,
    download,
    environment,
    evaluate,
    explain,
    export,
    features,
    flops,
    models,
    predict,
    push,
    train,
)
from uniformer_cli.cli.click_api import ClickException, NoArgsIsHelpError, UsageError
from uniformer_cli.cli.framework import GlobalFlagsGroup, PlainCommand, help_text
from uniformer_cli.cli.options import plain_choices
from uniformer_cli.cli.output import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, set_wide
from uniformer_cli.cli.progress import print_error, show_logs, show_progress, stderr_console
from uniformer_cli.errors import Terminated, UniformerError
from uniformer_cli.files import write_reason
from uniformer_cli.runtime import configure_runtime
from uniformer_cli.version import __version__

app = typer.Typer(
    name="uniformer",
    cls=GlobalFlagsGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,  # Click's plain help: readable at 80 columns (cli.framework)
    context_settings={"help_option_names": ["-h", "--help"]},
)


COMMANDS: dict[str, Callable[..., None]] = {
    "predict": predict.predict,
    "eval": evaluate.evaluate,
    "train": train.train,
    "features": features.features,
    "explain": explain.explain,
    "flops": flops.flops,
    "convert": convert.convert,
    "export": export.export,
    "models": models.models,
    "download": download.download,
    "push": push.push,
    "env": environment.env,
}
EPILOGS = {"eval": evaluate.LAYOUTS_EPILOG}


def add_command(group: typer.Typer, name: str, function: Callable[..., None], epilog: str | None = None) -> None:
    """Register `function` as command `name` of `group`: its docstring is the help, its `Examples:` the
    epilog (`framework.help_text`), and its choice options arrive as plain values (`plain_choices`)."""
    description, examples = help_text(function.__doc__)
    epilog = "\n\n".join(part for part in (examples, epilog) if part) or None
    # The first paragraph, whole, in the list of commands (Click would cut it at 45 characters with "...").
    summary = description.split("\n\n")[0]
    command = group.command(name, cls=PlainCommand, help=description, short_help=summary, epilog=epilog)
    command(plain_choices(function))


for name, function in COMMANDS.items():
    add_command(app, name, function, EPILOGS.get(name))
# Command groups: `uniformer data pack|check`, `uniformer cache ls|rm|verify|prune`.
for group in (data, cache):
    for name, function in group.COMMANDS.items():
        add_command(group.app, name, function)
    app.add_typer(group.app, short_help=(group.app.info.help or "").split("\n\n")[0])


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"uniformer {__version__}")
        raise typer.Exit()


@app.callback()
def uniformer(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Only warnings and errors on stderr: no notes, no progress bars."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also debug lines on stderr: the model's weights, protocol (and why), device, precision, engine,"
            " threads, and how long each stage took.",
        ),
    ] = False,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide",
            help="Print tables at their full width: no column left out, no name folded (lines may be longer than"
            " the terminal).",
        ),
    ] = False,
) -> None:
    """UniFormer video classification: predict, evaluate, train, count FLOPs and convert checkpoints.

    Exit status: 0 every input processed, 3 some inputs failed (their records carry `error`), 1 an error
    stopped the command, 2 a bad command line, 130 Ctrl-C, 143 SIGTERM (docs/OUTPUT.md).
    UNIFORMER_DEBUG=1 prints the full traceback behind an `error:` line. `uniformer env` prints what a bug
    report needs.
    """
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other", param_hint="'--quiet'")
    # Library code logs; this is where its records become lines on stderr.
    show_logs(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    show_progress(not quiet)
    set_wide(wide)


def _usage_line(error: Any) -> str:
    """Click's usage error as one line, with where to read the command's options."""
    # Typer on pydantic prefixes its validation messages with "Value error, ".
    message = " ".join(error.format_message().split()).replace("Value error, ", "")
    command = error.ctx.command_path if error.ctx is not None else "uniformer"
    return f"{message} (see '{command} -h')"


# Failures of the storage, not of the program, and paths the system refuses to look up (a name or a path
# too long, a loop of links): reported in one line wherever they surface.
STORAGE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP}
)
# A path this long is shown by its ends in an error line.
SHOWN_PATH = 240


def _shown_path(name: object) -> str:
    text = str(name)
    if len(text) <= SHOWN_PATH:
        return text
    half = SHOWN_PATH // 2
    return f"{text[:half]}…{text[-half:]} ({len(text):,} characters)"


DEBUG_VARIABLE = "UNIFORMER_DEBUG"


def _debug_traceback(error: BaseException) -> None:
    """With UNIFORMER_DEBUG=1, the full traceback behind the `error:` line that follows (for bug reports)."""
    if os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        error.__suppress_context__ = False  # the foreign error a message was made from, too
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Every failure is one red `error:` line on stderr and an exit status from the one rule
    in `cli.output`: usage errors 2, `UniformerError` 1, Ctrl-C 130, SIGTERM 143."""
    configure_runtime()  # before any command loads torch
    try:
        with engine.signals.raise_on_sigterm():  # every command stops on SIGTERM as on Ctrl-C
            code = app(args=argv, prog_name="uniformer", standalone_mode=False)
    except NoArgsIsHelpError as error:  # `uniformer` alone, on Click >= 8.2
        typer.echo(error.format_message())
        code = EXIT_USAGE
    except UsageError as error:
        print_error(_usage_line(error))
        code = EXIT_USAGE
    except ClickException as error:
        _debug_traceback(error)
        print_error(" ".join(error.format_message().split()))
        code = getattr(error, "exit_code", EXIT_ERROR)
    except typer.Abort:
        code = EXIT_ERROR
    except UniformerError as error:
        _debug_traceback(error)
        print_error(error)
        code = EXIT_ERROR
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        # A full or read-only disk, missing permissions or an impossible path, met where no helper of
        # ours stood (a third-party writer, a log file, a path check): the reason in one line.
        _debug_traceback(error)
        print_error(f"{_shown_path(error.filename or 'a file')}: {write_reason(error)}")
        code = EXIT_ERROR
    except Terminated:
        stderr_console.print("[bold red]terminated[/] (SIGTERM)")
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        stderr_console.print("[bold red]interrupted[/]")
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


def leave(code: object) -> None:
    """End the process now with exit status `code`: the atexit handlers run (they take ~0.02 s) and
    stdout, stderr and the log handlers are flushed, but the interpreter's teardown is skipped (freeing
    every module and tensor one by one: ~0.35 s after a model ran on a quiet 2-core machine, over a second
    on a busy one). Returns instead, for the normal exit, wherever the teardown may still be needed: a
    status that is not a number, a profiler or tracer, a live non-daemon thread (normally joined first),
    a child process, or a distributed process group."""
    if not isinstance(code, int) or sys.getprofile() is not None or sys.gettrace() is not None:
        return  # a profiler or tracer (cProfile, coverage) writes its results in the teardown
    if any(
        thread.is_alive() and not thread.daemon
        for thread in threading.enumerate()
        if thread is not threading.main_thread()
    ):
        return
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.active_children():
        return
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return
    # What the interpreter would run at exit, and only that: atexit handlers and weakref.finalize
    # callbacks (temporary folders, child pools), then the flushes.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`| head`) or stream, or none at all (a process started without descriptor 1 or
        # 2 has None there): nothing more can be shown.
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    logging.shutdown()
    os._exit(code)


def run() -> None:
    """The `uniformer` console command: `main`, then a quick exit once its output is flushed (`leave`).
    Code that calls `main` in-process (the tests) keeps the ordinary `SystemExit`."""
    try:
        main()
    except SystemExit as done:
        leave(0 if done.code is None else done.code)
        raise


if __name__ == "__main__":
    run()
