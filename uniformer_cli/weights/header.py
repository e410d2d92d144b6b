"""What is known of a model before torch loads: what a model name names (`name_kind`) and what a
safetensors file's header says (`read_metadata`, `stored_protocol`), read without its tensors.

`uniformer predict` plans the first video's views from these while torch is imported
(`engine.prefetch`); the loaders use the same functions, so there is one rule for each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from safetensors import SafetensorError, safe_open

from uniformer_cli.data import storage
from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.jsonio import load_json
from uniformer_cli.protocol import ViewProtocol

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pyth", ".pt", ".bin")
# The metadata keys `weights.store.save_weights` writes (its module doc describes them).
FORMAT = "pt"
CONFIG_KEY = "uniformer_config"
LABELS_KEY = "labels"
PROTOCOL_KEY = "protocol"
SOURCE_SHA256_KEY = "source_sha256"

NameKind = Literal["file", "hub", "zoo"]


def name_kind(name_or_path: str | Path) -> NameKind:
    """What a model name names, the one rule for every command and `load_model`:

    - "file", a weights file: a `Path`, a storage URL (`s3://`, `https://`...: fetched into the cache),
      anything that exists on disk (a local path always wins), a name ending in a weights suffix
      (`WEIGHT_SUFFIXES`);
    - "hub", a Hub model repository: otherwise, `namespace/name` in the Hub's repository-id grammar
      (`hub.is_hub_repo_id`);
    - "file" again for any other name with a folder separator (a missing file, which loading reports);
    - "zoo", a zoo name or alias, for the rest.
    """
    if isinstance(name_or_path, Path) or storage.is_url(name_or_path):
        return "file"
    text = str(name_or_path)
    if os.path.exists(text) or text.lower().endswith(WEIGHT_SUFFIXES):
        return "file"
    from uniformer_cli.weights import hub  # huggingface_hub loads only for names that may be repositories

    if hub.is_hub_repo_id(text):
        return "hub"
    return "file" if "/" in text or os.sep in text else "zoo"


def is_weights_path(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` names a local weights file (`name_kind`)."""
    return name_kind(name_or_path) == "file"


def require_file(path: Path, what: str) -> None:
    """Fail with one clear line unless `path` is a file; `what` names it ("checkpoint", "weights file")."""
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors (nor importing torch)."""
    require_file(path, "weights file")
    try:
        with safe_open(str(path), framework="numpy") as reader:
            return dict(reader.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None


def stored_protocol(metadata: dict[str, str], path: Path) -> dict[str, object] | None:
    """The test protocol a file's metadata records (`as_dict` form), None when it records none; a
    `CheckpointError` naming `path` when it is not a usable one."""
    if PROTOCOL_KEY not in metadata:
        return None
    try:
        protocol = load_json(metadata[PROTOCOL_KEY])
    except (ValueError, TypeError, UniformerError) as error:
        raise CheckpointError(f"{path} has unreadable uniformer metadata: {error}") from None
    try:
        ViewProtocol.from_dict(protocol)
    except UniformerError as error:
        raise CheckpointError(f"{path}: metadata 'protocol' is not usable: {error}") from None
    return protocol
