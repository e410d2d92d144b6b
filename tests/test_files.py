"""Atomic writes: every file the package writes gets an ordinary file's mode (0666 less the umask)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from uniformer_cli.engine.checkpointing import save_checkpoint
from uniformer_cli.files import atomic_write
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.weights import save_weights

CONFIG = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=3)

WRITERS: dict[str, Callable[[Path], object]] = {
    "safetensors": lambda path: save_weights(path, {"a": torch.ones(2)}, CONFIG),
    "checkpoint": lambda path: save_checkpoint({"step": 1}, path),
    "text": lambda path: atomic_write(path, lambda temporary: temporary.write_text("{}")),
}


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test, then restore it."""
    original = os.umask(0o022)
    yield os.umask
    os.umask(original)


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path: Path, umask: Callable[[int], None], writer: str, mask: int) -> None:
    umask(mask)
    target = tmp_path / "out" / f"file.{writer}"
    WRITERS[writer](target)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    WRITERS[writer](target)  # replacing an existing file gives the same mode
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [path.name for path in target.parent.iterdir()] == [target.name]  # no temporary file left
