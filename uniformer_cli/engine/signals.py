"""How jobs end on a signal without losing their work.

- Every command (`raise_on_sigterm`, around the whole CLI): SIGTERM raises `Terminated`, which takes the
  path Ctrl-C's `KeyboardInterrupt` takes, so a job saves what it saves on Ctrl-C and exits 143.
- Training (`StopSignal`): Ctrl-C or SIGTERM abandons the optimiser step in progress (checked inside the
  forward and backward passes and the loader wait, see `abandonable`), then the run saves the last
  completed step and exits; every rank of a torchrun job stops at the same step; a second Ctrl-C aborts.
- Evaluation (`raise_on_sigterm`): SIGTERM raises `Terminated`, which takes the path Ctrl-C takes
  to save the results so far for `--resume`; the command exits 143.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from uniformer_cli.errors import Terminated

if TYPE_CHECKING:  # no torch for the CLI, which installs `raise_on_sigterm` before any command runs
    from uniformer_cli.engine.distributed import Session

logger = logging.getLogger(__name__)


def _in_main_thread() -> bool:
    """Python runs signal handlers in the main thread only, and installs them only from there."""
    return threading.current_thread() is threading.main_thread()


class StepAbandoned(BaseException):
    """A stop request seen inside an optimiser step: the step is dropped. A `BaseException`, as
    `KeyboardInterrupt` is, so that no `except Exception` on the way (the DataLoader's) swallows it."""


class StopSignal:
    """Ctrl-C (SIGINT) and SIGTERM (torchrun's shutdown, a cluster's pre-emption notice) stop training
    within moments, with the last completed step saved to `last.pt`; a second Ctrl-C aborts at once.

    The training step marks the stretches it may abandon (`abandonable`): those where this rank is not
    inside a collective that the other ranks wait for. Inside one, the request raises `StepAbandoned`:
    at once while waiting for the loader (`at_once`), else at the next `check()`, which hooks on the
    model's modules and parameters call throughout the forward and backward passes. Between the
    stretches every rank votes (`agreed`), so a rank that left a stretch early meets the others at the
    next vote and all of them drop the same step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool) -> None:
        self.announce = announce  # say at once that the signal was heard (rank 0 only)
        self.received: int | None = None
        self.stopped = False  # some rank received a signal and every rank left the loop for it
        self.previous: dict[int, Any] = {}
        self.inside = False  # in a stretch that `check()` may abandon
        self.raise_at_once = False  # ... and one that the handler itself may abandon (the loader wait)

    def __enter__(self) -> StopSignal:
        if _in_main_thread():
            self.previous = {number: signal.signal(number, self.handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def handle(self, number: int, frame: object) -> None:
        if self.received == signal.SIGINT and number == signal.SIGINT:
            raise KeyboardInterrupt
        if self.announce and self.received is None:
            again = " (Ctrl-C again to abort)" if number == signal.SIGINT else ""
            message = f"{signal.Signals(number).name}: stopping, saving the last completed step{again}"
            logger.warning(message)
        self.received = number
        if self.raise_at_once:
            self.raise_at_once = False  # once: the exception is on its way out of the stretch
            raise StepAbandoned

    def check(self) -> None:
        """Abandon the stretch here if a stop was requested (on this rank, or agreed with the others) and
        it is an abandonable one."""
        if self.inside and (self.received is not None or self.stopped):
            self.inside = self.raise_at_once = False
            raise StepAbandoned

    @contextlib.contextmanager
    def abandonable(self, at_once: bool = False) -> Iterator[None]:
        """A stretch of a step that a stop request abandons (`StepAbandoned`): at the next `check()`, or
        with `at_once` (code that runs no hooks, such as a wait for the loader) the moment it arrives."""
        try:
            self.inside, self.raise_at_once = True, at_once
            self.check()
            yield
        finally:
            self.inside = self.raise_at_once = False

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal to another rank"

    def agreed(self, processes: Session) -> bool:
        """Whether any rank received a signal: all of them must stop at the same step. Every rank votes at
        the same points of a step, whichever stretch it left early."""
        flag = processes.any(self.received is not None)
        self.stopped = self.stopped or flag
        return flag


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated`, which the job catches where it saves its work on
    Ctrl-C: a scheduler's pre-emption then loses nothing either."""
    if not _in_main_thread():
        yield
        return

    def terminate(number: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
