"""`uniformer cache`: what the zoo's downloads occupy, and removing, re-checking and pruning it.

A zoo model in the cache is up to four things, each with a record of its sha256 (README "Weights"):

- the download: a Hub file in huggingface_hub's cache (`<HF_HUB_CACHE>/models--org--name/snapshots/
  <commit>/<file>`, a link to a blob named after its sha256), or a Google Drive / MMAction2 file under
  `$HF_HOME/uniformer/downloads/<source>/` (with a `.sha256.json` sidecar, and its sha256 pinned in
  `sha256_pins.json`);
- its converted copy (`.safetensors` with a sidecar), beside it or under `$HF_HOME/uniformer/<org>--<repo>/
  <commit>/`;
- the OpenVINO builds of that copy (`$HF_HOME/uniformer/openvino/<its sha256>-<T>x<H>x<W>/`).

`cached_models` lists them (the `hf cache ls` habit for what `hf cache ls` cannot see), `removal` plans
what `cache rm` deletes, `verify` hashes every file again against its record, and `prune_plan` finds
what no zoo entry or record points at. Nothing here prints: the CLI shows the records.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from uniformer_cli.errors import UniformerError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import is_stale_temporary, is_temporary, sha256_of
from uniformer_cli.jsonio import read_json
from uniformer_cli.weights import remote
from uniformer_cli.weights.cache import (
    DIGESTS_FOLDER,
    INTEGRITY_SUFFIX,
    LOCKS_FOLDER,
    OPENVINO_FOLDER,
    RECORD_BYTES,
    STALE_DOWNLOAD_SECONDS,
    cache_home,
    file_stamp,
    hub_repo_folder,
    integrity_file,
    last_used,
    recorded_sha256,
)
from uniformer_cli.weights.hub import converted_path, is_sha256
from uniformer_cli.zoo import ZOO, AnyEntry, find_entry
from uniformer_cli.zoo.sources import Source
from uniformer_cli.zoo.v2 import V2_ZOO

# An OpenVINO build folder: `<weights sha256>-<T>x<H>x<W>` and, for features, `-features<stage>`.
_BUILD = re.compile(r"^(?P<digest>[0-9a-f]{64})-(?P<shape>\d+x\d+x\d+)(?P<output>-features\d)?$")
_SCRATCH_PREFIX = ".uniformer-export-"  # the scratch folders of older versions (now `files.scratch_folder`'s)
STALE_SCRATCH_SECONDS = 3600.0


@dataclass(frozen=True)
class Build:
    """One OpenVINO build of a converted copy."""

    folder: Path
    shape: str  # "TxHxW", with "-features<stage>" for a features graph
    precisions: tuple[str, ...]  # the compiled blobs present: "fp32", "bf16"


@dataclass
class CachedModel:
    """A zoo entry's files from one source (and, for the Hub, one commit)."""

    entry: AnyEntry
    source: Source
    revision: str | None  # the Hub commit; None for other sources
    download: Path | None  # the downloaded file (None: removed since, its copy is left)
    weights: Path | None  # the converted copy (None: not converted yet)
    builds: list[Build] = field(default_factory=list)

    @property
    def download_sha256(self) -> str | None:
        """The download's recorded sha256: its Hub blob's name, or its sidecar."""
        if self.download is None:
            return None
        if self.source == "hub":
            blob = Path(os.path.realpath(self.download)).name
            return blob if is_sha256(blob) else None
        return recorded_sha256(self.download)

    @property
    def weights_sha256(self) -> str | None:
        return None if self.weights is None else recorded_sha256(self.weights)

    def files(self) -> list[Path]:
        """Every file and folder this model occupies (a Hub download: its link and its blob)."""
        found: list[Path] = []
        if self.download is not None:
            found.append(self.download)
            if self.source == "hub":
                found.append(Path(os.path.realpath(self.download)))
            else:
                found.append(integrity_file(self.download))
        if self.weights is not None:
            found += [self.weights, integrity_file(self.weights)]
        found += [build.folder for build in self.builds]
        return [path for path in dict.fromkeys(found) if os.path.lexists(path)]

    @property
    def size(self) -> int:
        return sum(_size(path) for path in self.files())

    @property
    def last_used(self) -> float | None:
        """The last time a command used it (its converted copy or an OpenVINO build), else when it was
        converted or downloaded."""
        times = [last_used(self.weights)] if self.weights is not None else []
        times += [last_used(build.folder / "model.xml") for build in self.builds]
        if self.download is not None and not any(times):
            times.append(_mtime(self.download))
        known = [moment for moment in times if moment is not None]
        return max(known) if known else None

    def record(self) -> dict[str, object]:
        """The `cache ls` record (docs/OUTPUT.md)."""
        moment = self.last_used
        return {
            "model": self.entry.name,
            "source": self.source,
            "revision": self.revision,
            "sha256": self.download_sha256,
            "download": None if self.download is None else str(self.download),
            "weights": None if self.weights is None else str(self.weights),
            "openvino": [build.shape + "".join(f" {p}" for p in build.precisions) for build in self.builds],
            "size_bytes": self.size,
            "last_used": None if moment is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(moment)),
            "error": None,
        }


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _size(path: Path) -> int:
    """Bytes on disk of a file, or of everything under a folder (links not followed)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size if path.is_symlink() else path.stat().st_size
        return sum(_size(child) for child in path.iterdir())
    except OSError:
        return 0


def zoo_entries() -> list[AnyEntry]:
    """Every zoo entry, UniFormer then UniFormerV2 (`uniformer models`' order)."""
    return [*ZOO.values(), *V2_ZOO.values()]


def _builds_by_digest() -> dict[str, list[Build]]:
    builds: dict[str, list[Build]] = {}
    for folder in _children(cache_home() / OPENVINO_FOLDER):
        match = _BUILD.match(folder.name)
        if match is None or not folder.is_dir():
            continue
        compiled = [child.name for child in _children(folder) if child.name.startswith("compiled-")]
        precisions = tuple(sorted(name.removeprefix("compiled-") for name in compiled))
        shape = match["shape"] + (match["output"] or "")
        builds.setdefault(match["digest"], []).append(Build(folder, shape, precisions))
    return builds


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _hub_commits(entry: AnyEntry) -> list[tuple[str | None, Path | None, Path]]:
    """(commit, the download or None, the converted copy's path) of each commit of the entry's Hub file
    that is in the Hub cache or has a converted copy."""
    assert entry.hub_repo is not None and entry.hub_file is not None
    snapshots = hub_repo_folder(entry.hub_repo) / "snapshots"
    found: dict[str, Path | None] = {}
    for folder in _children(snapshots):
        download = folder / entry.hub_file
        if os.path.lexists(download):
            found[folder.name] = download
    copies = converted_path(entry, "COMMIT").parent.parent
    for folder in _children(copies):
        if converted_path(entry, folder.name).is_file():
            found.setdefault(folder.name, None)
    return [(commit, found[commit], converted_path(entry, commit)) for commit in sorted(found)]


def cached_models(names: Sequence[str] = ()) -> list[CachedModel]:
    """Every zoo model with a file in the cache (or only those `names` name), in zoo order."""
    entries = [find_entry(name) for name in names] if names else zoo_entries()
    builds = _builds_by_digest()
    models = []
    for entry in dict.fromkeys(entries):
        for source in entry.sources:
            located: list[tuple[str | None, Path | None, Path]]
            if source == "hub":
                located = list(_hub_commits(entry))
            else:
                _, _, path, _ = remote.locate(entry, source)
                located = [(None, path if path.is_file() else None, path.with_suffix(".safetensors"))]
            for commit, download, weights in located:
                copy = weights if weights.is_file() else None
                if download is None and copy is None:
                    continue
                model = CachedModel(entry, source, commit, download, copy)
                digest = model.weights_sha256
                model.builds = builds.get(digest, []) if digest else []
                models.append(model)
    return models


def cache_size() -> int:
    """Bytes under `$HF_HOME/uniformer` and in the Hub cache's folders of the zoo's repositories."""
    repositories = {entry.hub_repo for entry in zoo_entries() if entry.hub_repo}
    return _size(cache_home()) + sum(_size(hub_repo_folder(repo)) for repo in sorted(repositories))


# --- removing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """A file or folder to delete and why (`cache rm`, `cache prune`)."""

    path: Path
    kind: str  # download, weights, openvino, record, temporary, other
    model: str | None
    reason: str
    size: int

    def record(self, removed: bool) -> dict[str, object]:
        """The `cache rm` / `cache prune` record (docs/OUTPUT.md)."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "model": self.model,
            "reason": self.reason,
            "size_bytes": self.size,
            "removed": removed,
            "error": None,
        }


def removal(names: Sequence[str], *, everything: bool = False) -> list[Removal]:
    """What `cache rm NAME...` (or `--all`) deletes: each named model's download, converted copy and
    OpenVINO builds. The sha256 pins of Drive and MMAction2 downloads stay (a record of trust, not a
    cache). A name with nothing cached is an error."""
    if not names and not everything:
        raise UniformerError("name the models to remove (see `uniformer cache ls`), or pass --all")
    models = cached_models() if everything else []
    for name in names:
        found = cached_models([name])
        if not found:
            raise UniformerError(f"{find_entry(name).name} has nothing in the cache (see `uniformer cache ls`)")
        models += found
    planned = [item for model in models for item in _model_removals(model)]
    return list({item.path: item for item in planned}.values())  # a model named twice is removed once


def _model_removals(model: CachedModel) -> list[Removal]:
    name = model.entry.name
    items = []
    if model.download is not None:
        items.append(Removal(model.download, "download", name, "removed", _size(model.download)))
        if model.source == "hub":
            blob = Path(os.path.realpath(model.download))
            if blob != model.download and not _blob_used_elsewhere(blob, model.download):
                items.append(Removal(blob, "download", name, "removed", _size(blob)))
        else:
            items.append(Removal(integrity_file(model.download), "record", name, "removed", 0))
    if model.weights is not None:
        items.append(Removal(model.weights, "weights", name, "removed", _size(model.weights)))
        items.append(Removal(integrity_file(model.weights), "record", name, "removed", 0))
    for build in model.builds:
        items.append(Removal(build.folder, "openvino", name, "removed", _size(build.folder)))
    return [item for item in items if os.path.lexists(item.path)]


def _blob_used_elsewhere(blob: Path, link: Path) -> bool:
    """Whether another snapshot of the Hub repository links to `blob`."""
    repository = blob.parent.parent
    for other in (repository / "snapshots").rglob("*"):
        if other != link and other.is_symlink() and Path(os.path.realpath(other)) == blob:
            return True
    return False


def delete(items: Iterable[Removal]) -> list[tuple[Removal, str | None]]:
    """Delete each planned item; (item, None) when it went, (item, why not) otherwise. Folders left
    empty by it (a Hub snapshot, a commit's copies, a Drive file's folder) go too."""
    results: list[tuple[Removal, str | None]] = []
    for item in items:
        try:
            if item.path.is_dir() and not item.path.is_symlink():
                shutil.rmtree(item.path)
            else:
                item.path.unlink(missing_ok=True)
        except OSError as error:
            results.append((item, error.strerror or str(error)))
            continue
        results.append((item, None))
        _remove_empty_parents(item.path.parent)
    return results


def _remove_empty_parents(folder: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to the cache roots (never those)."""
    from huggingface_hub import constants

    roots = {cache_home(), Path(constants.HF_HUB_CACHE), Path(constants.HF_HOME)}
    while folder not in roots and folder != folder.parent:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# --- checking -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One file hashed again against its record (`cache verify`)."""

    model: str
    kind: str  # download, weights, openvino
    path: Path
    expected: str | None
    actual: str | None
    problem: str | None

    def record(self) -> dict[str, object]:
        """The `cache verify` record (docs/OUTPUT.md)."""
        return {
            "model": self.model,
            "kind": self.kind,
            "path": str(self.path),
            "expected": self.expected,
            "sha256": self.actual,
            "error": self.problem,
        }


def verify(names: Sequence[str] = (), progress: ProgressCallback | None = None) -> list[Check]:
    """Hash every cached file of the zoo's models (or of `names`) again and compare it with its record:
    a Hub download with its blob's name (the Hub's sha256), another source's download with its sidecar
    and its pinned sha256, a converted copy and each OpenVINO build's IR with their sidecars. Unlike a
    command's own check before use, the files are read whatever their stat stamps say."""
    if names and not cached_models(names):
        raise UniformerError(f"nothing of {', '.join(names)} is in the cache (see `uniformer cache ls`)")
    planned = [item for model in cached_models(names) for item in _checks(model)]
    results = []
    for number, (model, kind, path, expected, pinned) in enumerate(planned):
        notify(progress, Progress("verifying", number, len(planned), {"file": path.name}))
        results.append(_check(model, kind, path, expected, pinned))
    notify(progress, Progress("verifying", len(planned), len(planned)))
    return results


def _checks(model: CachedModel) -> Iterator[tuple[str, str, Path, str | None, str | None]]:
    """(model, kind, file, recorded sha256, pinned sha256) of each file to hash."""
    name = model.entry.name
    if model.download is not None:
        pinned = None
        if model.source != "hub":
            key = remote.locate(model.entry, model.source)[0]
            pinned = remote.pinned_sha256s().get(key)
        yield name, "download", model.download, model.download_sha256, pinned
    if model.weights is not None:
        yield name, "weights", model.weights, model.weights_sha256, None
    for build in model.builds:
        for file in ("model.xml", "model.bin"):
            yield name, "openvino", build.folder / file, recorded_sha256(build.folder / file), None


def _check(model: str, kind: str, path: Path, expected: str | None, pinned: str | None) -> Check:
    try:
        actual = sha256_of(path)
    except OSError as error:
        return Check(model, kind, path, expected, None, f"{path} cannot be read ({error.strerror or error})")
    fix = f"`uniformer cache rm {model}` removes it (the next use downloads or converts it again)"
    if expected is None:
        problem = f"{path} has no record of its sha256 to compare with: {fix}"
    elif actual != expected:
        problem = f"{path} is damaged (sha256 {actual[:12]}... instead of {expected[:12]}...): {fix}"
    elif pinned is not None and actual != pinned:
        problem = f"{path} is not the file first downloaded (sha256 {actual[:12]}..., pinned {pinned[:12]}...): {fix}"
    else:
        problem = None
    return Check(model, kind, path, expected, actual, problem)


# --- pruning --------------------------------------------------------------------------------------------


def prune_plan(*, now: float | None = None) -> list[Removal]:
    """What no zoo entry or record points at, under `$HF_HOME/uniformer` and in the Hub cache's folders
    of the zoo's repositories:

    - converted copies whose download is gone (every use starts from the download, so they would never
      be read again), or that belong to no zoo entry;
    - downloads from Drive / MMAction2 that no zoo entry names;
    - OpenVINO builds of weights that no converted copy and no live sha256 record is (the record of a
      `--weights FILE` stays live while that file is unchanged);
    - sha256 records of files that are gone or changed, sidecars without their file;
    - what killed runs left: temporary files of dead processes, export scratch folders and Hub
      `.incomplete` downloads untouched for an hour; anything else in `$HF_HOME/uniformer` that this
      package does not write.
    """
    now = time.time() if now is None else now
    home = cache_home()
    kept: set[Path] = set()
    for model in cached_models():
        kept.update(model.files())
        if model.download is not None and model.weights is not None:
            continue
        if model.weights is not None:  # the download is gone: the copy is never read again
            kept.difference_update({model.weights, integrity_file(model.weights)})
    live_digests = {digest for model in cached_models() if (digest := model.weights_sha256) and model.download}
    records, live_records = _digest_records()
    live_digests |= live_records
    plan: list[Removal] = []
    repositories = {entry.hub_repo.replace("/", "--") for entry in zoo_entries() if entry.hub_repo}
    for child in _children(home):
        if child.name == remote.DOWNLOADS_FOLDER:
            plan += _unreferenced_files(child, kept, now, keep=frozenset({child / remote.PINS_FILE}))
        elif child.name == OPENVINO_FOLDER:
            plan += _unreferenced_builds(child, live_digests, now)
        elif child.name == DIGESTS_FOLDER:
            plan += [item for item in records if item.path.parent == child]
        elif child.name == LOCKS_FOLDER:
            continue  # a lock file removed while held would let a second build in
        elif child.name in repositories and child.is_dir():
            plan += _unreferenced_files(child, kept, now)
        else:
            plan.append(Removal(child, "other", None, "not written by this package's cache", _size(child)))
    for repository in sorted(filter(None, {entry.hub_repo for entry in zoo_entries()})):
        for leftover in (hub_repo_folder(repository) / "blobs").glob("*.incomplete"):
            if now - (_mtime(leftover) or now) > STALE_DOWNLOAD_SECONDS:
                plan.append(Removal(leftover, "temporary", None, "an interrupted download", _size(leftover)))
    return plan


def _unreferenced_files(
    folder: Path, kept: set[Path], now: float, keep: frozenset[Path] = frozenset()
) -> list[Removal]:
    plan = []
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            path = Path(root) / name
            if path in kept or path in keep:
                continue
            age = now - (_mtime(path) or now)
            if is_stale_temporary(path, age):
                plan.append(Removal(path, "temporary", None, "a temporary file of an interrupted write", _size(path)))
            elif is_temporary(path):
                continue  # a write in progress
            elif name.endswith(INTEGRITY_SUFFIX):
                plan.append(Removal(path, "record", None, "the file it records is gone", _size(path)))
            else:
                plan.append(Removal(path, "weights", None, "no zoo entry or download points at it", _size(path)))
    return plan


def _unreferenced_builds(folder: Path, live: set[str], now: float) -> list[Removal]:
    plan = []
    for child in _children(folder):
        match = _BUILD.match(child.name)
        if match is not None and match["digest"] in live:
            continue
        age = now - (_mtime(child) or now)
        if is_temporary(child) or child.name.startswith(_SCRATCH_PREFIX):  # a build's scratch folder
            if is_stale_temporary(child, age) or age > STALE_SCRATCH_SECONDS:
                reason = "scratch folder of an interrupted conversion"
                plan.append(Removal(child, "temporary", None, reason, _size(child)))
            continue
        reason = "no cached weights or live record has its sha256" if match else "not an OpenVINO build"
        plan.append(Removal(child, "openvino", None, reason, _size(child)))
    return plan


def _digest_records() -> tuple[list[Removal], set[str]]:
    """The stale sha256 records in `digests/` (their file is gone or changed), and the sha256 of the live ones."""
    stale, live = [], set()
    for record_file in _children(cache_home() / DIGESTS_FOLDER):
        try:
            record = read_json(record_file, max_bytes=RECORD_BYTES)
            path, digest, recorded = Path(record["path"]), record["sha256"], record["verified"]
            current = file_stamp(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            stale.append(Removal(record_file, "record", None, "the file it records is gone", _size(record_file)))
            continue
        if current != recorded or not isinstance(digest, str):
            stale.append(Removal(record_file, "record", None, "the file it records changed", _size(record_file)))
        else:
            live.add(digest)
    return stale, live
