"""Files, safely: atomic replacement, destination checks before work starts, one-line write errors,
content hashes, removal of the temporary files that killed runs leave behind, inputs read only from
regular files of bounded size, and a glob that ends on loops of links. Shared by the weights store,
training checkpoints, evaluation reports, every output a command writes and every list it reads."""

from __future__ import annotations

import collections
import contextlib
import errno
import fnmatch
import glob
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePath

from uniformer_cli.errors import UniformerError, WriteError

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
    errno.ELOOP: "its symbolic links loop",
}


def write_reason(error: OSError) -> str:
    """Why a write failed, in words (`the disk is full`), for one-line messages."""
    return _REASONS.get(error.errno or 0) or error.strerror or str(error) or type(error).__name__


# What may stand where an output goes, besides a regular file: nothing else is ever replaced or written.
_SPECIAL_FILES = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


# File names may take 255 bytes: a temporary file's name keeps this much of its target's, so that any
# name that can be written can also be written atomically.
_TEMPORARY_NAME_BYTES = 200


def _temporary_name(path: Path) -> str:
    """`.{name}.{pid}.{token}.tmp` beside `path` (the name shortened to fit the file system's limit)."""
    name = os.fsencode(path.name)[:_TEMPORARY_NAME_BYTES]
    return f".{os.fsdecode(name)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def destination_problem(path: str | Path) -> str | None:
    """Why `path` may not receive an output, in words, or None. Outputs go to regular files or new
    paths only: a folder, a device (`/dev/null` included), a FIFO or a socket is refused, never replaced
    by a file or written to. A symbolic link counts as what it points to (the write goes there)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new path (`ensure_writable` checks its parents)
        return None
    except OSError as error:  # a name too long, a loop of links, a folder that may not be searched
        return write_reason(error)
    kind = _not_regular(mode)
    if kind == "a folder":
        return "it is a folder"
    return None if kind is None else f"it is {kind}, not a regular file (outputs go to regular files or new paths)"


def _not_regular(mode: int) -> str | None:
    """What a file of `st_mode` `mode` is, in words, unless it is a regular file (None)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((kind for test, kind in _SPECIAL_FILES if test(mode)), "a special file")


def _checked_destination(path: Path) -> Path:
    """`path`, or the file its symbolic link(s) point to; an `OSError` naming `destination_problem`."""
    problem = destination_problem(path)
    if problem is not None:
        raise OSError(errno.EINVAL, problem, str(path))
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Run `write(temporary_path)`, flush it to disk and rename it over `path` (parents created).

    A crash at any point leaves either the previous file or the new one, never a partial file: the
    temporary file sits next to `path` (a rename is atomic only within one file system), its data is
    fsynced before the rename, and a failed write removes it. The file gets the mode an ordinary open
    gives, 0666 less the umask, whatever mode `write` left (safetensors writes 0600 files).

    Only a regular file or a new path is written (`destination_problem`, checked before the write and
    again before the rename): a device, FIFO or socket at `path` is an `OSError`, never replaced. A
    symbolic link is followed: the file it points to is replaced and the link stays.
    """
    path = _checked_destination(Path(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file stands where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
    # Unique per process and call: concurrent writers of one path never share a temporary file.
    temporary = path.with_name(_temporary_name(path))
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
        _checked_destination(path)  # nothing else took the name meanwhile
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
    write_all_with_fallback([(Path(path), write)], what)


def write_all_with_fallback(outputs: Sequence[tuple[Path, Callable[[Path], object]]], what: str) -> None:
    """`write_with_fallback` for results made of several files written in order (an `.npy` and its
    `.json` index): when one cannot be written, all of them are written to one other folder under one
    new stem (their suffixes kept, so they still pair up), and the `WriteError` names each."""
    try:
        for path, write in outputs:
            write_or_fail(path, write, what)
    except WriteError as error:
        stem = f"{outputs[0][0].stem}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
        for folder in (Path(tempfile.gettempdir()), Path.home(), Path.cwd()):
            targets = [folder / f"{stem}{path.suffix}" for path, _ in outputs]
            try:
                for target, (_, write) in zip(targets, outputs, strict=True):
                    atomic_write(target, write)
            except OSError:
                continue
            saved = " and ".join(map(str, targets))
            raise WriteError(f"{error}; the results were saved to {saved} instead") from None
        raise WriteError(f"{error}; no other folder could take the results either") from None


def refuse_to_replace(
    paths: Sequence[str | Path],
    force: bool,
    what: str,
    other: str = "",
    exists: Callable[[str | Path], bool] = os.path.lexists,
) -> None:
    """The one rule for products that take long to make (features, exports, explanations, converted
    weights): an existing file is never replaced unless `force` (`--force`); `other` names another way
    out (e.g. "or --resume to continue it"). Called before the work starts. Result files (`-o` of
    predict, eval, flops, models) are not products: they are replaced, atomically. `exists` asks another
    store (URLs)."""
    existing = [path for path in paths if exists(path)]
    if existing and not force:
        named = " and ".join(str(path) for path in existing)
        verb = "exists" if len(existing) == 1 else "exist"
        raise UniformerError(f"{what} {named} already {verb}: pass --force to replace it{other}")


def ensure_writable(path: str | Path, what: str = "output", *, needed_bytes: int = 0) -> Path:
    """Fail now, in one line, if `path` could not be written later: call it before long work starts.

    Checks that `path` is a regular file or a new path (`destination_problem`: not a folder, device,
    FIFO or socket), that its nearest existing parent is a folder where a file can be created (a real
    probe file, so read-only file systems and permissions are caught as they are, root included), and,
    with `needed_bytes`, that the disk has that much free space. Missing parent folders are not created
    here (`atomic_write` creates them), only checked to be creatable. The temporary files of this path
    that a killed run left beside it (`remove_stale_temporaries`) are removed.
    """
    path = Path(path)
    problem = destination_problem(path)
    if problem is not None:
        raise WriteError(f"cannot write {what} {path}: {problem}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(f"cannot write {what} {path}: {existing} is a file, not a folder")
    probe = existing / _temporary_name(path)
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
    if existing == path.parent:  # what a killed run writing this file left beside it
        remove_stale_temporaries(existing, name=path.name)
    return path


def _free_bytes(folder: Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except (AttributeError, OSError):  # not on every platform
        return None
    return stats.f_bavail * stats.f_frsize


def read_text_file(path: str | Path, *, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`: an input list, a label file, a resume
    file. Anything else is refused before it is read: a FIFO or device (reading one would wait for a
    writer, or never end), a folder, a larger file. `OSError` for what the system refuses, `ValueError`
    for the rest (the reason in words)."""
    # O_NONBLOCK: opening a FIFO does not wait for a writer; a regular file reads as usual.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as stream:
        kind = _not_regular(os.fstat(descriptor).st_mode)
        if kind is not None:
            raise ValueError(f"it is {kind}, not a regular file")
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"it is larger than {max_bytes:,} bytes")
    try:
        return data.decode("utf-8-sig")  # a byte order mark is no part of the text
    except UnicodeDecodeError as error:
        raise ValueError(f"it is not UTF-8 text (byte {error.start})") from None


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file's content, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_temporary(path: Path) -> bool:
    """Whether `path` is named like a temporary file of `atomic_write` (`.NAME.PID.TOKEN.tmp`), or a
    scratch folder of `scratch_folder`."""
    return _TEMPORARY.match(path.name) is not None


def is_stale_temporary(path: Path, age: float, *, older_than: float = STALE_SECONDS) -> bool:
    """Whether `path` is a temporary file (or scratch folder) that a killed process left: its process no
    longer runs on this machine, or it is older than `older_than` seconds (`age`: since its last change)."""
    match = _TEMPORARY.match(path.name)
    if match is None or int(match["pid"]) == os.getpid():
        return False
    return age > older_than or (age > 1.0 and not _process_alive(int(match["pid"])))


def remove_stale_temporaries(
    folder: str | Path, *, older_than: float = STALE_SECONDS, name: str | None = None
) -> list[Path]:
    """Delete the temporary files `atomic_write` (and the scratch folders `scratch_folder`) left in
    `folder` when their process was killed (`is_stale_temporary`); with `name`, only those of that file.
    Returns what was removed; folders that cannot be listed or entries that cannot be removed are left as
    they are."""
    own = None if name is None else os.fsdecode(os.fsencode(name)[:_TEMPORARY_NAME_BYTES])

    def stale(entry: Path, age: float) -> bool:
        match = _TEMPORARY.match(entry.name)
        if match is None or own not in (None, match["name"]):
            return False
        return is_stale_temporary(entry, age, older_than=older_than)

    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return remove_files_if(entries, stale, f"temporary file(s) of interrupted writes in {folder}")


def scratch_folder(directory: Path, purpose: str) -> Path:
    """A new scratch folder inside `directory` (created), for the caller to remove when done, named like
    `atomic_write`'s temporary files (`.{purpose}.{pid}.{token}.tmp`): one that a killed process left
    behind is removed by the next `remove_stale_temporaries` of `directory`, which runs here first (for
    every name: what is written from a scratch folder is placed beside it). `OSError` when `directory`
    cannot take it."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)
    scratch = directory / _temporary_name(Path(purpose))
    scratch.mkdir()
    return scratch


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (created) for the block: another process asking for the
    same lock waits until it is released, which the system does when the holder ends however it ends
    (kill -9 included). Used where two processes would otherwise build the same cached file at once: the
    second finds it built. Where the platform has no `fcntl`, or the folder cannot take the lock file
    (a read-only cache), the block runs unlocked."""
    try:
        import fcntl

        lock.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        descriptor = None
    try:
        if descriptor is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # releases the lock


def remove_files_if(candidates: Iterable[Path], stale: Callable[[Path, float], bool], what: str) -> list[Path]:
    """Remove each candidate for which `stale(path, age in seconds since its last change)` holds, and
    log how many `what` went; a file that vanished or cannot be removed is skipped."""
    removed = []
    now = time.time()
    for candidate in candidates:
        try:
            if stale(candidate, now - candidate.lstat().st_mtime):
                if candidate.is_dir() and not candidate.is_symlink():
                    shutil.rmtree(candidate)
                else:
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


def glob_paths(pattern: str) -> list[Path]:
    """`glob.glob(pattern, recursive=True)`, sorted, except that `**` enters each real folder once per
    position in the pattern: links that loop back (`dir/up -> ..`) end the walk where `glob` would
    expand them again and again (exponentially, with two such links) and never answer. Folders reached
    through a link are walked last, so a folder is found under its own path before any alias. Matching
    follows `glob`: `*` and `**` skip hidden names unless the pattern's own component starts with a dot."""
    parts = PurePath(pattern).parts
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    if "**" not in parts[first:]:
        return sorted(map(Path, glob.glob(pattern)))
    rest = parts[first:]
    found: set[Path] = set()
    expanded: set[tuple[int, int, int]] = set()  # (device, inode, position) of each folder `**` walked
    # (folder, position in `rest`) still to expand: a stack, and the folders reached through links.
    stack = [(Path(*parts[:first]), 0)]
    through_links: collections.deque[tuple[Path, int]] = collections.deque()
    while stack or through_links:
        folder, position = stack.pop() if stack else through_links.popleft()
        if position == len(rest):
            found.add(folder)
            continue
        component = rest[position]
        if component == "**":
            try:
                status = folder.stat()
            except OSError:
                continue
            key = (status.st_dev, status.st_ino, position)
            if key in expanded:  # walked from here already: a loop, or a second way to the same folder
                continue
            expanded.add(key)
            stack.append((folder, position + 1))  # `**` as no folder at all
            for entry in _entries(folder):
                if entry.name.startswith("."):
                    continue
                if _is_folder(entry):
                    (through_links if entry.is_symlink() else stack).append((Path(entry.path), position))
                elif position + 1 == len(rest):  # a final `**` also matches files
                    found.add(Path(entry.path))
            continue
        if glob.has_magic(component):
            hidden = component.startswith(".")
            candidates = [
                Path(entry.path)
                for entry in _entries(folder)
                if (hidden or not entry.name.startswith(".")) and fnmatch.fnmatch(entry.name, component)
            ]
        else:
            candidates = [folder / component] if os.path.lexists(folder / component) else []
        for candidate in candidates:
            if position + 1 == len(rest):
                found.add(candidate)
            elif os.path.isdir(candidate):
                (through_links if os.path.islink(candidate) else stack).append((candidate, position + 1))
    return sorted(found)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as listing:
            return list(listing)
    except OSError:  # unreadable, vanished, a file, a name too long
        return []


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # through links, as glob goes
    except OSError:
        return False
