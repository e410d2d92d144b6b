"""Writing files safely: atomic replacement, destination checks before work starts, one-line write
errors, content hashes, and removal of the temporary files that killed runs leave behind. Shared by
the weights store, training checkpoints, evaluation reports and every output a command writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from uniformer_cli.errors import WriteError

log = logging.getLogger(__name__)

# `.{name}.{pid}.{token}.tmp`: the temporary file `atomic_write` renames over `name`.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
# A temporary file of a live process is left alone; one this old is stale whatever its pid says (pids
# are reused, and another machine may share the folder).
STALE_SECONDS = 24 * 3600.0
_HASH_CHUNK = 1 << 22

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is larger than this system allows",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def write_reason(error: OSError) -> str:
    """Why a write failed, in words (`the disk is full`), for one-line messages."""
    return _REASONS.get(error.errno or 0) or error.strerror or str(error) or type(error).__name__


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Run `write(temporary_path)`, flush it to disk and rename it over `path` (parents created).

    A crash at any point leaves either the previous file or the new one, never a partial file: the
    temporary file sits next to `path` (a rename is atomic only within one file system), its data is
    fsynced before the rename, and a failed write removes it. The file gets the mode an ordinary open
    gives, 0666 less the umask, whatever mode `write` left (safetensors writes 0600 files).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file stands where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
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


def write_or_fail(path: str | Path, write: Callable[[Path], object], what: str, kept: str = "") -> None:
    """`atomic_write`, with any failure (full disk, read-only file system, permissions) as one
    `WriteError` line naming `what` and `path`, and `kept`: what survives (e.g. "the previous last.pt
    is intact")."""
    try:
        atomic_write(path, write)
    except OSError as error:
        suffix = f"; {kept}" if kept else ""
        raise WriteError(f"cannot write {what} {path}: {write_reason(error)}{suffix}") from None


def write_with_fallback(path: str | Path, write: Callable[[Path], object], what: str) -> None:
    """`write_or_fail` for results that took long to compute: when `path` cannot be written, they are
    written to the temporary folder (else the home or current folder) instead, and the `WriteError`
    says where. Nothing finished is lost to a full disk or a read-only folder at the last step."""
    path = Path(path)
    try:
        write_or_fail(path, write, what)
    except WriteError as error:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for folder in (Path(tempfile.gettempdir()), Path.home(), Path.cwd()):
            fallback = folder / f"{path.stem}.{stamp}.{os.getpid()}{path.suffix}"
            try:
                atomic_write(fallback, write)
            except OSError:
                continue
            raise WriteError(f"{error}; the results were saved to {fallback} instead") from None
        raise WriteError(f"{error}; no other folder could take the results either") from None


def ensure_writable(path: str | Path, what: str = "output", *, needed_bytes: int = 0) -> Path:
    """Fail now, in one line, if `path` could not be written later: call it before long work starts.

    Checks that `path` is not a folder, that its nearest existing parent is a folder where a file can
    be created (a real probe file, so read-only file systems and permissions are caught as they are,
    root included), and, with `needed_bytes`, that the disk has that much free space. Missing parent
    folders are not created here (`atomic_write` creates them), only checked to be creatable.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {what} {path}: it is a folder")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(f"cannot write {what} {path}: {existing} is a file, not a folder")
    probe = existing / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied")
        free = _free_bytes(existing)
    except OSError as error:
        raise WriteError(f"cannot write {what} {path}: {write_reason(error)} ({existing})") from None
    if needed_bytes and free is not None and free < needed_bytes:
        raise WriteError(
            f"cannot write {what} {path}: it needs about {needed_bytes / 2**20:,.0f} MiB and {existing} has "
            f"{free / 2**20:,.0f} MiB free"
        )
    return path


def _free_bytes(folder: Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except (AttributeError, OSError):  # not on every platform
        return None
    return stats.f_bavail * stats.f_frsize


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file's content, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temporaries(folder: str | Path, *, older_than: float = STALE_SECONDS) -> list[Path]:
    """Delete the temporary files `atomic_write` left in `folder` when its process was killed: those
    whose process no longer runs on this machine, or older than `older_than` seconds. Returns what
    was removed; folders that cannot be listed or files that cannot be removed are left as they are."""

    def stale(entry: Path, age: float) -> bool:
        match = _TEMPORARY.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid():
            return False
        return age > older_than or (age > 1.0 and not _process_alive(int(match["pid"])))

    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return remove_files_if(entries, stale, f"temporary file(s) of interrupted writes in {folder}")


def remove_files_if(candidates: Iterable[Path], stale: Callable[[Path, float], bool], what: str) -> list[Path]:
    """Remove each candidate for which `stale(path, age in seconds since its last change)` holds, and
    log how many `what` went; a file that vanished or cannot be removed is skipped."""
    removed = []
    now = time.time()
    for candidate in candidates:
        try:
            if stale(candidate, now - candidate.lstat().st_mtime):
                candidate.unlink()
                removed.append(candidate)
        except OSError:
            continue
    if removed:
        log.info("removed %d %s", len(removed), what)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but belongs to someone else (or we cannot tell): keep its file
    return True
