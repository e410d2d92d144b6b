"""Safetensors files that carry their own architecture, labels and test protocol.

Metadata (all JSON strings, as safetensors metadata must be str -> str):
- `format`: "pt" (the Hugging Face convention for PyTorch tensors),
- `uniformer_config`: the `ModelConfig` (or UniFormerV2's `V2Config`, `arch` "v2"), enough to rebuild the
  network,
- `labels`: class names in output order (optional),
- `protocol`: frames, stride, sampling, clips, crops, size, channel_order (optional), so that a trained
  or converted model predicts with the protocol it was trained for,
- `source_sha256`: the sha256 of the file it was converted from (optional).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.files import write_or_fail
from uniformer_cli.jsonio import dump_json, load_json
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config, config_from_json
from uniformer_cli.weights.header import (
    CONFIG_KEY,
    FORMAT,
    LABELS_KEY,
    PROTOCOL_KEY,
    SOURCE_SHA256_KEY,
    require_file,
    stored_protocol,
)

_OS_ERROR = re.compile(r"os error (\d+)")


@dataclass(frozen=True)
class StoredWeights:
    state_dict: dict[str, torch.Tensor]
    config: ModelConfig | V2Config | None  # None: a safetensors file written by something else
    labels: list[str] | None
    protocol: dict[str, object] | None


def save_weights(
    path: str | Path,
    weights: nn.Module | Mapping[str, torch.Tensor],
    config: ModelConfig | V2Config,
    labels: list[str] | None = None,
    protocol: Mapping[str, object] | None = None,
    source_sha256: str | None = None,
) -> Path:
    """Write `weights` (a model or a state_dict) with its metadata, atomically.

    The file appears complete or not at all (`atomic_write`), with the usual mode (0666 less the umask);
    a failed write (full disk, read-only folder) is one `WriteError` line and leaves any previous file.
    """
    path = Path(path)
    _check_labels(labels, config, f"cannot write {path}")
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    metadata = {"format": FORMAT, CONFIG_KEY: config.to_json()}
    if labels is not None:
        metadata[LABELS_KEY] = dump_json(list(labels))
    if protocol is not None:
        metadata[PROTOCOL_KEY] = dump_json(dict(protocol), sort_keys=True)
    if source_sha256 is not None:
        metadata[SOURCE_SHA256_KEY] = source_sha256
    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    write_or_fail(path, lambda temporary: save_safetensors(_storable(state), temporary, metadata), "weights", kept)
    return path


def save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' `save_file`, its I/O failures raised as the `OSError` they are (it reports them as
    `SafetensorError: ... (os error 28)`)."""
    try:
        save_file(state, str(path), metadata=metadata)
    except SafetensorError as error:
        code = _OS_ERROR.search(str(error))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from None


def _storable(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors that safetensors accepts: it refuses tensors that share memory (tied weights, views
    of one buffer) and needs contiguous data, so those are copied; every other tensor is written as is."""
    owners: set[int] = set()
    result = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        whole_storage = (
            tensor.is_contiguous()
            and tensor.storage_offset() == 0
            and storage.nbytes() == tensor.numel() * tensor.element_size()
        )
        if tensor.numel() and (not whole_storage or storage.data_ptr() in owners):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        else:
            owners.add(storage.data_ptr())
        result[key] = tensor
    return result


def load_weights(path: str | Path) -> StoredWeights:
    """Read a safetensors file and the metadata `save_weights` wrote (absent fields are None)."""
    path = Path(path)
    require_file(path, "weights file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
            state_dict = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None
    try:
        config = config_from_json(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None
        labels = load_json(metadata[LABELS_KEY]) if LABELS_KEY in metadata else None
    except (ValueError, TypeError, UniformerError) as error:
        raise CheckpointError(f"{path} has unreadable uniformer metadata: {error}") from None
    protocol = stored_protocol(metadata, path)
    if labels is not None and not (isinstance(labels, list) and all(isinstance(name, str) for name in labels)):
        raise CheckpointError(f"{path}: metadata 'labels' is not a list of class names")
    _check_labels(labels, config, str(path))
    return StoredWeights(state_dict, config, labels, protocol)


def _check_labels(labels: list[str] | None, config: ModelConfig | V2Config | None, where: str) -> None:
    """More names than outputs means the labels belong to another model (fewer is the HMDB51 case:
    a 101-row head trained with 51 classes, MODEL.md 6.2)."""
    if labels is not None and config is not None and len(labels) > config.num_classes:
        raise CheckpointError(f"{where}: {len(labels)} labels for a model with {config.num_classes} outputs")
