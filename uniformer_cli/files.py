"""Atomic file writes, shared by the weights store, training checkpoints and evaluation reports."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Run `write(temporary_path)`, flush it to disk and rename it over `path` (parents created).

    A crash at any point leaves either the previous file or the new one, never a partial file: the
    temporary file sits next to `path` (a rename is atomic only within one file system), its data is
    fsynced before the rename, and a failed write removes it. The file gets the mode an ordinary open
    gives, 0666 less the umask, whatever mode `write` left (safetensors writes 0600 files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and call: concurrent writers of one path never share a temporary file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # Creating it like an ordinary open reads the umask without changing it (os.umask would, for
    # every thread, until it is set back).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = os.fstat(descriptor).st_mode & 0o777
    os.close(descriptor)
    try:
        write(temporary)
        os.chmod(temporary, mode)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    # Persist the rename itself (the directory entry); not possible on every platform.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
