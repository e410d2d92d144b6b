"""Files from the Hugging Face Hub: `hub_download` is the one Hub download helper (zoo checkpoints and
the ImageNet weights that start training alike), with one translation of its errors; `download` is the
one entry point for a zoo checkpoint, from the Hub or, for entries the Hub lacks, from the sources of
`weights.remote` (MMAction2's server, the authors' Google Drive), into the same cache. Zoo checkpoints
are then verified and their converted copy located.

Downloads go through `huggingface_hub.hf_hub_download`, so its settings apply unchanged: `HF_HOME`,
`HF_HUB_CACHE`, `HF_ENDPOINT` (mirrors), `HF_HUB_OFFLINE`, tokens. The official files are `.pth`
pickles; each is converted once to safetensors under `$HF_HOME/uniformer/<org>--<repo>/<commit>/`,
one folder per commit, so two revisions never share a converted file and a moved branch is
converted again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    validate_repo_id,
)

from uniformer_cli.errors import CheckpointError, first_line
from uniformer_cli.events import ProgressCallback
from uniformer_cli.files import sha256_of
from uniformer_cli.weights import remote
from uniformer_cli.weights.cache import DIGESTS_FOLDER, cache_home, known_sha256, probe_timeout
from uniformer_cli.zoo import IMAGENET_WEIGHTS, AnyEntry
from uniformer_cli.zoo.sources import SOURCE_NAMES, Source
from uniformer_cli.zoo.v2 import CLIP_WEIGHTS, V2ZooEntry

_SHA256 = re.compile(r"[0-9a-f]{64}")
# The file `uniformer push` uploads, and the one `--model namespace/name` loads first.
HUB_MODEL_FILE = "model.safetensors"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubFile:
    """A zoo entry's official file in the cache and where its converted copy belongs."""

    path: Path  # the cached file (a symlink into the Hub cache's blobs on most systems)
    commit: str | None  # the Hub commit the revision resolved to; None for other sources
    converted: Path  # safetensors copy, written once by the caller
    remote: remote.RemoteFile | None = None  # the download, when it did not come from the Hub


def hub_download(repo: str, filename: str, *, revision: str | None = None, instead: str) -> Path:
    """The one way a Hub file is fetched: `hf_hub_download` (cache, HF_HUB_OFFLINE, HF_ENDPOINT, tokens),
    with every failure translated into one `CheckpointError` line that ends with `instead`, what the user
    can do without the Hub (e.g. "pass a local file with --weights").

    A file that is not cached is first asked for once, without retries (`get_hf_file_metadata`): when the
    Hub cannot be reached the command fails within `probe_timeout()` instead of sitting through
    huggingface_hub's retries with backoff. A cached file goes straight to `hf_hub_download`, which
    checks for a newer revision and falls back to the cache by itself.
    """
    where = f"{filename} from {repo}" + (f" at revision {revision}" if revision else "")
    with _translated(where, repo, revision, instead):
        if not constants.HF_HUB_OFFLINE and not _cached(repo, filename, revision):
            _probe(hf_hub_url(repo, filename, revision=revision), where, instead)
        return Path(hf_hub_download(repo, filename, revision=revision))


def _cached(repo: str, filename: str, revision: str | None) -> bool:
    return isinstance(try_to_load_from_cache(repo, filename, revision=revision), str)


@contextlib.contextmanager
def _translated(where: str, repo: str, revision: str | None, instead: str) -> Iterator[None]:
    """huggingface_hub's failures while fetching `where` as one `CheckpointError` line each."""
    try:
        yield
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise CheckpointError(
                f"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): "
                f"run once with network access, or {instead}"
            ) from None
        raise _unreachable(where, None, instead) from None
    except EntryNotFoundError:
        raise CheckpointError(f"the Hub has no {where}: {instead}") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"revision {revision!r} does not exist in {repo}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise CheckpointError(f"Hub repository {repo} was not found or is not accessible") from None
    except CheckpointError:
        raise
    except Exception as error:  # other HTTP statuses, transport errors after retries, a full disk...
        raise CheckpointError(f"download of {where} failed: {first_line(error)}") from None


def _probe(url: str, where: str, instead: str) -> None:
    """One metadata request: the Hub's own errors (missing file, revision, repository) propagate; a
    connection that fails or times out becomes the "cannot reach the Hub" error at once."""
    try:
        get_hf_file_metadata(url, timeout=probe_timeout())
    except HfHubHTTPError:
        raise
    except Exception as error:  # requests' or httpx's connection and timeout errors, by version
        raise _unreachable(where, error, instead) from None


def _unreachable(where: str, error: BaseException | None, instead: str) -> CheckpointError:
    reason = f" ({first_line(error)})" if error is not None else ""
    return CheckpointError(
        f"could not reach the Hub ({constants.ENDPOINT}){reason} to download {where}, and it is not cached: "
        f"check the connection (or HF_ENDPOINT; HF_HUB_OFFLINE=1 uses the cache alone), or {instead}"
    )


def download(
    entry: AnyEntry, revision: str | None = None, *, force: bool = False, progress: ProgressCallback | None = None
) -> HubFile:
    """Fetch (or find in the cache) the official checkpoint of a zoo entry of either family: from the Hub
    when it has a copy, else from the entry's other sources in turn (`ZooEntry.sources`); when a source
    fails and another one is left, a warning says so and the next is tried. `force` downloads a file from
    a non-Hub source afresh and accepts a sha256 other than the recorded one (`remote.fetch`). A
    UniFormerV2 Hub copy is pinned to the commit that added it (`V2ZooEntry.hub_revision`). `progress`
    hears of a Google Drive or MMAction2 transfer."""
    sources = entry.sources
    if not sources and isinstance(entry, V2ZooEntry):
        raise CheckpointError(
            f"{entry.name}: no copy of these weights is published any more (the official link {entry.official_url} "
            f"is gone): pass a local copy with --model {entry.name} --weights FILE ({entry.official_name}.pyth)"
        )
    if isinstance(entry, V2ZooEntry) and revision is not None:
        raise CheckpointError(f"{entry.name} is pinned to one published file; --revision does not apply")
    if not sources:
        raise CheckpointError(
            f"no checkpoint of {entry.name} was released (only its training log): train it with "
            f"`uniformer train --recipe {entry.name}`, or pick another entry from `uniformer models`"
        )
    if revision is not None and sources[0] != "hub":
        raise CheckpointError(
            f"--revision selects a Hub version, but {entry.name} downloads from {SOURCE_NAMES[sources[0]].full}"
        )
    failures: list[CheckpointError] = []
    for source in sources if revision is None else sources[:1]:
        try:
            return _hub_file(entry, revision) if source == "hub" else _remote_file(entry, source, force, progress)
        except CheckpointError as error:
            failures.append(error)
            if len(failures) < len(sources) and not constants.HF_HUB_OFFLINE:  # offline: each cache is tried
                log.warning("%s; trying the next source", error)
    raise failures[0]


def _remote_file(entry: AnyEntry, source: Source, force: bool, progress: ProgressCallback | None) -> HubFile:
    fetched = remote.fetch(entry, source, force=force, progress=progress)
    return HubFile(fetched.path, None, fetched.path.with_suffix(".safetensors"), fetched)


def _hub_file(entry: AnyEntry, revision: str | None) -> HubFile:
    assert entry.hub_repo is not None and entry.hub_file is not None
    if isinstance(entry, V2ZooEntry):
        revision = entry.hub_revision
    path = hub_download(entry.hub_repo, entry.hub_file, revision=revision, instead="pass a local file with --weights")
    # The cache lays files out as .../snapshots/<commit>/<hub_file>.
    commit = path.parents[len(PurePosixPath(entry.hub_file).parts) - 1].name
    return HubFile(path, commit, converted_path(entry, commit))


def converted_path(entry: AnyEntry, commit: str) -> Path:
    """Where the converted copy of a Hub entry's file at `commit` lives:
    `$HF_HOME/uniformer/<org>--<repo>/<commit>/<file stem>.safetensors`."""
    assert entry.hub_repo is not None and entry.hub_file is not None
    stem = PurePosixPath(entry.hub_file).stem
    return cache_home() / entry.hub_repo.replace("/", "--") / commit / f"{stem}.safetensors"


def is_sha256(name: str) -> bool:
    """Whether `name` is a sha256 in hex, as huggingface_hub names the blob of an LFS file."""
    return bool(_SHA256.fullmatch(name))


def image_weights(family: str) -> Path:
    """The family's ImageNet-1K image checkpoint (`IMAGENET_WEIGHTS`), through the Hub cache."""
    repo, filename = IMAGENET_WEIGHTS[family]
    return hub_download(repo, filename, instead="download it and pass it with --init FILE")


def clip_weights(family: str) -> Path:
    """The CLIP ViT a UniFormerV2 backbone starts from (`zoo.v2.CLIP_WEIGHTS`), through the Hub cache."""
    repo, filename = CLIP_WEIGHTS[family]
    return hub_download(repo, filename, instead="download it and pass it with --init FILE")


def verify_download(hub_file: HubFile, entry: AnyEntry) -> str:
    """Check the cached file against the zoo's size and the Hub's sha256 before it is trusted; returns
    the file's sha256 (a download from another source was checked by `remote.fetch`).

    The Hub's ETag of an LFS file is the file's sha256 and huggingface_hub names the cached blob after
    it, so the blob's name is what the content must hash to (where the cache cannot use symlinks and
    the blob name is not visible, the hash is computed but has nothing to be compared with). A corrupt
    blob is removed so that the next run downloads it afresh.
    """
    if hub_file.remote is not None:
        return hub_file.remote.sha256
    blob = Path(os.path.realpath(hub_file.path))
    size = blob.stat().st_size
    if entry.hub_bytes is not None and size != entry.hub_bytes:
        raise CheckpointError(
            f"{entry.hub_file} is {size:,} bytes but the zoo records {entry.hub_bytes:,}: the file at this "
            f"revision is not the released checkpoint ({hub_file.path})"
        )
    return _checked_blob(hub_file.path, entry.hub_file or hub_file.path.name, sha256_of(blob))


def _checked_blob(path: Path, filename: str, digest: str) -> str:
    """`digest` (the sha256 of the cached file `path`) when it is the one the Hub gave (the blob's name,
    see `verify_download`); else the damaged blob is removed and the error says to download it again."""
    blob = Path(os.path.realpath(path))
    if _SHA256.fullmatch(blob.name) and digest != blob.name:
        for damaged in (path, blob):
            damaged.unlink(missing_ok=True)
        raise CheckpointError(
            f"the download of {filename} is corrupt (sha256 {digest[:12]}... instead of "
            f"{blob.name[:12]}...); it was removed from the cache: run the command again to download it afresh"
        )
    return digest


def is_hub_repo_id(text: str) -> bool:
    """Whether `text` is a Hub model repository id with its namespace, `namespace/name`, by
    huggingface_hub's own grammar (`validate_repo_id`: letters, digits, `-`, `_`, `.`, no `--` or `..`,
    neither part starting or ending with `-` or `.`)."""
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


@dataclass(frozen=True)
class HubModel:
    """A converted uniformer file of a Hub model repository, in the Hub cache."""

    repo: str
    filename: str
    path: Path
    sha256: str


def hub_model(repo: str, revision: str | None = None) -> HubModel:
    """The weights of Hub model repository `repo` (`--model namespace/name`), through the Hub cache with the
    zoo's rules (`hub_download`: revision, HF_HUB_OFFLINE, a quick failure when the Hub is unreachable):
    `HUB_MODEL_FILE` (what `uniformer push` uploads), else the repository's only `.safetensors` file. The
    file is checked against the Hub's sha256 once per content (`known_sha256`); the caller checks that it
    is a converted uniformer file."""
    where = f"Hub repository {repo}" + (f" at revision {revision}" if revision else "")
    instead = "pass a local file with --weights"
    if _cached(repo, HUB_MODEL_FILE, revision):
        path = hub_download(repo, HUB_MODEL_FILE, revision=revision, instead=instead)
        filename = HUB_MODEL_FILE
    else:
        with _translated(where, repo, revision, instead):
            filename = _model_filename(repo, revision, where, instead)
            path = Path(hf_hub_download(repo, filename, revision=revision))
    digest = known_sha256(Path(os.path.realpath(path)), cache_home() / DIGESTS_FOLDER)
    return HubModel(repo, filename, path, _checked_blob(path, filename, digest))


def _model_filename(repo: str, revision: str | None, where: str, instead: str) -> str:
    """The file of `repo` to load when `HUB_MODEL_FILE` is not cached: that file when the Hub has it (one
    request, which fails quickly when the Hub cannot be reached), else the only `.safetensors` file the
    repository lists; offline or unreachable, the only one in the revision's cached snapshot."""
    if constants.HF_HUB_OFFLINE:
        return _only_weights(_cached_files(repo, revision), where)
    try:
        _probe(hf_hub_url(repo, HUB_MODEL_FILE, revision=revision), where, instead)
    except EntryNotFoundError:
        return _only_weights(HfApi().list_repo_files(repo, revision=revision), where)
    except CheckpointError:  # the Hub cannot be reached: a file cached under another name still serves
        try:
            return _only_weights(_cached_files(repo, revision), where)
        except (LocalEntryNotFoundError, CheckpointError):
            pass
        raise
    return HUB_MODEL_FILE


def _cached_files(repo: str, revision: str | None) -> list[str]:
    """The files of `repo`'s cached snapshot at `revision` (LocalEntryNotFoundError: none is cached)."""
    folder = Path(snapshot_download(repo, revision=revision, local_files_only=True))
    return [path.relative_to(folder).as_posix() for path in folder.rglob("*")]


def _only_weights(files: list[str], where: str) -> str:
    weights = sorted(name for name in files if name.endswith(".safetensors"))
    if HUB_MODEL_FILE in weights:
        return HUB_MODEL_FILE
    if len(weights) == 1:
        return weights[0]
    if not weights and constants.HF_HUB_OFFLINE:
        raise CheckpointError(f"HF_HUB_OFFLINE is set and no .safetensors file of {where} is in the Hugging Face cache")
    if not weights:
        raise CheckpointError(
            f"{where} holds no .safetensors file: a uniformer model on the Hub is a converted .safetensors file "
            "(`uniformer push` uploads one)"
        )
    raise CheckpointError(
        f"{where} holds several .safetensors files ({', '.join(weights[:4])}{', ...' if len(weights) > 4 else ''}) "
        f"and no {HUB_MODEL_FILE}: download the one you mean and pass it with --weights"
    )
