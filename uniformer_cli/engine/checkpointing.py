"""Training checkpoints: atomic writes and a state that `torch.load(weights_only=True)` can read back.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled classes), so
resuming never executes code from the file. Random number generator states are stored as tensors
and lists for the same reason.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniformer_cli.errors import CheckpointError, first_line
from uniformer_cli.files import write_or_fail
from uniformer_cli.weights.checkpoint import check_archive, check_tensor_storage
from uniformer_cli.weights.header import require_file

CHECKPOINT_FORMAT = "uniformer-train/1"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomically write a training state dict with `torch.save`; a failed write (full disk, read-only
    folder) is one `WriteError` line, and the previous file at `path` stays intact."""
    path = Path(path)
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was saved"

    def write(temporary: Path) -> None:
        # Through a Python file object, so that I/O failures surface as OSError with their errno
        # (torch's own file writer reports them as a bare RuntimeError).
        with open(temporary, "wb") as handle:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)

    write_or_fail(path, write, "training checkpoint", kept)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint written by `save_checkpoint` (safely: `weights_only=True`)."""
    path = Path(path)
    require_file(path, "training checkpoint")
    check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        empty = " (the file is empty)" if path.stat().st_size == 0 else ""
        raise CheckpointError(f"cannot read training checkpoint {path}{empty}: {first_line(error)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a uniformer training checkpoint (use it with --model or --weights)")
    weights = state.get("model", {})
    if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        raise CheckpointError(f"{path} is not a uniformer training checkpoint: its 'model' is not a state_dict")
    check_tensor_storage(weights, path)  # a view claiming more than the file stores is refused here
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states as weights-only types."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only when the device count matches)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
