"""Reading checkpoints safely, working out their architecture, and fitting them to a model.

Covers keys, checkpoint layouts and 2-D ImageNet inflation (MODEL.md 4, 7 and 8). Everything
here works on plain state_dicts; building models and writing files is `loader.py`'s job.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from uniformer_cli.errors import CheckpointError, UniformerError, first_line
from uniformer_cli.models.config import FAMILIES, ModelConfig
from uniformer_cli.models.config_v2 import V2Config, describe_v2
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.weights import mmaction
from uniformer_cli.weights.checkpoint_v2 import CfgHints, cfg_hints, is_v2_state_dict, v2_model_keys, yacs_sections
from uniformer_cli.weights.header import require_file
from uniformer_cli.zoo import ZooEntry

# Keys under which training checkpoints nest the weights: PySlowFast (`model_state`), DeiT-style
# ImageNet training (`model`), Lightning and many others (`state_dict`).
WRAPPER_KEYS = ("model_state", "model", "state_dict")
DDP_PREFIX = "module."
# Layer-scale init of the three released "ls" light configs (MODEL.md 3.1). Only training from scratch
# reads it; a checkpoint's gammas replace it.
LAYER_SCALE_INIT = 0.1
# How many key names an error message lists before it says "...".
NAMES_SHOWN = 3

_BLOCK_KEY = re.compile(r"^blocks([1-4])\.(\d+)\.")
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@dataclass(frozen=True)
class RawCheckpoint:
    """A state_dict as read from disk, with what the file said about itself."""

    state_dict: dict[str, torch.Tensor]
    layout: str  # "plain", or the wrapper key it was found under: "model_state", "model", "state_dict"
    stripped_prefix: bool  # keys carried the DDP "module." prefix
    head_dim: int | None  # UNIFORMER.HEAD_DIM from a PySlowFast `cfg`, when present
    mmaction: bool = False  # an MMAction2 checkpoint, mapped to official keys (`weights.mmaction`)
    head_order_from: str | None = None  # the label set whose MMAction2 order the head rows were put out of
    norm_eps: float | None = None  # attention LayerNorm epsilon the weights were trained with, when not official
    v2_layout: str | None = None  # UniFormerV2 keys as found: "pyslowfast", "mmaction" or "plain"
    v2_hints: CfgHints = field(default_factory=CfgHints)  # what a UniFormerV2 PySlowFast `cfg` adds

    @property
    def is_image(self) -> bool:
        return is_image_state_dict(self.state_dict)


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read a `.pth` / `.pyth` file with `torch.load(weights_only=True)` and normalise it.

    Files that need arbitrary code to unpickle are refused (the code never runs); the weights are
    unwrapped from `model_state` / `model` / `state_dict`, and a leading `module.` is stripped.
    """
    path = Path(path)
    payload, layout, weights = read_state_dict(path)
    check_tensor_storage(weights, path)
    stripped = any(key.startswith(DDP_PREFIX) for key in weights)
    state_dict = {key.removeprefix(DDP_PREFIX): value for key, value in weights.items()}
    cfg = payload.get("cfg")
    head_dim = cfg_head_dim(cfg) if isinstance(cfg, str) else None
    if is_v2_state_dict(state_dict):  # before MMAction2's v1 layout, whose key rule its V2 port also meets
        v2_state, v2_layout = v2_model_keys(state_dict)
        hints = cfg_hints(cfg) if isinstance(cfg, str) else CfgHints()
        return RawCheckpoint(v2_state, layout, stripped, None, v2_layout=v2_layout, v2_hints=hints)
    if mmaction.is_mmaction(state_dict):
        mapped = mmaction.from_mmaction(state_dict, str(path))
        return RawCheckpoint(mapped.state_dict, layout, stripped, head_dim, True, mapped.label_set, mmaction.NORM_EPS)
    return RawCheckpoint(state_dict, layout, stripped, head_dim)


def read_state_dict(path: Path) -> tuple[Mapping[str, object], str, Mapping[str, torch.Tensor]]:
    """The checked payload of a `.pth` file (module doc of `read_checkpoint`), the wrapper key its weights
    were under ("plain" if none) and the weights: every value a tensor, nothing executed."""
    require_file(path, "checkpoint")
    check_archive(path)
    try:
        payload = load_weights_only(path)
    except pickle.UnpicklingError as error:
        blocked = _BLOCKED_GLOBAL.search(str(error))
        if blocked:
            raise CheckpointError(
                f"refusing to load {path}: it contains Python code or objects ({blocked.group(1)}) that a weights "
                "file does not need and that could run code on this machine; re-save its state_dict alone"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or another format)") from None
    except MemoryError:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: it claims too much memory") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {first_line(error)}") from None
    except Exception:  # the unpickler raises KeyError, IndexError... on garbage: their text means nothing
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or another format)") from None
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state_dict")
    layout, weights = "plain", payload
    for key in WRAPPER_KEYS:
        if isinstance(payload.get(key), Mapping):
            layout, weights = key, payload[key]
            break
    not_tensors = [key for key, value in weights.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path} is not a state_dict: {_few(not_tensors)} are not tensors")
    return payload, layout, weights


# What a PyTorch zip archive may declare before it is opened: its pickle (the structure, with tensor data
# in records beside it) is kilobytes for any real checkpoint, and PyTorch stores every record
# uncompressed, so a compressed record can only inflate what the file holds.
MAX_PICKLE_BYTES = 64 * 2**20
MAX_COMPRESSED_RECORD_BYTES = 64 * 2**20


def check_archive(path: Path) -> None:
    """Refuse a zip-format checkpoint whose records declare more than it can honestly hold (a small file
    whose pickle inflates to gigabytes), from the declared sizes in its directory: nothing is inflated.
    Files in the legacy (pre-zip) format hold no compressed data and pass."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {first_line(error)}") from None
    for record in records:
        pickle_record = record.filename.endswith(".pkl")
        compressed = record.compress_type != zipfile.ZIP_STORED
        if (pickle_record and record.file_size > MAX_PICKLE_BYTES) or (
            compressed and record.file_size > MAX_COMPRESSED_RECORD_BYTES
        ):
            raise CheckpointError(
                f"{path} is malformed: its record {record.filename} declares {record.file_size:,} bytes "
                f"({'compressed, ' if compressed else ''}stored in {record.compress_size:,}); a checkpoint's "
                f"structure takes at most {MAX_PICKLE_BYTES // 2**20} MiB and its tensors are stored uncompressed"
            )


def load_weights_only(path: Path) -> object:
    """`torch.load(weights_only=True)` onto the CPU, memory-mapped where the file allows it (the zip
    format of every PyTorch since 1.6), so reading a file costs no memory until its tensors are used.
    Check the archive first (`check_archive`). torch's warnings about what a file holds (beta sparse
    layouts, deprecated storages) are not shown: what is wrong with a file is said in one line later."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # the legacy (pre-zip) format cannot be mapped: read it
                raise
        return torch.load(path, map_location="cpu", weights_only=True)


def check_tensor_storage(weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors that claim more values than the file stores for them (a view expanded with
    stride 0, e.g. a head of 10**9 rows over one stored row): building a model from their shapes would
    allocate what the file never held. Only plain dense tensors are weights: a sparse, quantized or
    nested tensor (which `weights_only` loading admits) is refused by name, before anything touches it."""
    for key, tensor in weights.items():
        kind = _not_dense(tensor)
        if kind is not None:
            raise CheckpointError(
                f"{path} is malformed: tensor {key} is {kind}, not a dense tensor of values (re-save the weights "
                "with `.to_dense()`)"
            )
        stored = tensor.untyped_storage().nbytes()
        if tensor.numel() * tensor.element_size() > stored:
            raise CheckpointError(
                f"{path} is malformed: tensor {key} {list(tensor.shape)} claims {tensor.numel():,} values but the "
                f"file stores {stored // max(tensor.element_size(), 1):,} for it"
            )


def _not_dense(tensor: torch.Tensor) -> str | None:
    """What a loaded tensor is, in words, unless it is a plain dense CPU tensor (None)."""
    if tensor.is_nested:
        return "a nested tensor"
    if tensor.layout != torch.strided:
        return f"a sparse tensor ({str(tensor.layout).removeprefix('torch.')})"
    if tensor.is_quantized:
        return "a quantized tensor"
    if tensor.device.type != "cpu":
        return f"a tensor on the {tensor.device.type} device"
    return None


def cfg_head_dim(cfg_text: str) -> int | None:
    """`UNIFORMER.HEAD_DIM` from a PySlowFast YAML dump (yacs' `cfg.dump()`, `yacs_sections`)."""
    value = yacs_sections(cfg_text).get("UNIFORMER", {}).get("HEAD_DIM")
    try:
        return int(value) if isinstance(value, str) else None
    except ValueError:
        return None


def is_image_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """A 2-D (ImageNet) UniFormer: its first convolution has a 4-D kernel."""
    stem = state_dict.get("patch_embed1.proj.weight", state_dict.get("patch_embed1.proj.0.weight"))
    return stem is not None and stem.ndim == 4


def light_keep_ratios(depth3: int, depth4: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Token keep ratios of a light model's stages 3 and 4 (they are not stored in checkpoints).

    The rule of every released light model: stage 3 keeps all tokens in its first block and half in
    each later one, `[1, 0.5, ...]`; stage 4 keeps half in every block. It gives exactly the released
    XXS / XS ratios at their depths, and is what a checkpoint of any other depth is assumed to use.
    """
    return (1.0,) + (0.5,) * (depth3 - 1), (0.5,) * depth4


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    head_dim: int | None = None,
    family_hint: str | None = None,
    *,
    source: str = "the checkpoint",
) -> ModelConfig:
    """The architecture of a video (or 2-D image) UniFormer state_dict, read from its tensors.

    Depth, widths, classes, MLP ratio, qkv bias, light vs S/B, layer scale, split and std all follow
    from the keys and shapes (MODEL.md 4.3). The attention head width does not: it is `head_dim` when
    given (the caller passes `--head-dim` or the PySlowFast cfg's value), else that of the `family_hint`
    family (a `FAMILIES` key, e.g. from `--model`), else that of the released family with the same
    widths; otherwise the user is asked for `--head-dim`. `source` names the file in error messages.
    """
    light = "cls_token" in state_dict
    stem_key = "patch_embed1.proj.3.weight" if light else "patch_embed1.proj.weight"
    width_keys = (stem_key, *(f"patch_embed{stage}.proj.weight" for stage in (2, 3, 4)))
    mlp_keys = tuple(f"blocks{stage}.0.mlp.fc1.weight" for stage in (1, 2, 3, 4))
    absent = [key for key in (*width_keys, *mlp_keys, "head.weight") if key not in state_dict]
    if absent:
        raise CheckpointError(f"{source} is not a UniFormer checkpoint: it has no {_few(absent)}")
    flat = [key for key in (*width_keys, *mlp_keys, "head.weight") if state_dict[key].ndim < 2]
    if flat:
        raise CheckpointError(f"{source} is malformed: {_few(flat)} should be matrices or kernels")
    w1, w2, w3, w4 = (int(state_dict[key].shape[0]) for key in width_keys)
    embed_dim = (w1, w2, w3, w4)
    if min(embed_dim) < 1:
        raise CheckpointError(f"{source} is malformed: a stage has width {min(embed_dim)}")
    depth = _block_counts(state_dict, source)
    mlp_ratio = state_dict[mlp_keys[0]].shape[0] / embed_dim[0]
    for stage, (width, key) in enumerate(zip(embed_dim, mlp_keys, strict=True), start=1):
        hidden = state_dict[key].shape[0]
        if hidden != int(width * mlp_ratio):
            raise CheckpointError(
                f"unsupported checkpoint: MLP widths are not one ratio of the stage widths (stage {stage}: "
                f"{hidden} for width {width}, stage 1 ratio {mlp_ratio:g})"
            )
    try:
        return _inferred_config(state_dict, light, embed_dim, depth, mlp_ratio, head_dim, family_hint)
    except CheckpointError:
        raise
    except UniformerError as error:  # a value out of range: the file is not a model we can build
        raise CheckpointError(f"{source} is not a usable UniFormer checkpoint: {error}") from None


def _inferred_config(
    state_dict: Mapping[str, torch.Tensor],
    light: bool,
    embed_dim: tuple[int, int, int, int],
    depth: tuple[int, int, int, int],
    mlp_ratio: float,
    head_dim: int | None,
    family_hint: str | None,
) -> ModelConfig:
    layer_scale = LAYER_SCALE_INIT if any(key.endswith(".gamma_1") for key in state_dict) else None
    pe2 = state_dict["patch_embed2.proj.weight"]
    keep3, keep4 = light_keep_ratios(depth[2], depth[3]) if light else ((), ())
    return ModelConfig(
        arch="light" if light else "uniformer",
        depth=depth,
        embed_dim=embed_dim,
        head_dim=_head_dim(embed_dim, light, head_dim, family_hint),
        mlp_ratio=mlp_ratio,
        qkv_bias="blocks3.0.attn.qkv.bias" in state_dict,
        num_classes=int(state_dict["head.weight"].shape[0]),
        split=any(".t_attn." in key for key in state_dict),
        std=pe2.ndim == 5 and pe2.shape[2] == 3,
        layer_scale=layer_scale,
        keep_ratio3=keep3,
        keep_ratio4=keep4,
    )


def _block_counts(state_dict: Mapping[str, torch.Tensor], source: str) -> tuple[int, int, int, int]:
    indices: dict[int, set[int]] = {stage: set() for stage in (1, 2, 3, 4)}
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match:
            indices[int(match.group(1))].add(int(match.group(2)))
    for stage, found in indices.items():
        if found and found != set(range(len(found))):
            raise CheckpointError(
                f"{source} is not a UniFormer checkpoint: blocks{stage} indices are not 0..{len(found) - 1}"
            )
    counts = [len(indices[stage]) for stage in (1, 2, 3, 4)]
    return counts[0], counts[1], counts[2], counts[3]


def _head_dim(embed_dim: tuple[int, ...], light: bool, head_dim: int | None, family_hint: str | None) -> int:
    if head_dim is not None:
        return head_dim
    if family_hint is not None:
        return FAMILIES[family_hint].head_dim
    arch = "light" if light else "uniformer"
    for family in FAMILIES.values():
        if family.arch == arch and family.embed_dim == embed_dim:
            return family.head_dim
    raise CheckpointError(
        f"cannot tell the attention head width of a custom checkpoint (widths {list(embed_dim)}): it is not "
        "stored in the weights; pass --head-dim N (released models: S/B 64, XXS 28, XS 32)"
    )


def describe_config(config: ModelConfig | V2Config) -> str:
    """One line naming an architecture, for messages and tables."""
    if isinstance(config, V2Config):
        return describe_v2(config)
    name = "UniFormer-light" if config.arch == "light" else "UniFormer"
    return (
        f"{name} (depth {'-'.join(map(str, config.depth))}, widths {'-'.join(map(str, config.embed_dim))}, "
        f"{config.num_classes} classes)"
    )


def check_matches_entry(config: ModelConfig, entry: ZooEntry, source: str) -> None:
    """Refuse a checkpoint whose architecture is not the one the named zoo entry describes.

    Everything but the class count must equal the entry's family; the class count may be the label
    set's or the entry's head size (the HMDB51 head may carry 101 rows, MODEL.md 6.2).
    """
    expected = entry.config
    fields = ("arch", "depth", "embed_dim", "mlp_ratio", "qkv_bias", "split", "std")
    differs = [name for name in fields if getattr(config, name) != getattr(expected, name)]
    if (config.layer_scale is None) != (expected.layer_scale is None):
        differs.append("layer_scale")
    if differs or config.num_classes not in (expected.num_classes, entry.num_classes):
        raise CheckpointError(
            f"{source} holds a {describe_config(config)}, but zoo entry {entry.name} is a "
            f"{describe_config(expected)}; check --model, or drop it to load the file on its own"
        )


# The element types a weights file may hold: real floating point values for parameters and float
# buffers, integers for counters (BatchNorm's num_batches_tracked). Anything else (complex, bool,
# quantized, float8) would be cast silently, or would lose part of its value (a complex's imaginary part).
REAL_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
INTEGERS = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})


@dataclass(frozen=True)
class TensorInfo:
    """The shape and element type of a tensor, read from a file's header or a (meta) tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorInfo:
        return cls(tuple(tensor.shape), tensor.dtype)


def check_fits(
    expected: Mapping[str, torch.Tensor | TensorInfo],
    found: Mapping[str, torch.Tensor | TensorInfo],
    source: str,
    target: str,
) -> None:
    """Every key of `expected` (a model's state_dict, usually on the meta device) is in `found` with the
    same shape and a compatible element type, and nothing else is: one line naming a few mismatches.
    Run before a model is allocated, so a file's claims cost nothing until they are checked."""
    want = {key: value if isinstance(value, TensorInfo) else TensorInfo.of(value) for key, value in expected.items()}
    have = {key: value if isinstance(value, TensorInfo) else TensorInfo.of(value) for key, value in found.items()}
    missing = [key for key in want if key not in have]
    unexpected = [key for key in have if key not in want]
    mis_shaped = [
        f"{key} {list(have[key].shape)} vs {list(want[key].shape)}"
        for key in want
        if key in have and have[key].shape != want[key].shape
    ]
    mis_typed = [
        f"{key} {str(have[key].dtype).removeprefix('torch.')}"
        for key in want
        if key in have and have[key].dtype not in (REAL_FLOATS if want[key].dtype.is_floating_point else INTEGERS)
    ]
    problems = _summarise(
        (missing, "missing keys"),
        (unexpected, "unexpected keys"),
        (mis_shaped, "keys of another shape (file vs model)"),
        (mis_typed, "keys of an unsupported element type (real floats and integers only)"),
    )
    if problems:
        raise CheckpointError(f"{source} does not fit {target}: {problems}")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with one readable line naming a few mismatched keys instead of
    PyTorch's multi-line report (a non-strict load would hide a wrong checkpoint, MODEL.md 11)."""
    check_fits(model.state_dict(), state_dict, source, model_name(model))
    model.load_state_dict(state_dict, strict=True)


def model_name(model: nn.Module) -> str:
    """How messages name a network: its architecture when it is one of ours."""
    config = getattr(model, "config", None)
    return describe_config(config) if isinstance(config, ModelConfig | V2Config) else type(model).__name__


def inflate_image_state_dict(
    image_state_dict: Mapping[str, torch.Tensor], video_model: nn.Module
) -> dict[str, torch.Tensor]:
    """A complete state_dict for `video_model` from 2-D ImageNet weights, as the official loader builds
    it (MODEL.md 8).

    A 2-D kernel `[O, I, k, k]` becomes `[O, I, t, k, k]`: repeated over the video kernel's t frames and
    divided by t, so a temporally constant input gives the 2-D response. Equal shapes copy as they are
    (so 3-D weights pass through: video-to-video fine-tuning uses the same rule). The classifier heads
    keep the video model's values when the class counts differ, as do keys the image model cannot
    have (layer-scale gammas, split attention's `t_*`). Any other missing, unexpected or incompatible
    key is an error naming it, never a silent partial load.
    """
    target = video_model.state_dict()
    prefixes = video_model.head_prefixes if isinstance(video_model, VideoNetwork) else ("head.", "head_cls.")
    heads = {key for key in target if key.startswith(prefixes)}
    drop_heads = any(key in image_state_dict and image_state_dict[key].shape != target[key].shape for key in heads)
    unexpected = [key for key in image_state_dict if key not in target]
    missing = [key for key in target if key not in image_state_dict and not _video_only_key(key) and key not in heads]
    result: dict[str, torch.Tensor] = {}
    incompatible = []
    for key, video in target.items():
        image = image_state_dict.get(key)
        if image is None or (drop_heads and key in heads):
            result[key] = video
        elif image.shape == video.shape:
            result[key] = image.to(video.dtype)
        elif image.ndim == 4 and video.ndim == 5 and video.shape[:2] + video.shape[3:] == image.shape:
            frames = video.shape[2]
            result[key] = image.to(video.dtype).unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
        else:
            incompatible.append(f"{key} {list(image.shape)} vs {list(video.shape)}")
    problems = _summarise(
        (missing, "keys missing from the image weights"),
        (unexpected, "keys the video model does not have"),
        (incompatible, "keys that cannot be inflated (image vs video)"),
    )
    if problems:
        raise CheckpointError(f"these image weights do not fit the video model: {problems}")
    return result


def _video_only_key(key: str) -> bool:
    """Keys an image checkpoint legitimately lacks: they keep the video model's initialisation."""
    return key.endswith((".gamma_1", ".gamma_2")) or ".t_attn." in key or ".t_norm." in key


def _summarise(*groups: tuple[list[str], str]) -> str:
    """The non-empty groups as one clause each, e.g. `2 missing keys (a, b); 1 unexpected keys (c)`."""
    return "; ".join(f"{len(keys)} {what} ({_few(keys)})" for keys, what in groups if keys)


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (", ..." if len(names) > NAMES_SHOWN else "")
