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
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from uniformer_cli.errors import DatasetError, first_line

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


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path inside it) for a storage URL."""
    protocol = URL.match(url)["protocol"].lower()  # type: ignore[index]
    if protocol not in PROTOCOLS:
        raise DatasetError(f"{url}: unsupported protocol {protocol!r} (use {', '.join(sorted(PROTOCOLS))})")
    import fsspec

    try:
        filesystem, path = fsspec.core.url_to_fs(url)
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


def exists(location: str | Path) -> bool:
    if not is_url(location):
        return Path(location).exists()
    filesystem, path = _filesystem(str(location))
    try:
        return bool(filesystem.exists(path))
    except Exception as error:  # a store's own exception types
        raise _failure(str(location), error) from None


def open_input(location: str | Path) -> AbstractContextManager[IO[bytes]]:
    """A seekable binary file: local, or a store's file object that fetches ranges as they are read."""
    if not is_url(location):
        try:
            return open(location, "rb")
        except OSError as error:
            raise _failure(str(location), error) from None
    filesystem, path = _filesystem(str(location))
    try:
        return filesystem.open(path, "rb")
    except Exception as error:
        raise _failure(str(location), error) from None


def read_bytes(location: str | Path, start: int = 0, size: int | None = None) -> bytes:
    """`size` bytes from `start` (to the end when None): one ranged request for a URL."""
    try:
        if not is_url(location):
            with open(location, "rb") as file:
                file.seek(start)
                return file.read(-1 if size is None else size)
        filesystem, path = _filesystem(str(location))
        end = None if size is None else start + size
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
