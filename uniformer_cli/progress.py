"""Rich progress bars and console used by every long job (written to stderr, so stdout stays clean
for `--json` output)."""

from __future__ import annotations

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
