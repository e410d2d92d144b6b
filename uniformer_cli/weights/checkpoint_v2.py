"""UniFormerV2 checkpoints: recognising them, bringing their keys to the model's, and reading the
architecture from their shapes (docs/MODEL.md, "UniFormerV2", "Checkpoints").

Two layouts are read (after `checkpoint.read_checkpoint` has unwrapped `model_state` / `state_dict` and
stripped DDP's `module.`):
- the official PySlowFast files (OpenGVLab/UniFormerV2, `.pyth`): every key under `backbone.`, the
  head in `backbone.transformer.proj.{0,2}`;
- MMAction2's (open-mmlab/mmaction2 `UniFormerV2` + `UniFormerHead`): `backbone.` keys whose final
  LayerNorm is `transformer.norm`, and the classifier in `cls_head.fc_cls`.
Both become the model's keys (the official ones without `backbone.`). Kept apart from the v1 readers
so that each family's rules stay in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.models.config_v2 import LOCAL_MHRA, LocalMhra, V2Config, describe_v2, last_layers
from uniformer_cli.models.uniformerv2 import UniFormerV2
from uniformer_cli.zoo import k710_rows, load_labels
from uniformer_cli.zoo.v2 import V2_LABEL_SET_SIZES, V2ZooEntry

BACKBONE = "backbone."
# A key only UniFormerV2 (and the CLIP ViT it extends) has: the first block's attention input projection.
MARKER = "transformer.resblocks.0.attn.in_proj_weight"
# MMAction2's names for the official head: its backbone ends in `norm`, its classifier is `cls_head.fc_cls`.
MMACTION_RENAMES = {
    "transformer.norm.weight": "transformer.proj.0.weight",
    "transformer.norm.bias": "transformer.proj.0.bias",
    "cls_head.fc_cls.weight": "transformer.proj.2.weight",
    "cls_head.fc_cls.bias": "transformer.proj.2.bias",
}
# The official local MHRA keeps int(width // 1.5) channels (DW_REDUCTION 1.5 in every released config).
MHRA_REDUCTION = 1.5
_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")
_DECODER = re.compile(r"^transformer\.dec\.(\d+)\.")
_DPE = re.compile(r"^transformer\.dpe\.(\d+)\.")


def is_v2_state_dict(state_dict: Mapping[str, object]) -> bool:
    """Whether the keys are UniFormerV2's (official, MMAction2's or the model's own)."""
    return MARKER in state_dict or BACKBONE + MARKER in state_dict


def v2_model_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict under the model's keys, and which layout it came in: "pyslowfast" (`backbone.`
    keys), "mmaction" (`backbone.` + `cls_head.`), or "plain" (already the model's keys)."""
    if BACKBONE + MARKER not in state_dict:
        return dict(state_dict), "plain"
    stray = [key for key in state_dict if not key.startswith((BACKBONE, "cls_head."))]
    if stray:
        raise CheckpointError(
            f"a UniFormerV2 checkpoint has keys outside backbone. and cls_head.: {', '.join(stray[:3])}"
        )
    keys = {key.removeprefix(BACKBONE): value for key, value in state_dict.items()}
    mmaction = any(key.startswith("cls_head.") for key in keys) or "transformer.norm.weight" in keys
    if not mmaction:
        return keys, "pyslowfast"
    return {MMACTION_RENAMES.get(key, key): value for key, value in keys.items()}, "mmaction"


@dataclass(frozen=True)
class CfgHints:
    """What a PySlowFast checkpoint's `cfg` (its yacs config dump) says that the shapes cannot."""

    return_layers: tuple[int, ...] | None = None  # UNIFORMERV2.RETURN_LIST
    frames: int | None = None  # DATA.NUM_FRAMES
    sth: bool = False  # TEST.DATASET is the Something-Something frame loader


def yacs_sections(text: str) -> dict[str, dict[str, str | list[str]]]:
    """A yacs `cfg.dump()` read without a YAML dependency: top-level sections at column 0, their keys
    indented below, a value after the colon or a block of `- item` lines; `[a, b]` lists split."""
    sections: dict[str, dict[str, str | list[str]]] = {}
    section: dict[str, str | list[str]] | None = None
    key = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace() and not stripped.startswith("- "):
            section = sections.setdefault(stripped.partition(":")[0].strip(), {})
        elif section is not None and stripped.startswith("- "):
            items = section.get(key)
            if isinstance(items, list):
                items.append(stripped[2:].strip())
        elif section is not None:
            key, _, value = stripped.partition(":")
            key, value = key.strip(), value.strip()
            if value.startswith("[") and value.endswith("]"):
                section[key] = [item.strip() for item in value[1:-1].split(",") if item.strip()]
            else:
                section[key] = value if value else []
    return sections


def cfg_hints(cfg_text: str) -> CfgHints:
    """The decoder's input blocks, the frame count and the test loader from a PySlowFast `cfg` text;
    what is absent or unreadable stays None."""
    sections = yacs_sections(cfg_text)
    returns = sections.get("UNIFORMERV2", {}).get("RETURN_LIST")
    frames = sections.get("DATA", {}).get("NUM_FRAMES")
    dataset = sections.get("TEST", {}).get("DATASET")
    try:
        return_layers = tuple(int(item) for item in returns) if isinstance(returns, list) and returns else None
        count = int(frames) if isinstance(frames, str) else None
    except ValueError:
        return CfgHints()
    return CfgHints(return_layers, count if count and count > 0 else None, dataset == "sth")


def infer_v2_config(
    state_dict: Mapping[str, torch.Tensor],
    head_dim: int | None = None,
    *,
    source: str = "the checkpoint",
    return_layers: tuple[int, ...] | None = None,
) -> V2Config:
    """The architecture of a UniFormerV2 state_dict (the model's keys), read from its shapes.

    Patch size, width and temporal downsampling come from `conv1`, the resolution from the number of
    positions, the depth from the blocks, local MHRA from the `lmhra1` / `lmhra2` keys, the decoder's
    depth and MLP width from `dec`, the classes from the head, "frozen" from the absence of `balance`.
    Two things are not in the shapes: the attention head width (`head_dim`, 64 in every release) and
    which blocks feed the decoder (`return_layers`, e.g. a PySlowFast `cfg`'s RETURN_LIST; else the last
    ones, as in every released config).
    """
    needed = ("conv1.weight", "positional_embedding", "transformer.proj.2.weight", "transformer.dec.0.mlp.c_fc.weight")
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise CheckpointError(f"{source} is not a complete UniFormerV2 checkpoint: it has no {', '.join(absent)}")
    conv1, positions = state_dict["conv1.weight"], state_dict["positional_embedding"]
    if conv1.ndim != 5 or conv1.shape[1] != 3 or conv1.shape[3] != conv1.shape[4] or positions.ndim != 2:
        raise CheckpointError(f"{source} is malformed: conv1 {list(conv1.shape)}, positions {list(positions.shape)}")
    width, kernel_t, patch = int(conv1.shape[0]), int(conv1.shape[2]), int(conv1.shape[3])
    if kernel_t not in (1, 3):
        raise CheckpointError(f"unsupported UniFormerV2 checkpoint: a patch embedding {kernel_t} frames deep")
    grid = round((positions.shape[0] - 1) ** 0.5)
    if grid * grid + 1 != positions.shape[0] or positions.shape[1] != width:
        raise CheckpointError(f"{source} is malformed: {positions.shape[0]} positions is not a square grid plus one")
    layers = _count(state_dict, _BLOCK, "transformer.resblocks", source)
    decoders = _count(state_dict, _DECODER, "transformer.dec", source)
    if _count(state_dict, _DPE, "transformer.dpe", source) != decoders:
        raise CheckpointError(f"{source} is malformed: the decoder's position encodings do not match its layers")
    if decoders > layers:
        raise CheckpointError(f"{source} is malformed: {decoders} decoder layers for {layers} blocks")
    if return_layers is not None and len(return_layers) != decoders:
        raise CheckpointError(
            f"{source}: its cfg's RETURN_LIST names {len(return_layers)} blocks for {decoders} decoder layers"
        )
    given, head_dim = head_dim is not None, 64 if head_dim is None else head_dim
    if width % head_dim:
        hint = "" if given else " (the released one; it is not stored in the weights): pass --head-dim N"
        raise CheckpointError(f"{source}: width {width} is not a multiple of the head width {head_dim}{hint}")
    head = state_dict["transformer.proj.2.weight"]
    hidden = int(state_dict["transformer.dec.0.mlp.c_fc.weight"].shape[0])
    try:
        return V2Config(
            patch_size=patch,
            resolution=grid * patch,
            width=width,
            layers=layers,
            head_dim=head_dim,
            return_layers=return_layers if return_layers is not None else last_layers(layers, decoders),
            decoder_mlp_ratio=hidden / width,
            local_mhra=_local_mhra(state_dict, layers, width, source),
            mhra_reduction=MHRA_REDUCTION,
            temporal_downsample=kernel_t == 3,
            frozen="transformer.balance" not in state_dict,
            num_classes=int(head.shape[0]),
        )
    except UniformerError as error:  # a width not divisible by the head width, a size out of range...
        raise CheckpointError(f"{source} is not a usable UniFormerV2 checkpoint: {error}") from None


def _count(state_dict: Mapping[str, torch.Tensor], pattern: re.Pattern[str], what: str, source: str) -> int:
    found = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    if found != set(range(len(found))):
        raise CheckpointError(f"{source} is not a UniFormerV2 checkpoint: {what} indices are not 0..{len(found) - 1}")
    return len(found)


def _local_mhra(state_dict: Mapping[str, torch.Tensor], layers: int, width: int, source: str) -> LocalMhra:
    """ "off", "single" or "double", the same in every block, with the official reduced width."""
    kinds = {
        sum(f"transformer.resblocks.{i}.lmhra{n}.pos_embed.1.weight" in state_dict for n in (1, 2))
        for i in range(layers)
    }
    if len(kinds) != 1:
        raise CheckpointError(f"unsupported UniFormerV2 checkpoint: local MHRA in some blocks only ({source})")
    kind = kinds.pop()
    if kind:
        reduced = int(state_dict["transformer.resblocks.0.lmhra1.pos_embed.1.weight"].shape[0])
        if reduced != int(width // MHRA_REDUCTION):
            raise CheckpointError(
                f"unsupported UniFormerV2 checkpoint: local MHRA of {reduced} channels for width {width} (the "
                f"official {int(width // MHRA_REDUCTION)})"
            )
    return LOCAL_MHRA[kind]


# What a file's architecture must share with the zoo entry it is loaded as (dropout rates do not matter).
_STRUCTURE = (
    "patch_size",
    "resolution",
    "width",
    "layers",
    "head_dim",
    "return_layers",
    "decoder_mlp_ratio",
    "local_mhra",
    "mhra_reduction",
    "temporal_downsample",
    "frozen",
    "num_classes",
)


def check_matches_v2_entry(config: V2Config, entry: V2ZooEntry, source: str) -> None:
    """Refuse a UniFormerV2 checkpoint whose architecture is not the named zoo entry's."""
    expected = entry.config
    differs = [name for name in _STRUCTURE if getattr(config, name) != getattr(expected, name)]
    if differs:
        raise CheckpointError(
            f"{source} holds a {describe_v2(config)}, but zoo entry {entry.name} is a {describe_v2(expected)} "
            f"({', '.join(differs)} differ); check --model, or drop it to load the file on its own"
        )


def narrow_k710_head(model: UniFormerV2, label_set: str, source: str) -> list[str]:
    """Give `model` the class names of `label_set`; a Kinetics-710 head (710 rows, MMAction2's `k710`
    order) asked for a Kinetics-400, -600 or -700 set keeps only that set's rows, in its order (MMAction2's
    channel maps, `zoo.k710_rows`), so that it classifies that dataset. Returns the names."""
    names = load_labels(label_set)
    classes = model.config.num_classes
    if classes == len(names):
        return names
    if classes != V2_LABEL_SET_SIZES["k710"]:
        raise CheckpointError(f"{source} has {classes} classes; label set {label_set} names {len(names)}")
    rows = torch.tensor(k710_rows(label_set))
    head = model.head
    narrowed = nn.Linear(head.in_features, len(rows), device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        narrowed.weight.copy_(head.weight[rows])
        narrowed.bias.copy_(head.bias[rows])
    model.transformer.proj[2] = narrowed
    model.config = model.config.replace(num_classes=len(rows))
    return names
