"""Zoo checkpoints from the Hugging Face Hub: download through the Hub cache, verify, locate the
converted copy.

Downloads go through `huggingface_hub.hf_hub_download`, so its settings apply unchanged: `HF_HOME`,
`HF_HUB_CACHE`, `HF_ENDPOINT` (mirrors), `HF_HUB_OFFLINE`, tokens. The official files are `.pth`
pickles; each is converted once to safetensors under `$HF_HOME/uniformer/<org>--<repo>/<commit>/`,
one folder per commit, so two revisions never share a converted file and a moved branch is
converted again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from uniformer_cli.errors import CheckpointError, first_line
from uniformer_cli.files import sha256_of
from uniformer_cli.zoo import ZooEntry

CONVERTED_FOLDER = "uniformer"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    """A zoo entry's official file in the Hub cache and where its converted copy belongs."""

    path: Path  # the cached file (a symlink into the cache's blobs on most systems)
    commit: str  # the commit the revision resolved to
    converted: Path  # safetensors copy, written once by the caller


def download(entry: ZooEntry, revision: str | None = None) -> HubFile:
    """Fetch (or find in the cache) the official checkpoint of a zoo entry.

    Entries that exist only on the authors' Google Drive / Baidu fail with instructions instead.
    """
    if entry.hub_repo is None or entry.hub_file is None:
        raise CheckpointError(
            f"{entry.name} is not on the Hugging Face Hub: download {entry.official_name} from the official "
            "UniFormer README (Google Drive / Baidu links), then pass it with --model "
            f"{entry.name} --weights FILE, or `uniformer convert FILE out.safetensors --model {entry.name}`"
        )
    where = f"{entry.hub_file} from {entry.hub_repo}" + (f" at revision {revision}" if revision else "")
    try:
        path = Path(hf_hub_download(entry.hub_repo, entry.hub_file, revision=revision))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise CheckpointError(
                f"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): "
                "run once with network access, or pass a local file with --weights"
            ) from None
        raise CheckpointError(
            f"could not reach the Hub ({constants.ENDPOINT}) to download {where}, and it is not cached: "
            "check the connection (or HF_ENDPOINT), or pass a local file with --weights"
        ) from None
    except EntryNotFoundError:
        raise CheckpointError(
            f"the Hub has no {where}: pass a local copy with --weights FILE (see the official README)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"revision {revision!r} does not exist in {entry.hub_repo}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise CheckpointError(f"Hub repository {entry.hub_repo} was not found or is not accessible") from None
    except Exception as error:  # other HTTP statuses, transport errors after retries, a full disk...
        raise CheckpointError(f"download of {where} failed: {first_line(error)}") from None
    # The cache lays files out as .../snapshots/<commit>/<hub_file>.
    commit = path.parents[len(PurePosixPath(entry.hub_file).parts) - 1].name
    converted = (
        Path(constants.HF_HOME)
        / CONVERTED_FOLDER
        / entry.hub_repo.replace("/", "--")
        / commit
        / f"{PurePosixPath(entry.hub_file).stem}.safetensors"
    )
    return HubFile(path, commit, converted)


def verify_download(hub_file: HubFile, entry: ZooEntry) -> str:
    """Check the cached file against the zoo's size and the Hub's sha256 before it is trusted; returns
    the file's sha256.

    The Hub's ETag of an LFS file is the file's sha256 and huggingface_hub names the cached blob after
    it, so the blob's name is what the content must hash to (where the cache cannot use symlinks and
    the blob name is not visible, the hash is computed but has nothing to be compared with). A corrupt
    blob is removed so that the next run downloads it afresh.
    """
    blob = Path(os.path.realpath(hub_file.path))
    size = blob.stat().st_size
    if entry.hub_bytes is not None and size != entry.hub_bytes:
        raise CheckpointError(
            f"{entry.hub_file} is {size:,} bytes but the zoo records {entry.hub_bytes:,}: the file at this "
            f"revision is not the released checkpoint ({hub_file.path})"
        )
    digest = sha256_of(blob)
    if _SHA256.fullmatch(blob.name) and digest != blob.name:
        for damaged in (hub_file.path, blob):
            damaged.unlink(missing_ok=True)
        raise CheckpointError(
            f"the download of {entry.hub_file} is corrupt (sha256 {digest[:12]}... instead of "
            f"{blob.name[:12]}...); it was removed from the cache: run the command again to download it afresh"
        )
    return digest
