"""A ready model from a zoo name, a safetensors file or an official checkpoint, and `.pth` -> safetensors
conversion."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uniformer_cli.data import storage
from uniformer_cli.device import select_device
from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.events import ProgressCallback
from uniformer_cli.files import ensure_writable, exclusive, remove_stale_temporaries
from uniformer_cli.models import create_model
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config
from uniformer_cli.models.factory import UniFormerModel
from uniformer_cli.models.fast import check_precision, optimize_for_inference
from uniformer_cli.models.uniformerv2 import UniFormerV2
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import hub, remote
from uniformer_cli.weights.cache import (
    build_lock,
    fetch_url,
    integrity_problem,
    mark_used,
    record_integrity,
    recorded_source_sha256,
    remove_stale_downloads,
)
from uniformer_cli.weights.checkpoint import (
    check_fits,
    check_matches_entry,
    describe_config,
    infer_config,
    inflate_image_state_dict,
    load_state_dict_strict,
    read_checkpoint,
)
from uniformer_cli.weights.checkpoint_v2 import (
    CfgHints,
    check_matches_v2_entry,
    infer_v2_config,
    is_v2_state_dict,
    narrow_k710_head,
)
from uniformer_cli.weights.header import CONFIG_KEY, name_kind, read_metadata, require_file
from uniformer_cli.weights.store import load_weights, save_weights
from uniformer_cli.zoo import AnyEntry, ZooEntry, entry_labels, find_entry
from uniformer_cli.zoo.sources import Source
from uniformer_cli.zoo.v2 import V2ZooEntry, released_protocol

AnyModel = UniFormerModel | UniFormerV2

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model in eval mode with what is known about it.

    `labels` may be shorter than the model's outputs (the HMDB51 head has 101 rows for 51 classes,
    MODEL.md 6.2): use the first `len(labels)` logits. `protocol` is the test protocol: the zoo entry's,
    else the file's metadata, else None. `name` is how every record names the model (its `model` field,
    docs/OUTPUT.md): the zoo name when the weights are a zoo entry's, else the weights path as it was
    given, never a bare file name (two runs' `best.safetensors` are different models).
    """

    model: AnyModel
    config: ModelConfig | V2Config
    labels: list[str] | None
    entry: AnyEntry | None
    path: Path
    protocol: ViewProtocol | None
    name: str


@dataclass(frozen=True)
class Conversion:
    """What `convert_checkpoint` read and wrote."""

    source: Path
    destination: Path
    config: ModelConfig | V2Config
    layout: str  # "plain" or the wrapper key: "model_state" (PySlowFast), "model", "state_dict"
    stripped_prefix: bool  # the keys carried DDP's "module." prefix
    inflated: bool  # 2-D ImageNet weights inflated to 3-D
    mmaction: bool  # an MMAction2 checkpoint (`weights.mmaction`): keys mapped, LayerNorm eps kept
    head_order_from: str | None  # MMAction2's label set whose head rows were put in the official order
    parameters: int
    tensors: int
    entry: AnyEntry | None
    v2_layout: str | None = None  # UniFormerV2 keys as found: "pyslowfast", "mmaction", "plain"
    labels: list[str] | None = None  # the class names written with the file
    protocol: ViewProtocol | None = None  # the test protocol written with the file


def convert_checkpoint(
    source: str | Path,
    destination: str | Path,
    *,
    entry: AnyEntry | None = None,
    head_dim: int | None = None,
    source_sha256: str | None = None,
    label_set: str | None = None,
    frames: int | None = None,
) -> Conversion:
    """Read an official / PySlowFast / MMAction2 (UniFormerV2) / 2-D ImageNet checkpoint, check it loads
    strictly into the model it describes, and write it as safetensors with its config (plus the entry's
    labels and protocol when a zoo entry is named, and `source_sha256` when given). Without an entry, a
    UniFormerV2 file takes its class names from `label_set` (a Kinetics-710 head narrowed to a K400, K600
    or K700 set's rows, `narrow_k710_head`) and a test protocol from `frames` (one view of the official
    test loader's sampling, `zoo.v2.released_protocol`). The destination is checked to be writable, with
    room for the file, before the source is read."""
    source, destination = Path(source), Path(destination)
    require_file(source, "checkpoint")
    ensure_writable(destination, "converted weights", needed_bytes=source.stat().st_size)
    raw = read_checkpoint(source)
    head_dim = head_dim if head_dim is not None else raw.head_dim
    if raw.is_image:
        if entry is not None:
            raise CheckpointError(
                f"{source} holds 2-D ImageNet weights, which have no video classes: convert it without --model "
                "(it keeps its 1000-class ImageNet head), or start training from it with `uniformer train`"
            )
        image_model = create_model(infer_config(raw.state_dict, head_dim, source=str(source)))
        load_state_dict_strict(image_model, inflate_image_state_dict(raw.state_dict, image_model), str(source))
        model: AnyModel = image_model
    else:
        model = _model_from_state_dict(
            raw.state_dict, str(source), entry, head_dim=head_dim, norm_eps=raw.norm_eps, hints=raw.v2_hints
        )
    labels, protocol = None, None
    if entry is not None:
        labels, protocol = entry_labels(entry), entry.protocol
    elif label_set is not None or frames is not None:
        if not isinstance(model, UniFormerV2):
            raise UniformerError(
                "--labels and --frames describe UniFormerV2 files; name a v1 file's zoo entry with --model"
            )
        if label_set is not None:
            labels = narrow_k710_head(model, label_set, str(source))
    if entry is None and isinstance(model, UniFormerV2) and protocol is None:
        frames = frames if frames is not None else raw.v2_hints.frames
        if frames is not None:
            protocol = released_protocol(frames, model.config.resolution, sth=raw.v2_hints.sth)
    save_weights(
        destination,
        model,
        model.config,
        labels=labels,
        protocol=protocol.as_dict() if protocol else None,
        source_sha256=source_sha256,
    )
    return Conversion(
        source=source,
        destination=destination,
        config=model.config,
        layout=raw.layout,
        stripped_prefix=raw.stripped_prefix,
        inflated=raw.is_image,
        mmaction=raw.mmaction,
        head_order_from=raw.head_order_from,
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        tensors=len(model.state_dict()),
        entry=entry,
        v2_layout=raw.v2_layout,
        labels=labels,
        protocol=protocol,
    )


def _model_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    source: str,
    entry: AnyEntry | None,
    *,
    config: ModelConfig | V2Config | None = None,
    head_dim: int | None = None,
    norm_eps: float | None = None,
    hints: CfgHints | None = None,
) -> AnyModel:
    """Build the architecture (`config`, else inferred from the tensors: a UniFormerV2 one with the
    PySlowFast cfg's `hints`, a UniFormer one with the LayerNorm epsilon `norm_eps` when the file's
    differs from the official one), check it against the named zoo entry, and load the weights strictly."""
    if config is None and is_v2_state_dict(state_dict):
        return_layers = hints.return_layers if hints is not None else None
        if head_dim is None and isinstance(entry, V2ZooEntry):
            head_dim = entry.config.head_dim
        config = infer_v2_config(state_dict, head_dim, source=source, return_layers=return_layers)
    elif config is None:
        config = infer_config(
            state_dict, head_dim, entry.family if isinstance(entry, ZooEntry) else None, source=source
        )
        if norm_eps is not None:
            config = config.replace(norm_eps=norm_eps)
    if entry is not None and isinstance(entry, V2ZooEntry) != isinstance(config, V2Config):
        family = "a UniFormerV2" if isinstance(config, V2Config) else "a UniFormer (v1)"
        raise CheckpointError(f"{source} holds {family} model, which zoo entry {entry.name} is not")
    if isinstance(entry, V2ZooEntry) and isinstance(config, V2Config):
        check_matches_v2_entry(config, entry, source)
    elif isinstance(entry, ZooEntry) and isinstance(config, ModelConfig):
        check_matches_entry(config, entry, source)
    return _uninitialised_model(config, state_dict, source)


def _uninitialised_model(
    config: ModelConfig | V2Config, state_dict: Mapping[str, torch.Tensor], source: str
) -> AnyModel:
    """The network of `config` holding `state_dict`, checked against it before any memory is taken: it
    is built on the meta device, every key, shape and element type compared with the file's, and then
    handed the file's tensors themselves (cast to the model's element type where they differ): no random
    initialisation (seconds for UniFormer-B), no second copy of the weights, and none of the meta-to-CPU
    machinery (0.26 s of lazy imports in a fresh process). A model with non-persistent buffers is
    initialised normally and loaded by copy."""
    with torch.device("meta"):
        model = create_model(config)
    expected = model.state_dict()
    check_fits(expected, state_dict, source, describe_config(config))
    if {name for name, _ in model.named_buffers()} - set(expected):
        model = create_model(config)
        load_state_dict_strict(model, state_dict, source)
        return model
    storages: set[int] = set()
    owned = {key: _owned(value.to(expected[key].dtype), storages) for key, value in state_dict.items()}
    model.load_state_dict(owned, strict=True, assign=True)
    return model


def _owned(tensor: torch.Tensor, storages: set[int]) -> torch.Tensor:
    """`tensor` if it is the whole of a contiguous storage no other tensor of `storages` uses, else a copy
    that is: loaded views of one storage (a .pth file can hold those) must not tie parameters together."""
    storage = tensor.untyped_storage()
    whole = tensor.storage_offset() == 0 and storage.nbytes() == tensor.numel() * tensor.element_size()
    if whole and tensor.is_contiguous() and storage.data_ptr() not in storages:
        storages.add(storage.data_ptr())
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class ZooDownload:
    """What `fetch_zoo_download` found or fetched for a zoo entry."""

    converted: Path  # the safetensors copy that loads
    download: Path  # the file it was converted from
    source: Source  # where that file came from
    sha256: str | None  # the downloaded file's sha256 (None: a copy converted by an older version)


def fetch_zoo_weights(
    entry: AnyEntry, revision: str | None = None, *, force: bool = False, progress: ProgressCallback | None = None
) -> Path:
    """`fetch_zoo_download(...).converted`."""
    return fetch_zoo_download(entry, revision, force=force, progress=progress).converted


def fetch_zoo_download(
    entry: AnyEntry, revision: str | None = None, *, force: bool = False, progress: ProgressCallback | None = None
) -> ZooDownload:
    """The converted safetensors of a zoo entry: downloaded and converted on first use, reused after.

    The converted copy proves itself before each use (`integrity_problem`: its sha256 against the one
    recorded when it was written); a damaged or unrecorded copy is converted again from the download,
    itself checked against the Hub's sha256 first. A download from another source (`weights.remote`)
    is accepted only when it converts for the entry (its architecture and class count), and its sha256
    is then recorded; `force` downloads it afresh and accepts another sha256. `progress` hears of a
    Google Drive or MMAction2 transfer (huggingface_hub draws its own bar for a Hub download).
    """
    hub_file = hub.download(entry, revision, force=force, progress=progress)
    if hub_file.remote is None and entry.hub_repo is not None:
        remove_stale_downloads(entry.hub_repo)
    converted = hub_file.converted
    source: Source = "hub" if hub_file.remote is None else hub_file.remote.source
    if converted.is_file() and not force:
        problem = integrity_problem(converted)
        if problem is None:
            mark_used(converted)
            return ZooDownload(converted, hub_file.path, source, recorded_source_sha256(converted))
        log.warning("the converted copy %s %s: converting it again from the verified download", converted, problem)
    # One process converts; another asking for the same copy meanwhile waits, then finds it converted.
    with exclusive(build_lock(converted)):
        if converted.is_file() and not force and integrity_problem(converted) is None:
            return ZooDownload(converted, hub_file.path, source, recorded_source_sha256(converted))
        return _convert_download(entry, hub_file, source)


def _convert_download(entry: AnyEntry, hub_file: hub.HubFile, source: Source) -> ZooDownload:
    """Convert a verified download to its cached safetensors copy, and record the copy's sha256."""
    converted = hub_file.converted
    remove_stale_temporaries(converted.parent)
    source_sha256 = hub.verify_download(hub_file, entry)
    log.info(f"converting {hub_file.path.name} to safetensors (once): {converted}")
    try:
        convert_checkpoint(hub_file.path, converted, entry=entry, source_sha256=source_sha256)
    except CheckpointError as error:
        if hub_file.remote is None:
            raise
        raise remote.reject(hub_file.remote, error) from None
    record_integrity(converted, source_sha256)
    if hub_file.remote is not None:
        remote.accept(hub_file.remote)
    return ZooDownload(converted, hub_file.path, source, source_sha256)


def resolve_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "auto",
    revision: str | None = None,
    head_dim: int | None = None,
    zoo_name: str | None = None,
    progress: ProgressCallback | None = None,
) -> LoadedModel:
    """Load a zoo entry (by name or alias), a Hub model repository or a weights file of either family,
    UniFormer (v1) or UniFormerV2, in eval mode on `device` ("auto": CUDA, then MPS, then CPU, as every
    command picks it).

    Which one a name is: `name_kind`. A zoo name downloads through the Hugging Face cache and converts
    once (`fetch_zoo_weights`); a Hub model repository `namespace/name` downloads its converted file
    through the same cache (`fetch_hub_model`). A path loads `.safetensors` (architecture from its
    metadata) or an official `.pth` / `.pyth` (architecture inferred; `head_dim` for custom widths).
    `zoo_name` names the zoo entry a local file belongs to (e.g. a Drive-only checkpoint): the file must
    match it, and its labels and protocol are attached. Labels are never guessed from the class count
    alone. `progress` hears of downloads (`fetch_zoo_download`).
    """
    target = select_device(device) if isinstance(device, str) else device
    kind = name_kind(name_or_path)
    if kind == "file":
        path = fetch_url(str(name_or_path)) if storage.is_url(name_or_path) else Path(name_or_path)
        if revision is not None:
            raise UniformerError(
                "--revision selects a Hub version of a zoo or Hub model; it does not apply to a local file"
            )
        if zoo_name is not None and name_kind(zoo_name) == "hub":
            raise _not_a_zoo_entry(zoo_name)
        entry = find_entry(zoo_name) if zoo_name else None
    else:
        entry = named_entry(str(name_or_path), zoo_name)
        if entry is None:
            path = fetch_hub_model(str(name_or_path), revision).path
        else:
            if head_dim is not None and head_dim != entry.config.head_dim:
                raise UniformerError(f"{entry.name} has head_dim {entry.config.head_dim}; drop --head-dim {head_dim}")
            path = fetch_zoo_weights(entry, revision, progress=progress)
    loaded = _load_file(path, entry, head_dim, name=entry.name if entry else str(name_or_path))
    loaded.model.to(target).eval()
    model = loaded.model
    model.labels = loaded.labels  # type: ignore[assignment]
    model.zoo_entry = loaded.entry  # type: ignore[assignment]
    model.protocol = loaded.protocol  # type: ignore[assignment]
    model.display_name = loaded.name  # type: ignore[assignment]
    return loaded


def load_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "auto",
    revision: str | None = None,
    head_dim: int | None = None,
    zoo_name: str | None = None,
    precision: str | None = None,
) -> nn.Module:
    """`resolve_model(...).model`: eval mode on `device` (default "auto", as `load_predictor` and the CLI),
    with `.labels`, `.zoo_entry`, `.protocol` (pass it to `load_views`) and `.display_name` attributes.

    `precision` None gives the exact model (the official computation, trainable); "fp32", "bf16" or
    "auto" give the fast inference path at that precision (`models.fast.optimize_for_inference`): it takes
    float32 `[B, 3, T, H, W]` clips and returns float32 logits whatever the precision.
    """
    target = select_device(device) if isinstance(device, str) else device
    if precision is not None:
        check_precision(precision, target)
    loaded = resolve_model(name_or_path, device=target, revision=revision, head_dim=head_dim, zoo_name=zoo_name)
    if precision is None:
        return loaded.model
    return optimize_for_inference(loaded.model, inplace=True, precision=precision)


def named_entry(name: str, zoo_name: str | None = None) -> AnyEntry | None:
    """The zoo entry (of either family) a model name (not a local file) names, None for a Hub model
    repository; `zoo_name`, the entry a local file belongs to, must agree with it."""
    if name_kind(name) == "hub":
        if zoo_name is not None:
            raise _not_a_zoo_entry(name)
        return None
    entry = find_entry(name)
    if zoo_name is not None and find_entry(zoo_name) != entry:
        raise UniformerError(f"two different models named: {name} and {zoo_name}")
    return entry


def _not_a_zoo_entry(hub_model: str) -> UniformerError:
    return UniformerError(
        f"{hub_model} is a Hub model, which carries its own labels and protocol: --model names the zoo entry of a "
        "local --weights file, and a zoo entry only"
    )


def fetch_hub_model(repo: str, revision: str | None = None) -> hub.HubModel:
    """A Hub model repository's converted uniformer file in the Hub cache (`hub.hub_model`), checked to be
    one: its safetensors metadata holds the architecture (`uniformer_config`), which a file that
    `uniformer convert`, `train` or `push` wrote always does."""
    found = hub.hub_model(repo, revision)
    if CONFIG_KEY not in read_metadata(found.path):
        raise CheckpointError(
            f"{found.filename} of Hub repository {repo} is not a converted uniformer file (its metadata has no "
            f"{CONFIG_KEY}): convert the checkpoint with `uniformer convert` and upload it with `uniformer push`"
        )
    return found


def _load_file(path: Path, entry: AnyEntry | None, head_dim: int | None, *, name: str) -> LoadedModel:
    source = str(path)
    labels: list[str] | None = None
    protocol: ViewProtocol | None = None
    norm_eps: float | None = None
    hints = None
    if path.suffix.lower() == ".safetensors":
        stored = load_weights(path)
        state_dict, config, labels = stored.state_dict, stored.config, stored.labels
        protocol = ViewProtocol.from_dict(stored.protocol) if stored.protocol is not None else None
        if config is not None and head_dim is not None and head_dim != config.head_dim:
            raise UniformerError(f"{path} was saved with head_dim {config.head_dim}; drop --head-dim {head_dim}")
    else:
        raw = read_checkpoint(path)
        if raw.is_image:
            raise CheckpointError(
                f"{path} holds 2-D ImageNet weights: they start training (`uniformer train`) or can be inflated "
                "with `uniformer convert`, but they do not classify videos"
            )
        state_dict, config, norm_eps, hints = raw.state_dict, None, raw.norm_eps, raw.v2_hints
        head_dim = head_dim if head_dim is not None else raw.head_dim
    model = _model_from_state_dict(
        state_dict, source, entry, config=config, head_dim=head_dim, norm_eps=norm_eps, hints=hints
    )
    if entry is not None:
        labels, protocol = entry_labels(entry), entry.protocol
    return LoadedModel(model, model.config, labels, entry, path, protocol, name)
