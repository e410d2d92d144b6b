"""Where data lives: local paths, or fsspec URLs (`s3://`, `gs://`, `https://`, `hf://`...) read in
ranges and streams, never copied whole to the local disk.

Each store takes its credentials from its usual environment (`AWS_*` and `~/.aws` for S3, with
`AWS_ENDPOINT_URL` for S3-compatible servers; `GOOGLE_APPLICATION_CREDENTIALS` for GCS; `HF_TOKEN` for the
Hub). Protocols whose fsspec package is missing, and every failure of a store, become one-line
`DatasetError`s. Only storage protocols are accepted: fsspec's `file`-like wrappers that run programs or
read archives (`pipe:`, `zip::`, `blockcache::`) are refused, so a URL in a list cannot run anything.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from uniformer_cli.errors import DatasetError, WriteError, first_line
from uniformer_cli.files import read_text_file

URL = re.compile(r"^(?P<protocol>[a-z][a-z0-9+.-]*)://", re.IGNORECASE)
# Protocols a data path may use, with the package that provides each (the `remote` extra).
PROTOCOLS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
    "hf": "huggingface_hub",
    "file": "fsspec",
}
INSTALL_HINT = "pip install 'uniformer[remote]'"


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and URL.match(location) is not None


@functools.cache
def _fsspec() -> Any:
    """fsspec, made safe for forked DataLoader workers. Its async stores (s3, gs, http) run their requests
    on an event loop in a thread of their own; a forked child inherits the loop but not the thread, and
    fsspec releases before 2025.3.1 kept using that loop there, so a worker's first read waited forever
    (found on the dependency floor, fsspec 2024.6.0). Each child gets a loop of its own instead, as later
    fsspec releases do themselves."""
    import fsspec
    import fsspec.asyn

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=fsspec.asyn.reset_lock)
    return fsspec


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path inside it) for a storage URL."""
    protocol = URL.match(url)["protocol"].lower()  # type: ignore[index]
    if protocol not in PROTOCOLS:
        raise DatasetError(f"{url}: unsupported protocol {protocol!r} (use {', '.join(sorted(PROTOCOLS))})")
    fsspec = _fsspec()
    options = {}
    if protocol == "hf":
        # The Hub's file system caches listings per instance, and huggingface_hub 0.23 (the floor) keeps one
        # instance a process whatever HF_ENDPOINT says: naming the endpoint gives each endpoint its own.
        from huggingface_hub import constants

        options["endpoint"] = constants.ENDPOINT
    try:
        filesystem, path = fsspec.core.url_to_fs(url, **options)
    except ImportError:
        raise DatasetError(f"{url}: reading {protocol}:// needs {PROTOCOLS[protocol]} ({INSTALL_HINT})") from None
    except ValueError as error:
        raise DatasetError(f"{url}: {first_line(error)}") from None
    return filesystem, path


def _failure(location: str, error: BaseException) -> DatasetError:
    if isinstance(error, FileNotFoundError):
        return DatasetError(f"{location} does not exist")
    if isinstance(error, PermissionError) or getattr(error, "errno", None) in (errno.EACCES, errno.EPERM):
        return DatasetError(f"{location}: permission denied (check the store's credentials)")
    return DatasetError(f"{location}: {first_line(error)}")


# Protocols whose folders cannot be listed: a web server serves files, not folder listings.
UNLISTABLE = frozenset({"http", "https"})


def listable(location: str | Path) -> bool:
    """Whether the folders of `location`'s store can be listed (local folders and object stores)."""
    match = URL.match(str(location)) if is_url(location) else None
    return match is None or match["protocol"].lower() not in UNLISTABLE


def local_or_url(location: str | Path) -> str | Path:
    """A command-line location: a URL stays text, anything else becomes a Path."""
    return str(location) if is_url(str(location)) else Path(location).expanduser()


def join(base: str | Path, name: str) -> str | Path:
    """`name` inside the folder `base` (a URL or a path)."""
    if is_url(base):
        return f"{str(base).rstrip('/')}/{name}"
    return Path(base) / name


def parent(location: str | Path) -> str | Path:
    if is_url(location):
        text = str(location).rstrip("/")
        return text.rsplit("/", 1)[0] if text.count("/") > 2 else text
    return Path(location).parent


def name_of(location: str | Path) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1] if is_url(location) else Path(location).name


def _ask(location: str | Path, local: Callable[[Path], bool], method: str) -> bool:
    """A yes/no question about a path (`local`), or the store's `method` about a URL."""
    if not is_url(location):
        return local(Path(location))
    filesystem, path = _filesystem(str(location))
    try:
        return bool(getattr(filesystem, method)(path))
    except Exception as error:  # a store's own exception types
        raise _failure(str(location), error) from None


def exists(location: str | Path) -> bool:
    return _ask(location, Path.exists, "exists")


def is_dir(location: str | Path) -> bool:
    return _ask(location, Path.is_dir, "isdir")


def is_file(location: str | Path) -> bool:
    return _ask(location, Path.is_file, "isfile")


def open_input(location: str | Path, block_size: int | None = None) -> AbstractContextManager[IO[bytes]]:
    """A seekable binary file: local, or a store's file object that fetches ranges as they are read. With
    `block_size`, each request fetches at least that many bytes and only the last is kept (fsspec's
    `readahead` cache; the `bytes` cache that some stores default to keeps growing as a file is read in
    order, to the size of the file)."""
    if not is_url(location):
        try:
            return open(location, "rb")
        except OSError as error:
            raise _failure(str(location), error) from None
    filesystem, path = _filesystem(str(location))
    try:
        bounded = {} if block_size is None else {"block_size": block_size, "cache_type": "readahead"}
        return filesystem.open(path, "rb", **bounded)
    except Exception as error:
        raise _failure(str(location), error) from None


def _exact_reads(filesystem: Any) -> bool:
    """Whether the store's own `cat_file` fetches a byte range as asked. fsspec's generic one, which
    the Hub's file system (`hf://`) inherits, reads through a buffered file that fetches whole blocks
    (5 MiB) ahead: a shard member of a few kilobytes would download megabytes."""
    import fsspec.asyn

    return isinstance(filesystem, fsspec.asyn.AsyncFileSystem) or type(filesystem).cat_file is not (
        _fsspec().AbstractFileSystem.cat_file
    )


def _read_exactly(filesystem: Any, path: str, ranges: Sequence[tuple[int, int | None]]) -> list[bytes]:
    """Each `(start, end)` range of one file through an unbuffered file object: one request a range."""
    with filesystem.open(path, "rb", cache_type="none") as file:
        out = []
        for start, end in ranges:
            file.seek(start)
            out.append(bytes(file.read(-1 if end is None else end - start)))
        return out


def read_bytes(location: str | Path, start: int = 0, size: int | None = None) -> bytes:
    """`size` bytes from `start` (to the end when None): one ranged request for a URL."""
    try:
        if not is_url(location):
            with open(location, "rb") as file:
                file.seek(start)
                return file.read(-1 if size is None else size)
        filesystem, path = _filesystem(str(location))
        end = None if size is None else start + size
        if not _exact_reads(filesystem):
            return _read_exactly(filesystem, path, [(start, end)])[0]
        return bytes(filesystem.cat_file(path, start=start, end=end))
    except DatasetError:
        raise
    except Exception as error:
        raise _failure(str(location), error) from None


def read_ranges(location: str | Path, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The bytes of each `(start, size)` range of one file: one open file for a local path; for a URL
    the store fetches them concurrently (a batch of shard members in one round trip)."""
    if not ranges:
        return []
    if not is_url(location):
        try:
            with open(location, "rb") as file:
                out = []
                for start, size in ranges:
                    file.seek(start)
                    out.append(file.read(size))
                return out
        except OSError as error:
            raise _failure(str(location), error) from None
    filesystem, path = _filesystem(str(location))
    try:
        starts = [start for start, _ in ranges]
        ends = [start + size for start, size in ranges]
        if not _exact_reads(filesystem):
            return _read_exactly(filesystem, path, list(zip(starts, ends, strict=True)))
        return [bytes(part) for part in filesystem.cat_ranges([path] * len(ranges), starts, ends)]
    except Exception as error:
        raise _failure(str(location), error) from None


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write a whole object to a store (local files go through `files.atomic_write` instead)."""
    filesystem, path = _filesystem(str(location))
    try:
        filesystem.pipe_file(path, data)
    except Exception as error:
        raise _failure(str(location), error) from None


# Stores where one PUT (or multipart upload, or Hub commit) makes a whole object appear at once: readers
# see the previous object or the new one, never a part. Others are uploaded under a temporary name first.
ATOMIC_PUTS = frozenset({"s3", "s3a", "gs", "gcs", "hf"})


def upload(local: Path, location: str) -> None:
    """Copy the finished local file `local` to `location`, whole: one put, so that the object under its
    final name is the previous one or this one, never a part (on stores without atomic puts, a put to a
    temporary name and a rename). A failure is one `WriteError` line."""
    filesystem, path = _filesystem(location)
    protocol = URL.match(location)["protocol"].lower()  # type: ignore[index]
    try:
        if protocol in ATOMIC_PUTS:
            filesystem.put_file(str(local), path)
        else:
            temporary = f"{path}.uploading-{os.getpid()}"
            filesystem.makedirs(filesystem._parent(path), exist_ok=True)  # file systems with folders
            filesystem.put_file(str(local), temporary)
            filesystem.mv(temporary, path)
    except Exception as error:
        raise WriteError(f"cannot upload {local.name} to {location}: {first_line(_failure(location, error))}") from None


def remove(location: str) -> None:
    """Delete the object at `location`, if there is one."""
    filesystem, path = _filesystem(location)
    try:
        filesystem.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as error:
        raise WriteError(f"cannot remove {location}: {first_line(_failure(location, error))}") from None


class Mirror:
    """A local working folder for files whose home is a folder at a URL (a training run, a features file):
    they are written there as local files are (atomically), and `push` uploads each finished file whole,
    one put per file, when it has changed since its last upload. `pull` fetches a file for a run that
    continues. `close` removes the working folder."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.folder = Path(tempfile.mkdtemp(prefix="uniformer-upload-"))
        self._sent: dict[Path, tuple[int, int, int]] = {}
        # Removed by `close`, or when the mirror is dropped or the process exits, whatever failed.
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def remote(self, local: Path) -> str:
        return f"{self.url}/{local.relative_to(self.folder).as_posix()}"

    def pull(self, name: str) -> bool:
        """Fetch `name` from the URL into the working folder; False when the store has no such file."""
        local = self.folder / name
        if not exists(self.remote(local)):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        download(self.remote(local), local)
        self._sent[local] = _stamp(local)
        return True

    def push(self, files: Iterable[Path] | None = None, *, last: Sequence[str] = ()) -> list[str]:
        """Upload `files` in their order (an `.npy` before the index that names its rows), by default
        every file of the working folder in the order they were modified, that changed since their last
        upload; those named in `last` go after the others (a checkpoint after the log it ends). Returns the
        URLs written."""
        if files is None:
            files = sorted(self.folder.rglob("*"), key=lambda path: (path.stat().st_mtime_ns, path.name))
        changed = [
            local
            for local in files
            if local.is_file() and not local.name.startswith(".") and self._sent.get(local) != _stamp(local)
        ]
        written = []
        for local in sorted(changed, key=lambda path: path.name in last):
            upload(local, self.remote(local))
            self._sent[local] = _stamp(local)
            written.append(self.remote(local))
        return written

    def close(self) -> None:
        self._remove()


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is written again (an atomic write makes a new file: a new inode)."""
    status = path.stat()
    return status.st_size, status.st_mtime_ns, status.st_ino


def open_output(location: str) -> AbstractContextManager[IO[bytes]]:
    """A store's file object for writing: the object appears when it is closed."""
    filesystem, path = _filesystem(location)
    try:
        return filesystem.open(path, "wb")
    except Exception as error:
        raise _failure(location, error) from None


def size_of(location: str | Path) -> int:
    try:
        if not is_url(location):
            return Path(location).stat().st_size
        filesystem, path = _filesystem(str(location))
        return int(filesystem.size(path))
    except Exception as error:
        raise _failure(str(location), error) from None


def list_dir(location: str | Path) -> list[tuple[str, bool]]:
    """(name, is a folder) of each entry of a folder, sorted by name."""
    if not is_url(location):
        try:
            return sorted((entry.name, entry.is_dir()) for entry in Path(location).iterdir())
        except OSError as error:
            raise _failure(str(location), error) from None
    filesystem, path = _filesystem(str(location))
    try:
        entries = filesystem.ls(path, detail=True)
    except Exception as error:
        raise _failure(str(location), error) from None
    found = {
        str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]: entry.get("type") == "directory"
        for entry in entries
        if str(entry["name"]).rstrip("/") != path.rstrip("/")
    }
    return sorted(found.items())


def find_files(location: str | Path) -> dict[str, int]:
    """Every file below a folder: its path relative to the folder (with `/`) and its size. On an object
    store, one listing (a request per thousand objects) instead of a request per file."""
    if not is_url(location):
        root = Path(location)
        found = {}
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            for name in sorted(files):
                file = Path(folder, name)
                try:
                    found[file.relative_to(root).as_posix()] = file.stat().st_size
                except OSError:
                    found[file.relative_to(root).as_posix()] = 0
        return found
    filesystem, path = _filesystem(str(location))
    try:
        entries = filesystem.find(path, detail=True)
    except Exception as error:
        raise _failure(str(location), error) from None
    prefix = path.rstrip("/") + "/"
    return {
        str(name)[len(prefix) :]: int(entry.get("size") or 0)
        for name, entry in sorted(entries.items())
        if str(name).startswith(prefix) and entry.get("type") != "directory"
    }


def read_text(location: str | Path, max_bytes: int) -> str:
    """The UTF-8 text of a file of at most `max_bytes` (a list, a label file), local or at a URL."""
    if not is_url(location):
        try:
            return read_text_file(location, max_bytes=max_bytes)
        except OSError as error:
            raise DatasetError(f"cannot read {location}: {error.strerror or error}") from None
        except ValueError as error:
            raise DatasetError(f"cannot read {location}: {error}") from None
    if size_of(location) > max_bytes:
        raise DatasetError(f"cannot read {location}: it is larger than {max_bytes:,} bytes")
    try:
        return read_bytes(location).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"cannot read {location}: it is not UTF-8 text (byte {error.start})") from None


def suffix_of(location: str | Path) -> str:
    """The file extension, lower case (`.mp4`), of a path or a URL."""
    name = name_of(location)
    return "" if "." not in name.lstrip(".") else "." + name.rsplit(".", 1)[-1].lower()


def stem_of(location: str | Path) -> str:
    name = name_of(location)
    suffix = suffix_of(location)
    return name[: len(name) - len(suffix)] if suffix else name


def version_of(location: str) -> dict[str, str | int]:
    """What identifies the content of an object at a URL: its size and, where the store gives them, its
    ETag and modification time (a copy is fetched again when they change)."""
    filesystem, path = _filesystem(location)
    try:
        info = filesystem.info(path)
    except Exception as error:
        raise _failure(location, error) from None
    if info.get("type") == "directory":
        raise DatasetError(f"{location} is a folder, not a file")
    keys = ("size", "ETag", "etag", "LastModified", "mtime", "last_modified", "md5Hash", "generation")
    return {
        key: value if isinstance(value, int) else str(value) for key in keys if (value := info.get(key)) is not None
    }


def download(location: str, destination: Path) -> None:
    """Copy the object at a URL to a local file (streamed, in the store's chunks)."""
    filesystem, path = _filesystem(location)
    try:
        filesystem.get_file(path, str(destination))
    except Exception as error:
        raise _failure(location, error) from None
