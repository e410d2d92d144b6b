"""What the CLI draws on stderr (so stdout stays clean for `--json` output): the `error:` line, progress
bars for the engine's progress reports (`ProgressBars`), and the package's log records.

Library code reports through `logging` (`uniformer_cli.*` loggers) and `events.Progress` callbacks, and
never prints: a Python-API user silences or redirects it like any library's; the CLI attaches
`ConsoleHandler` (`show_logs`) and passes a `ProgressBars` where the engine takes `progress`."""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from uniformer_cli import events
from uniformer_cli.cli.text import escape

stderr_console = Console(stderr=True, emoji=False)

# Whether progress is drawn at all (`uniformer -q` turns it off); the bars of this process and
# huggingface_hub's download bars alike.
_SHOW = {"progress": True, "hub_bars_off": False}
HUB_BARS_VARIABLE = "HF_HUB_DISABLE_PROGRESS_BARS"


def show_progress(enabled: bool) -> None:
    """Draw progress bars (`ProgressBars`) or not; also huggingface_hub's download bars, which it draws
    itself: its documented switch is set for `-q` and set back afterwards (a user's own setting is kept)."""
    _SHOW["progress"] = enabled
    hub_loaded = "huggingface_hub" in sys.modules
    if not enabled and HUB_BARS_VARIABLE not in os.environ:
        os.environ[HUB_BARS_VARIABLE] = "1"  # read when huggingface_hub loads
        _SHOW["hub_bars_off"] = True
        if hub_loaded:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
    elif enabled and _SHOW["hub_bars_off"]:
        os.environ.pop(HUB_BARS_VARIABLE, None)
        _SHOW["hub_bars_off"] = False
        if hub_loaded:
            from huggingface_hub.utils import enable_progress_bars

            enable_progress_bars()


def progress_shown() -> bool:
    return _SHOW["progress"]


def print_error(message: object) -> None:
    """One red `error:` line on stderr, the message shown verbatim (paths and Something-Something labels
    hold [brackets] that rich would otherwise read as markup)."""
    stderr_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


class ProgressBars:
    """An `events.ProgressCallback` that draws each reported task as a bar: one row per main task, plus
    one row for the current sub step, replaced by the next and removed when done. Used as a context
    manager around the engine call; `enabled=False` draws nothing (a pipe, a single quick input)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and progress_shown()
        self.bars = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=stderr_console,
            disable=not self.enabled,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.sub: tuple[str, TaskID] | None = None

    def __enter__(self) -> ProgressBars:
        if self.enabled:  # rich 13.0 (our floor) ends even a disabled display with an empty line
            self.bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.enabled:
            self.bars.stop()

    def __call__(self, event: events.Progress) -> None:
        detail = "  ".join(f"{name} {value}" for name, value in event.detail.items())
        if event.sub:
            if self.sub is not None and self.sub[0] != event.task:
                self.bars.remove_task(self.sub[1])
                self.sub = None
            if self.sub is None:
                self.sub = (event.task, self.bars.add_task(escape(f"  {event.task}"), total=event.total, detail=""))
            self.bars.update(self.sub[1], completed=event.done, total=event.total, detail=escape(detail))
            if event.finished:
                self.bars.remove_task(self.sub[1])
                self.sub = None
            return
        if event.task not in self.tasks:
            self.tasks[event.task] = self.bars.add_task(escape(event.task), total=event.total, detail="")
        self.bars.update(self.tasks[event.task], completed=event.done, total=event.total, detail=escape(detail))


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
