"""Rich progress bars and console used by every long job (written to stderr, so stdout stays clean
for `--json` output), and the handler through which the CLI shows the package's log records there.

Library code reports through `logging` (`uniformer_cli.*` loggers) and never prints: a Python-API user
silences or redirects it like any library's; the CLI attaches `ConsoleHandler` (`show_logs`)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr_console = Console(stderr=True)


def print_error(message: object) -> None:
    """One red `error:` line on stderr, the message shown verbatim (paths and Something-Something labels
    hold [brackets] that rich would otherwise read as markup)."""
    stderr_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def progress_bar(*extra_fields: str, disable: bool = False) -> Progress:
    """A progress bar with count, elapsed and remaining time; `extra_fields` are task fields shown
    after the bar (e.g. "loss", "top1"), each set with `progress.update(task, loss=...)`."""
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *(TextColumn(f"{name} {{task.fields[{name}]}}") for name in extra_fields),
    ]
    return Progress(*columns, console=stderr_console, disable=disable, transient=False)


class ConsoleHandler(logging.Handler):
    """Log records as lines on the stderr console: warnings in yellow, errors in red, the message shown
    verbatim (paths and labels may hold [brackets] that rich would read as markup)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = escape(self.format(record))
            if record.levelno >= logging.ERROR:
                message = f"[bold red]{message}[/]"
            elif record.levelno >= logging.WARNING:
                message = f"[yellow]{message}[/]"
            stderr_console.print(message, highlight=False)
        except Exception:
            self.handleError(record)


def show_logs(level: int = logging.INFO) -> None:
    """Show the package's log records from `level` up on stderr (once, however often it is called)."""
    package = logging.getLogger("uniformer_cli")
    for handler in [handler for handler in package.handlers if isinstance(handler, ConsoleHandler)]:
        package.removeHandler(handler)
    package.addHandler(ConsoleHandler())
    package.setLevel(level)
