"""Progress reports from long steps, for whoever shows them: the engine reports, the CLI draws.

An engine function that runs for long takes `progress: ProgressCallback | None` and calls it with a
`Progress` each time its count moves; it never draws anything itself. The CLI turns the reports into
progress bars on stderr (`cli.progress`); a Python caller may log them, or pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """How far one counted step has come.

    `task` names what is counted ("predicting", "evaluating", a video's windows...); `done` of `total`
    (None: unknown); `detail` carries running figures to show beside the count (e.g. `{"top1": "81.2%"}`).
    A `sub` step counts inside the current item of the main one (the windows of one video): the next
    sub step replaces it, and it is gone once `done == total`.
    """

    task: str
    done: int
    total: int | None = None
    detail: Mapping[str, str] = field(default_factory=dict)
    sub: bool = False

    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total


ProgressCallback = Callable[[Progress], None]


def notify(progress: ProgressCallback | None, event: Progress) -> None:
    """Pass `event` on, when anyone listens."""
    if progress is not None:
        progress(event)
