"""The converted copies of zoo checkpoints in the Hub cache (`$HF_HOME/uniformer/...`), kept honest.

Each copy proves itself: `record_integrity` writes a sidecar `<name>.sha256.json` with the file's
sha256 (and that of the download it came from) when the copy is written, and `integrity_problem`
checks it before each use, hashing only when the file's size, mtime, ctime or inode changed since it
was last verified, so an untouched copy costs one `stat`. `known_sha256` gives any file's sha256 the
same way (caches keyed by the weights' content use it). `remove_stale_downloads` removes the
`.incomplete` files that killed downloads of our repositories leave in the Hub cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

from huggingface_hub import constants

from uniformer_cli.data import storage
from uniformer_cli.errors import CheckpointError
from uniformer_cli.files import atomic_write, remove_files_if, sha256_of, write_reason
from uniformer_cli.jsonio import dump_json, read_json

# Converted copies and downloads from other sources live under `$HF_HOME/<CONVERTED_FOLDER>/`.
CONVERTED_FOLDER = "uniformer"
DIGESTS_FOLDER = "digests"  # sha256 records of weights files by path (`known_sha256`)
OPENVINO_FOLDER = "openvino"  # OpenVINO builds by weights sha256 (`engine.openvino_engine`)
LOCKS_FOLDER = ".locks"  # the lock files of builds of cached files (`build_lock`)
PROBE_SECONDS = 3.0  # how long a cold-cache download waits for a server to answer at all
INTEGRITY_SUFFIX = ".sha256.json"
# huggingface_hub resumes a download from its `.incomplete` file, and writes to it all the while: one
# untouched this long belongs to a download that was killed or abandoned.
STALE_DOWNLOAD_SECONDS = 3600.0
RECORD_BYTES = 1 << 16  # a sha256 record is a few hundred bytes

log = logging.getLogger(__name__)


def cache_home() -> Path:
    """Where this package keeps what it makes from downloads: `$HF_HOME/uniformer`."""
    return Path(constants.HF_HOME) / CONVERTED_FOLDER


def hub_repo_folder(hub_repo: str) -> Path:
    """The Hub cache's folder of a model repository: `<HF_HUB_CACHE>/models--org--name`."""
    return Path(constants.HF_HUB_CACHE) / f"models--{hub_repo.replace('/', '--')}"


def mark_used(path: Path) -> None:
    """Note that the cached file `path` was just used (for `uniformer cache ls`): its sidecar's mtime is
    set to now (one `utime`; its content, and so the integrity check, are untouched). Best effort: a
    read-only cache simply keeps the older time."""
    with contextlib.suppress(OSError):
        os.utime(integrity_file(path))


def last_used(path: Path) -> float | None:
    """When the cached file `path` was last used (`mark_used`) or written: its sidecar's mtime."""
    try:
        return integrity_file(path).stat().st_mtime
    except OSError:
        return None


def probe_timeout() -> float:
    """Seconds to wait for a server before a cold-cache download is declared unreachable: the user's
    HF_HUB_ETAG_TIMEOUT when set, else `PROBE_SECONDS` (huggingface_hub's own default, 10 s, then its
    retries would keep an offline user waiting half a minute)."""
    return constants.HF_HUB_ETAG_TIMEOUT if os.environ.get("HF_HUB_ETAG_TIMEOUT") else PROBE_SECONDS


def integrity_file(path: Path) -> Path:
    """The sidecar that records a cached file's sha256: `<name>.sha256.json` beside it."""
    return path.with_name(path.name + INTEGRITY_SUFFIX)


def file_stamp(path: Path) -> dict[str, int]:
    """What changes whenever a file's content may have: size, mtime, ctime (which no tool can set back)
    and inode (a replaced file)."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}


def record_integrity(path: Path, source_sha256: str | None = None, sha256: str | None = None) -> None:
    """Write the sidecar of `path`: its sha256 (`sha256` when already computed), the sha256 of what it
    was made from, and the stat stamp it was verified at. Best effort: a cache that cannot take it is
    verified again next time."""
    record = {"sha256": sha256 or sha256_of(path), "source_sha256": source_sha256, "verified": file_stamp(path)}
    try:
        atomic_write(integrity_file(path), lambda temporary: temporary.write_text(dump_json(record, indent=1)))
    except OSError as error:
        log.warning("could not record the sha256 of %s (%s): it is hashed again on next use", path, error)


def integrity_problem(path: Path) -> str | None:
    """None when `path` is what its sidecar records; else what is wrong, in words. Hashes the file only
    when its stat stamp changed since the last verification (then records the new stamp)."""
    try:
        record = read_json(integrity_file(path), max_bytes=RECORD_BYTES)
        expected, verified = record["sha256"], record.get("verified")
    except (OSError, ValueError, KeyError, TypeError):
        return "has no record of its sha256 (written by an older version, or the write was interrupted)"
    if not isinstance(expected, str):
        return "has an unreadable record of its sha256"
    try:
        stamp = file_stamp(path)
        if verified == stamp:
            return None
        actual = sha256_of(path)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if actual != expected:
        return f"is damaged (sha256 {actual[:12]}... instead of {expected[:12]}...)"
    record_integrity(path, record.get("source_sha256"), actual)
    return None


def recorded_sha256(path: Path, field: str = "sha256") -> str | None:
    """A cached file's sha256 as its sidecar records it (`field` "source_sha256": the sha256 of the file
    it was made from); None without a readable record."""
    try:
        value = read_json(integrity_file(path), max_bytes=RECORD_BYTES).get(field)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def recorded_source_sha256(path: Path) -> str | None:
    """The sha256 of the file a cached copy was made from, as its sidecar records it."""
    return recorded_sha256(path, "source_sha256")


def known_sha256(path: Path, index: Path) -> str:
    """The sha256 of `path`, read from a record while the file's stat stamp is the one it was recorded
    at: its sidecar (a cached copy, see `integrity_problem`), else a record of ours in the folder
    `index` (named after the file's absolute path). Hashed only when neither matches; the record is
    then (re)written, best effort."""
    stamp = file_stamp(path)
    own = index / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"
    for record_file in (integrity_file(path), own):
        try:
            record = read_json(record_file, max_bytes=RECORD_BYTES)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("verified") == stamp and isinstance(record.get("sha256"), str):
            return str(record["sha256"])
    digest = sha256_of(path)
    record = {"path": str(path.resolve()), "sha256": digest, "verified": stamp}
    try:
        atomic_write(own, lambda temporary: temporary.write_text(dump_json(record, indent=1)))
    except OSError as error:
        log.warning("could not record the sha256 of %s (%s): it is hashed again on next use", path, error)
    return digest


def weights_sha256(path: Path) -> str:
    """The sha256 of a weights file, as `known_sha256` gives it (hashed once per content, not per run),
    its records in `$HF_HOME/uniformer/digests`: what caches and resume files key the weights by."""
    return known_sha256(path, cache_home() / DIGESTS_FOLDER)


def build_lock(path: Path) -> Path:
    """The lock file (`files.exclusive`) of building the cached `path` (a converted copy, an OpenVINO
    folder): in `$HF_HOME/uniformer/.locks/`, named after the path, so the cache's folders hold only
    what they cache."""
    name = hashlib.sha256(str(Path(path).absolute()).encode()).hexdigest()[:32]
    return Path(constants.HF_HOME) / CONVERTED_FOLDER / LOCKS_FOLDER / f"{name}.lock"


URL_FOLDER = "urls"  # `$HF_HOME/uniformer/downloads/urls/<key>/`: weights files fetched from storage URLs
SOURCE_RECORD = "source.json"


def fetch_url(url: str) -> Path:
    """A weights file at a storage URL (`s3://`, `gs://`, `https://`, `hf://`), copied once into
    `$HF_HOME/uniformer/downloads/urls/<key>/<name>` and fetched again when the object changes (its
    size, ETag or modification time, as the store reports them): a network is not read per run."""
    version = {"url": url, **storage.version_of(url)}
    folder = Path(constants.HF_HOME) / CONVERTED_FOLDER / "downloads" / URL_FOLDER
    folder /= hashlib.sha256(url.encode()).hexdigest()[:24]
    path, record = folder / storage.name_of(url), folder / SOURCE_RECORD
    try:
        if path.is_file() and record.is_file() and read_json(record, max_bytes=RECORD_BYTES) == version:
            return path
    except (OSError, ValueError):
        pass  # an unreadable record: fetch again
    log.info("fetching %s", url)
    try:
        atomic_write(path, lambda temporary: storage.download(url, temporary))
        atomic_write(record, lambda temporary: temporary.write_text(dump_json(version, indent=1)))
    except OSError as error:
        raise CheckpointError(f"cannot keep a copy of {url} in {folder}: {write_reason(error)}") from None
    return path


def remove_stale_downloads(hub_repo: str, *, older_than: float = STALE_DOWNLOAD_SECONDS) -> list[Path]:
    """Delete the `.incomplete` leftovers of killed downloads of the model repository `hub_repo` from
    the Hub cache (`<cache>/models--org--name/blobs/*.incomplete` untouched for `older_than` seconds);
    a download in progress keeps writing its file and is left alone. Returns what was removed."""
    blobs = hub_repo_folder(hub_repo) / "blobs"
    return remove_files_if(
        blobs.glob("*.incomplete"),
        lambda _, age: age > older_than,
        f"interrupted download(s) of {hub_repo} from the Hub cache",
    )
