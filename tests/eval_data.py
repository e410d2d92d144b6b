"""Test helpers for evaluation: tiny videos and JPEG frame folders of one flat colour (written with PyAV), and
a tiny UniFormer whose prediction is forced by the mean of one input channel.

The forced model: every block's parameters are zero, so each residual branch adds exactly zero and every
block is the identity. Patch embedding 1 writes `[v, -v, 1, -1, 0, ...]` per token, where `v` is the mean
of input channel 0 over the patch; patch embeddings 2-4 average those four channels over their 2x2
patches, keeping the pattern. LayerNorm of a zero-mean pattern only rescales it, so the final features
are `s * [v, -v, 1, -1]` with `s > 0`, and head row `k` = `(2 c_k, 0, -c_k^2)` gives logit
`s * (v^2 - (v - c_k)^2)`: the classes rank by the distance of their centre `c_k` from `v`.

`colour_model_v2` forces a UniFormerV2 (frozen design: the head reads the decoder's token) the same way:
the patch embedding writes `v, -v` and the position embedding `1, -1` into channels 0-3 of every patch
token; every backbone block and the decoder's MLPs add zero; each decoder layer's attention, with zero
query and key weights, averages the tokens' first four channels into the query (class tokens add zero);
LayerNorms only rescale the zero-mean pattern, and the head rows are the ones above.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from synthetic_video import write_frame_folder, write_video

from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.models.config_v2 import V2Config

TINY_V2 = V2Config(patch_size=8, resolution=32, width=16, layers=2, head_dim=8, return_layers=(0, 1), frozen=True)

TINY = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(8, 8, 16, 16), head_dim=8)
# Class centres (normalised input values) one step apart, so the ranks are never close to a tie.
CENTRES = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]


def colour_model(centres: Sequence[float] = CENTRES) -> torch.nn.Module:
    model = create_model(TINY.replace(num_classes=len(centres))).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("blocks"):
                parameter.zero_()
        embed = model.patch_embed1.proj
        embed.weight.zero_()
        embed.bias.zero_()
        taps = embed.weight.shape[-1] * embed.weight.shape[-2]
        embed.weight[0, 0, 1] = 1 / taps  # the centre temporal tap, so zero padding in time does not matter
        embed.weight[1, 0, 1] = -1 / taps
        embed.bias[2], embed.bias[3] = 1.0, -1.0
        for stage in (2, 3, 4):
            proj = getattr(model, f"patch_embed{stage}").proj
            proj.weight.zero_()
            proj.bias.zero_()
            for channel in range(4):
                proj.weight[channel, channel] = 1 / (proj.weight.shape[-1] * proj.weight.shape[-2])
        model.head.weight.zero_()
        model.head.bias.zero_()
        for row, centre in enumerate(centres):
            model.head.weight[row, 0] = 2 * centre
            model.head.weight[row, 2] = -(centre**2)
    return model


def colour_model_v2(centres: Sequence[float] = CENTRES) -> torch.nn.Module:
    """The forced UniFormerV2 (module doc)."""
    model = create_model(TINY_V2.replace(num_classes=len(centres))).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
        taps = model.conv1.weight.shape[-1] * model.conv1.weight.shape[-2]
        model.conv1.weight[0, 0] = 1 / taps
        model.conv1.weight[1, 0] = -1 / taps
        model.positional_embedding[1:, 2], model.positional_embedding[1:, 3] = 1.0, -1.0
        width = TINY_V2.width
        for layer in model.transformer.dec:
            for channel in range(4):
                layer.attn.in_proj_weight[2 * width + channel, channel] = 1.0  # v: the first four channels
                layer.attn.out_proj.weight[channel, channel] = 1.0
        for row, centre in enumerate(centres):
            model.head.weight[row, 0] = 2 * centre
            model.head.weight[row, 2] = -(centre**2)
    return model


def level(value: float) -> int:
    """The uint8 level whose normalised value is closest to `value`."""
    levels = (np.arange(256) / 255 - 0.45) / 0.225  # PROTOCOLS.md 1.1
    return int(np.argmin(np.abs(levels - value)))


def colour(first: float, third: float = 0.0) -> tuple[int, int, int]:
    """An RGB colour whose channel 0 (R) reads `first` and channel 2 (B) reads `third` once normalised."""
    return level(first), 128, level(third)


def ranking(value: float, centres: Sequence[float] = CENTRES) -> list[int]:
    """Classes by distance of their centre from `value`: the forced model's ranking, computed directly."""
    return sorted(range(len(centres)), key=lambda k: abs(centres[k] - value))


def flat_video(path: Path, rgb: tuple[int, int, int], frames: int = 12, size: tuple[int, int] = (48, 40)) -> Path:
    """A flat-colour video (`size` = width, height); VP9 for `.webm`, else H.264."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = flat_image(rgb, size)
    codec = "libvpx-vp9" if path.suffix == ".webm" else "libx264"
    return write_video(path, frames, fps=12, frame=lambda _: image, codec=codec)


def flat_frames(
    folder: Path, rgb: tuple[int, int, int], frames: int, template: str, size: tuple[int, int] = (48, 40)
) -> Path:
    """A frame folder of flat-colour JPEGs named `template.format(1..frames)` (1-based, like Sth/HMDB)."""
    return write_frame_folder(folder, [flat_image(rgb, size)] * frames, template)


def flat_image(rgb: tuple[int, int, int], size: tuple[int, int]) -> np.ndarray:
    image = np.empty((size[1], size[0], 3), dtype=np.uint8)
    image[:] = rgb
    return image
