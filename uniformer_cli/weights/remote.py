"""Zoo checkpoints that are not on the Hugging Face Hub: the authors' Google Drive (by the official
README's file ids) and MMAction2's download server, fetched through gdown into the same cache as Hub
downloads (`$HF_HOME/uniformer/downloads/<source>/...`), under the same offline rule (`HF_HUB_OFFLINE`).

`weights.hub.download` dispatches here; nothing else downloads. Neither source publishes a checksum
for the official files, so a download is trusted in three steps:

1. MMAction2's file names end in the first 8 hex digits of the file's sha256 (OpenMMLab's
   `publish_model` rule): a download must begin with them.
2. The caller converts the file for the zoo entry, which refuses any other architecture or class count
   (`reject` then removes it).
3. The sha256 of the first accepted download is recorded (`accept`, in `sha256_pins.json`) and printed;
   a later download with another sha256 is refused unless `force`.

Google Drive answers `/uc?export=download&id=ID` with a redirect, then the file, or for files it cannot
scan (over ~100 MB) a "virus scan warning" page whose form confirms the download; gdown's parser reads
that form. Its quota page ("too many users have viewed or downloaded this file recently") and its
"infected" page are one-line errors. `UNIFORMER_DRIVE_ENDPOINT` replaces `https://drive.google.com`
(tests serve Drive's answers from 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import gdown
import requests
from gdown.download import get_url_from_gdrive_confirmation
from gdown.exceptions import FileURLRetrievalError
from huggingface_hub import constants

from uniformer_cli.errors import CheckpointError, first_line
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import atomic_write, write_reason
from uniformer_cli.jsonio import dump_json, read_json
from uniformer_cli.weights.cache import (
    cache_home,
    integrity_file,
    integrity_problem,
    known_sha256,
    probe_timeout,
    record_integrity,
)
from uniformer_cli.zoo import AnyEntry
from uniformer_cli.zoo.sources import SOURCE_NAMES, Source

DRIVE_ENDPOINT_VARIABLE = "UNIFORMER_DRIVE_ENDPOINT"
DRIVE_ENDPOINT = "https://drive.google.com"
DOWNLOADS_FOLDER = "downloads"
PINS_FILE = "sha256_pins.json"
READ_TIMEOUT = 60.0  # seconds without a byte before a transfer is retried
RETRIES = 2  # gdown resumes a broken transfer this many times
PAGE_BYTES = 1 << 20  # a Drive web page is read up to this size, never more
CONFIRMATIONS = 2  # Drive pages followed before the download is given up
PROGRESS_STEP = 0.1  # a progress line every 10%

_OPENMMLAB_SHA256 = re.compile(r"-([0-9a-f]{8})\.pth$")
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SUBCAPTION = re.compile(r'class="uc-error-subcaption"[^>]*>(.*?)</', re.IGNORECASE | re.DOTALL)
_QUOTA = ("too many users have viewed or downloaded this file recently", "quota exceeded")
_INFECTED = "infected with a virus"
_VIRUS_SCAN = ("virus scan warning", "scan this file for viruses")
# requests' connection errors nest urllib3's: the words of the few that matter, in place of their repr.
_CONNECTION_FAILURES = (
    ("failed to resolve", "the host name does not resolve"),
    ("name or service not known", "the host name does not resolve"),
    ("connection refused", "connection refused"),
    ("timed out", "no answer in time"),
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """A downloaded (or cached) checkpoint from a source other than the Hub."""

    source: Source
    entry: AnyEntry
    key: str  # what the sha256 is pinned under: "drive:<file id>" or the URL
    page: str  # where a person can download it by hand
    path: Path
    sha256: str
    pinned: bool  # its sha256 is already the recorded one

    @property
    def where(self) -> str:
        return f"{SOURCE_NAMES[self.source].full} ({self.page})"


def drive_endpoint() -> str:
    return (os.environ.get(DRIVE_ENDPOINT_VARIABLE) or DRIVE_ENDPOINT).rstrip("/")


def downloads_folder() -> Path:
    return cache_home() / DOWNLOADS_FOLDER


def fetch(
    entry: AnyEntry, source: Source, *, force: bool = False, progress: ProgressCallback | None = None
) -> RemoteFile:
    """The entry's checkpoint from `source` ("drive" or "mmaction2"): the verified cached download, else
    a new one (checked against MMAction2's sha256 prefix and the pinned sha256; `force` downloads afresh
    and accepts another sha256). `progress` hears of the transfer (else it is logged every 10%)."""
    key, page, path, first_url = locate(entry, source)
    pin = pinned_sha256s().get(key)
    if path.is_file() and not force:
        problem = integrity_problem(path)
        if problem is None:
            digest = known_sha256(path, path.parent)
            return RemoteFile(source, entry, key, page, path, digest, pinned=pin == digest)
        log.warning("the download %s %s: downloading it again", path, problem)
    where = f"{entry.name} from {SOURCE_NAMES[source].full}"
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(
            f"HF_HUB_OFFLINE is set and {where} is not in the cache ({path.parent}): run once with network "
            f"access, or download it from {page} and pass it with --model {entry.name} --weights FILE"
        )
    _remove(path)
    digest = _download(first_url, path, where, page, entry, drive=source == "drive", progress=progress)
    prefix = _OPENMMLAB_SHA256.search(first_url) if source == "mmaction2" else None
    if prefix is not None and not digest.startswith(prefix.group(1)):
        _remove(path)
        raise CheckpointError(
            f"the download of {where} is corrupt (sha256 {digest[:12]}... does not begin with {prefix.group(1)}, "
            "as its published name says); it was removed: run the command again to download it afresh"
        )
    if pin is not None and pin != digest and not force:
        _remove(path)
        raise CheckpointError(
            f"the file {SOURCE_NAMES[source].full} now serves for {entry.name} is not the one first downloaded here "
            f"(sha256 {digest} instead of {pin}); it was removed. If you trust the new file, accept it with "
            f"`uniformer download {entry.name} --force`"
        )
    record_integrity(path, sha256=digest)
    return RemoteFile(source, entry, key, page, path, digest, pinned=pin == digest)


def accept(remote: RemoteFile) -> None:
    """Record the sha256 of a download that converted for its entry (the first one, or one accepted
    with `force`), and say it."""
    if remote.pinned:
        return
    pins = pinned_sha256s()
    pins[remote.key] = remote.sha256
    pins_file = downloads_folder() / PINS_FILE
    try:
        atomic_write(pins_file, lambda temporary: temporary.write_text(dump_json(pins, indent=1, sort_keys=True)))
    except OSError as error:
        log.warning("could not record the sha256 of %s in %s (%s)", remote.path, pins_file, write_reason(error))
    log.info(
        "%s from %s: sha256 %s (recorded; a later download with another sha256 is refused)",
        remote.entry.name,
        SOURCE_NAMES[remote.source].full,
        remote.sha256,
    )


def reject(remote: RemoteFile, error: BaseException) -> CheckpointError:
    """Remove a download that is not the entry's checkpoint; the error to raise."""
    _remove(remote.path)
    return CheckpointError(
        f"the file downloaded from {remote.where} for {remote.entry.name} is not that checkpoint, so it was "
        f"removed: {first_line(error)}"
    )


def locate(entry: AnyEntry, source: Source) -> tuple[str, str, Path, str]:
    """Pin key, page for people, cache path and first URL of the entry's file at `source`."""
    if source == "drive" and entry.drive_id is not None:
        file_id = entry.drive_id
        path = downloads_folder() / "drive" / file_id / f"{entry.official_name}.pth"
        page = f"https://drive.google.com/file/d/{file_id}/view"
        return f"drive:{file_id}", page, path, f"{drive_endpoint()}/uc?export=download&id={file_id}"
    if source == "mmaction2" and entry.mmaction2_url is not None:
        url = entry.mmaction2_url
        return url, url, downloads_folder() / "mmaction2" / url.rsplit("/", 1)[-1], url
    raise CheckpointError(f"{entry.name} has no file on {SOURCE_NAMES[source].full}")


def pinned_sha256s() -> dict[str, str]:
    try:
        pins = read_json(downloads_folder() / PINS_FILE)
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in pins.items() if isinstance(value, str)} if isinstance(pins, dict) else {}


def _remove(path: Path) -> None:
    for leftover in (path, integrity_file(path)):
        leftover.unlink(missing_ok=True)


def _download(
    url: str, path: Path, where: str, page: str, entry: AnyEntry, *, drive: bool, progress: ProgressCallback | None
) -> str:
    """Transfer `url` (through Drive's pages when `drive`) to `path` with gdown; returns its sha256."""
    instead = f"download it from {page} and pass it with --model {entry.name} --weights FILE"
    hasher = hashlib.sha256()
    try:
        with requests.Session() as session:
            final = _resolve(session, url, where, instead) if drive else _reachable(session, url, where, instead)
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s", where)
        gdown.download(
            url=final,
            output=str(path),
            quiet=True,
            use_cookies=False,
            progress=_Progress(where, entry.name, progress),
            hasher=hasher,
            timeout=(probe_timeout(), READ_TIMEOUT),
            retries=RETRIES,
            resume=True,
        )
    except CheckpointError:
        raise
    except requests.HTTPError as error:
        raise CheckpointError(f"download of {where} failed: {first_line(error)}; or {instead}") from None
    except (requests.ConnectionError, requests.Timeout) as error:
        raise _unreachable(where, error, instead) from None
    except OSError as error:
        raise CheckpointError(f"could not write the download of {where} to {path}: {write_reason(error)}") from None
    except Exception as error:  # gdown's DownloadError (a broken transfer after its retries), and the like
        raise CheckpointError(f"download of {where} failed: {first_line(error)}; or {instead}") from None
    return hasher.hexdigest()


def _unreachable(where: str, error: BaseException, instead: str) -> CheckpointError:
    text = str(error).lower()
    reason = next((words for needle, words in _CONNECTION_FAILURES if needle in text), type(error).__name__)
    return CheckpointError(
        f"could not reach the server to download {where} ({reason}), and it is not cached: check the "
        f"connection (HF_HUB_OFFLINE=1 uses the cache alone), or {instead}"
    )


def _reachable(session: requests.Session, url: str, where: str, instead: str) -> str:
    """Ask for `url` once, without retries, so that an unreachable server fails within `probe_timeout()`;
    the URL it redirects to."""
    with session.get(url, stream=True, timeout=(probe_timeout(), READ_TIMEOUT)) as response:
        if response.status_code >= 400:
            raise CheckpointError(f"download of {where} failed: HTTP {response.status_code}; or {instead}")
        return str(response.url)


def _resolve(session: requests.Session, url: str, where: str, instead: str) -> str:
    """The URL that serves the Drive file itself: the first answer's (after redirects) when it is the
    file, else the one the virus-scan warning page confirms (gdown's parser reads its form)."""
    for _ in range(CONFIRMATIONS + 1):
        with session.get(url, stream=True, timeout=(probe_timeout(), READ_TIMEOUT)) as response:
            is_page = response.headers.get("Content-Type", "").startswith("text/html")
            if not is_page and "Content-Disposition" in response.headers and response.status_code < 400:
                return str(response.url)
            if not is_page:
                raise CheckpointError(
                    f"Google Drive did not serve {where} (HTTP {response.status_code}): the file may have been "
                    f"removed or is no longer shared; or {instead}"
                )
            text = _read_page(response)
        _check_page(text, where, instead)
        try:
            url = get_url_from_gdrive_confirmation(text)
        except FileURLRetrievalError as error:
            raise CheckpointError(
                f"Google Drive answered with a web page instead of {where} ({_page_words(text) or first_line(error)}):"
                f" the file may no longer be shared; {instead}"
            ) from None
    raise CheckpointError(
        f"Google Drive kept answering with its virus-scan warning page instead of {where}, confirmed "
        f"{CONFIRMATIONS} times: {instead}"
    )


def _read_page(response: requests.Response) -> str:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=65536):
        body += chunk
        if len(body) >= PAGE_BYTES:
            break
    return body[:PAGE_BYTES].decode(response.encoding or "utf-8", errors="replace")


def _check_page(text: str, where: str, instead: str) -> None:
    """One line for the Drive pages that refuse the download: the quota page and the infected page."""
    lowered = text.lower()
    if any(words in lowered for words in _QUOTA):
        raise CheckpointError(
            f"Google Drive refuses {where} for now: too many people downloaded the file recently (Drive's "
            f"download quota, which frees up within 24 hours). Try again later, or {instead}"
        )
    if _INFECTED in lowered:
        raise CheckpointError(f"Google Drive flags {where} as infected and lets only its owner download it: {instead}")
    if any(words in lowered for words in _VIRUS_SCAN):
        log.info("Google Drive cannot scan %s for viruses (it is too large): confirming the download", where)


def _page_words(text: str) -> str:
    """What a Drive error page says, in one line: its subcaption, else its title."""
    for pattern in (_SUBCAPTION, _TITLE):
        found = pattern.search(text)
        if found:
            words = " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())
            if words:
                return words
    return ""


class _Progress:
    """gdown's progress callback: an `events.Progress` per step (in MB) for whoever listens, else log
    lines, one every `PROGRESS_STEP` of the file (every 64 MiB when the size is unknown), with the rate."""

    def __init__(self, where: str, name: str, listener: ProgressCallback | None = None) -> None:
        self.where = where
        self.task = f"{name} (MB)"
        self.listener = listener
        self.start = time.monotonic()
        self.next = PROGRESS_STEP
        self.next_bytes = 64 << 20

    def __call__(self, done: int, total: int | None) -> None:
        rate = done / max(time.monotonic() - self.start, 1e-3) / 1e6
        if self.listener is not None:
            megabytes = None if not total else round(total / 1e6)
            detail = {"MB/s": f"{rate:.1f}"}
            notify(self.listener, Progress(self.task, round(done / 1e6), megabytes, detail, sub=True))
            return
        if total:
            if done / total >= self.next:
                log.info("%s: %d%% of %.1f MB (%.1f MB/s)", self.where, 100 * done // total, total / 1e6, rate)
                while self.next <= done / total:
                    self.next += PROGRESS_STEP
        elif done >= self.next_bytes:
            log.info("%s: %.1f MB (%.1f MB/s)", self.where, done / 1e6, rate)
            self.next_bytes += 64 << 20
