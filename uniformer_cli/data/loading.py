"""DataLoader settings shared by evaluation and training."""

from __future__ import annotations

import os

# Decoding workers: 4 keep a GPU fed on a workstation; never more than the machine has cores.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def limit_worker_threads(worker_id: int) -> None:
    """`worker_init_fn` for DataLoaders that decode videos: one torch thread per worker process.

    Workers only decode and resize frames; N workers each using every core would oversubscribe the
    CPU and slow the main process's forward passes.
    """
    del worker_id  # the same for every worker
    import torch  # here, not at the top: the CLI reads DEFAULT_WORKERS without loading torch

    torch.set_num_threads(1)
