"""DataLoader settings shared by evaluation and training."""

from __future__ import annotations

import os
import signal

# Decoding workers: 4 keep a GPU fed on a workstation; never more than the machine has cores.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


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
