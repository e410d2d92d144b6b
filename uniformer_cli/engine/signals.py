"""How jobs end on a signal without losing their work.

- Every command (`raise_on_sigterm`, around the whole CLI): SIGTERM raises `Terminated`, which takes the
  path Ctrl-C's `KeyboardInterrupt` takes, so a job saves what it saves on Ctrl-C and exits 143.
- Training (`StopSignal`): Ctrl-C or SIGTERM lets the current optimiser step finish on every rank, then
  the run saves and exits; a second Ctrl-C aborts.
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


class StopSignal:
    """Ctrl-C (SIGINT) and SIGTERM (torchrun's shutdown, a cluster's pre-emption notice) stop training
    after the current optimiser step, with `last.pt` saved; a second Ctrl-C aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool) -> None:
        self.announce = announce  # say at once that the signal was heard (rank 0 only)
        self.received: int | None = None
        self.stopped = False  # some rank received a signal and every rank left the loop for it
        self.previous: dict[int, Any] = {}

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
            message = f"{signal.Signals(number).name}: stopping after this step to save it{again}"
            logger.warning(message)
        self.received = number

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal to another rank"

    def agreed(self, processes: Session) -> bool:
        """Whether any rank received a signal: all of them must stop after the same step."""
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
