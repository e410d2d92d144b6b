"""CLIP ViT weights: where every UniFormerV2 training run from scratch of the video parts starts
(`uniformer train --arch v2-b16`, docs/MODEL.md "UniFormerV2", "Training from CLIP").

The official code builds the backbone from OpenAI's CLIP visual encoder (OpenGVLab/UniFormerV2,
`extract_clip/extract.ipynb`: the `visual.` weights without `proj` and `ln_post`, keys as CLIP names them,
which are UniFormerV2's own) and loads them non-strictly, inflating the 2-D patch embedding to the 3-D one
with its weights at the centre frame and zeros elsewhere (`slowfast/models/uniformerv2_model.py`,
`inflate_weight`); everything UniFormerV2 adds (local MHRA, the decoder, the head) keeps its own
initialisation. This module reads such weights in three layouts:

- OpenAI's whole CLIP model (`visual.` keys beside the text tower's): timm's Hub copies
  (`zoo.v2.CLIP_WEIGHTS`);
- the official extract (the same names without `visual.`);
- timm's ViT (`patch_embed.proj`, `cls_token`, `pos_embed`, `norm_pre`, `blocks.N.attn.qkv`...).

Every backbone weight must be there with its shape: a CLIP of another size or resolution is one error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from uniformer_cli.errors import CheckpointError, first_line
from uniformer_cli.models.uniformerv2 import UniFormerV2
from uniformer_cli.weights.checkpoint import check_tensor_storage, read_state_dict
from uniformer_cli.weights.header import require_file

# timm's names -> CLIP's, applied in order to each key (timm's own conversion, run backwards).
TIMM_TO_CLIP = (
    ("patch_embed.proj", "conv1"),
    ("norm_pre", "ln_pre"),
    ("blocks.", "transformer.resblocks."),
    ("norm1", "ln_1"),
    ("norm2", "ln_2"),
    ("attn.qkv.", "attn.in_proj_"),
    ("attn.proj", "attn.out_proj"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)
# The backbone parts of a block that come from CLIP (local MHRA is UniFormerV2's own).
BLOCK_PARTS = (".attn.", ".ln_1.", ".mlp.", ".ln_2.")


def read_clip_weights(path: Path) -> dict[str, torch.Tensor]:
    """A CLIP checkpoint (`.bin` / `.pth` / `.pt`, or `.safetensors`) as CLIP-named visual weights."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        require_file(path, "CLIP weights")
        try:
            weights: Mapping[str, torch.Tensor] = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file: {first_line(error)}") from None
    else:
        _, _, weights = read_state_dict(path)
        check_tensor_storage(weights, path)
    return clip_names(weights, str(path))


def clip_names(weights: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The visual encoder's weights under CLIP's names, from any of the three layouts (module doc)."""
    if "visual.class_embedding" in weights:  # OpenAI's whole model
        return {key.removeprefix("visual."): value for key, value in weights.items() if key.startswith("visual.")}
    if "class_embedding" in weights:  # the official extract
        return dict(weights)
    if "cls_token" in weights and "pos_embed" in weights:  # timm's ViT
        renamed = {}
        for key, value in weights.items():
            if key == "cls_token":
                key, value = "class_embedding", value.reshape(-1)
            elif key == "pos_embed":
                key, value = "positional_embedding", value.reshape(value.shape[-2], value.shape[-1])
            for old, new in TIMM_TO_CLIP:
                key = key.replace(old, new)
            renamed[key] = value
        return renamed
    raise CheckpointError(
        f"{source} is not a CLIP ViT checkpoint: it has no class embedding (visual.class_embedding, "
        "class_embedding or cls_token)"
    )


def clip_backbone_state(clip: Mapping[str, torch.Tensor], model: UniFormerV2, source: str) -> dict[str, torch.Tensor]:
    """`model`'s state_dict with its CLIP backbone replaced by `clip`'s weights (the patch embedding
    inflated; module doc); the rest keeps the model's values."""
    target = model.state_dict()
    backbone = [key for key in target if _from_clip(key)]
    missing = [key for key in backbone if key not in clip]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise CheckpointError(
            f"{source} does not fit {model.config.layers} CLIP blocks of width {model.config.width}: it has no {shown}"
        )
    state = dict(target)
    wrong = []
    for key in backbone:
        weight, expected = clip[key], target[key]
        if key == "conv1.weight" and weight.ndim == 4 and expected.ndim == 5:
            weight = _inflated(weight, expected.shape[2])
        if weight.shape != expected.shape:
            wrong.append(f"{key} {list(weight.shape)} vs {list(expected.shape)}")
        state[key] = weight.to(expected.dtype)
    if wrong:
        raise CheckpointError(f"{source} is another CLIP than this UniFormerV2's: {'; '.join(wrong[:3])}")
    return state


def load_clip_backbone(model: UniFormerV2, path: Path) -> None:
    """Start `model`'s backbone from the CLIP weights in `path` (module doc)."""
    model.load_state_dict(clip_backbone_state(read_clip_weights(path), model, str(path)), strict=True)


def _from_clip(key: str) -> bool:
    if key.startswith(("conv1.", "class_embedding", "positional_embedding", "ln_pre.")):
        return True
    return key.startswith("transformer.resblocks.") and any(part in key for part in BLOCK_PARTS)


def _inflated(weight: torch.Tensor, frames: int) -> torch.Tensor:
    """A 2-D kernel `[O, I, k, k]` as `[O, I, frames, k, k]`: itself at the centre frame, zeros elsewhere
    (a 1-frame kernel is the 2-D one)."""
    inflated = weight.new_zeros(weight.shape[0], weight.shape[1], frames, *weight.shape[2:])
    inflated[:, :, frames // 2] = weight
    return inflated
