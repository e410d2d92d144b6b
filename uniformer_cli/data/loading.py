"""DataLoader settings shared by evaluation and training."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

# Decoding workers: 4 keep a GPU fed on a workstation; never more than the machine has cores.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def decoding_workers(requested: int) -> int:
    """`requested` DataLoader workers, at most one per core (more only queue for the same cores, each
    with its own copy of the dataset and a decoder): a larger request is capped, with a note."""
    cores = available_cores()
    if requested > cores:
        log.warning("--workers %d is more than the %d cores of this machine: using %d", requested, cores, cores)
        return cores
    return max(requested, 0)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def init_decoding_worker(worker_id: int) -> None:
    """`worker_init_fn` for DataLoaders that decode videos: one torch thread per worker, and Ctrl-C left
    to the main process.

    Workers only decode and resize frames; N workers each using every core would oversubscribe the
    CPU and slow the main process's forward passes. Ctrl-C reaches every process of the terminal's
    group: a worker that died of it would fail the batch that training still finishes before it stops.
    """
    del worker_id  # the same for every worker
    import torch  # here, not at the top: the CLI reads DEFAULT_WORKERS without loading torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
