"""What a command asks of the inference door (`engine.inference.open_model`), readable without torch:
the request itself, and the test protocol it will run with where that is known before the model loads
(`planned_protocol`), so that `uniformer predict` can decode its first video while torch is imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uniformer_cli.data import storage
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ProtocolOverrides, ViewProtocol, resolve_protocol
from uniformer_cli.weights.header import name_kind, read_metadata, stored_protocol
from uniformer_cli.zoo import DEFAULT_MODEL, find_entry


@dataclass(frozen=True)
class InferenceRequest:
    """Which model to open and how to run it; every command that runs a model takes these fields.

    `model` is a zoo name or alias, or a Hub model repository `namespace/name`; with `weights` (a local
    file) it names the zoo entry that file belongs to (its labels and protocol). Neither: the command's
    default model.
    """

    model: str | None = None
    weights: str | Path | None = None  # a local file or a storage URL
    revision: str | None = None
    head_dim: int | None = None
    device: str = "auto"
    precision: str = "auto"  # `settings.PRECISIONS`
    engine: str = "auto"  # `settings.ENGINES`; auto decides per machine (`openvino_engine.auto_model`)
    compile: bool = False
    protocol: ProtocolOverrides = field(default_factory=ProtocolOverrides)


class _NotKnownYet(Exception):
    """The model's own protocol is only known once it is fetched (a Hub repository's or a URL's file)."""


def planned_protocol(request: InferenceRequest, default_model: str | None = DEFAULT_MODEL) -> ViewProtocol | None:
    """The protocol `open_model(request)` will run with, as far as it can be known without loading the
    weights (nor importing torch): the named zoo entry's (either family), or the one a safetensors
    file's header records, with the request's changes (`resolve_protocol`, the rule `open_model` applies).
    None where it cannot be known: a Hub repository or a storage URL before its download, or anything
    unreadable or refused, which opening the model reports. A plan only: a caller checks it against the
    opened model's protocol before using what it prepared."""
    try:
        own, source = _own_protocol(request, default_model)
        return resolve_protocol(own, request.protocol, source)
    except (UniformerError, _NotKnownYet, OSError, ValueError):
        return None


def _own_protocol(request: InferenceRequest, default_model: str | None) -> tuple[ViewProtocol | None, str]:
    """The protocol the model itself carries (`weights.loader`'s rule: a named zoo entry's, else the
    one a converted file records), and the name errors would give it."""
    location = request.weights
    entry_name = request.model
    if location is None:
        name = request.model or default_model
        if name is None:
            raise _NotKnownYet
        kind = name_kind(name)
        if kind == "hub":
            raise _NotKnownYet
        location, entry_name = (name, None) if kind == "file" else (None, name)
    if entry_name is not None:
        entry = find_entry(entry_name)
        return entry.protocol, entry.name
    if location is None or storage.is_url(location):
        raise _NotKnownYet  # a storage URL's file is read once fetched
    path = Path(location)
    if path.suffix.lower() != ".safetensors":
        return None, str(path)  # a .pth records no protocol
    stored = stored_protocol(read_metadata(path), path)
    return (ViewProtocol.from_dict(stored) if stored is not None else None), str(path)
