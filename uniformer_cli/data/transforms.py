"""Test-time spatial operations on clips (PROTOCOLS.md 1 and 4), in the official order:
uint8 frames -> float32 normalised `[3, T, H, W]` -> short-side resize -> square crops.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

# The rules themselves are torch-free (`data.geometry`); their names stay importable from here.
from uniformer_cli.data.geometry import MEAN, STD, crop_offset, short_side_size
from uniformer_cli.data.geometry import crop_indices as crop_indices

# Full-size float32 frame channels held at once while a clip is shrunk to the model's size.
RESIZE_BATCH_BYTES = 32 * 2**20

# The normalised value of each uint8 level, computed with the official float32 steps: a table lookup
# gives bit-identical values in one pass over the frames (about 4x faster than the three arithmetic ones).
_LEVELS = ((torch.arange(256, dtype=torch.float32) / 255.0 - MEAN) / STD).numpy()


def normalise(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `[T, H, W, 3]` frames -> float32 `[3, T, H, W]`, `(x / 255 - 0.45) / 0.225`."""
    levels = np.asarray(frames)
    if levels.dtype != np.uint8:
        raise TypeError(f"normalise expects uint8 frames, got {levels.dtype}")
    return torch.from_numpy(_LEVELS[levels]).permute(3, 0, 1, 2)


def resize(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a float `[C, T, H, W]` clip to `size = (height, width)`: bilinear, `align_corners=False`,
    no antialiasing (antialiased or 8-bit resizers are 0.01-0.5 off, PROTOCOLS.md 4.4)."""
    # Time acts as the channel axis, so each frame is resized on its own.
    return F.interpolate(clip, size=size, mode="bilinear", align_corners=False)


def short_side_resize(clip: torch.Tensor, size: int) -> torch.Tensor:
    """`resize` a float `[C, T, H, W]` clip so its short side is `size`. Frames whose short side
    already equals `size` are returned untouched."""
    height, width = clip.shape[-2:]
    new_size = short_side_size(height, width, size)
    return clip if new_size == (height, width) else resize(clip, new_size)


def resized_clip(frames: Iterable[np.ndarray], size: int) -> torch.Tensor:
    """uint8 frames (`[T, H, W, 3]`, or any iterable of `[H, W, 3]`) -> normalised float32 `[3, T, h, w]`
    with the short side at `size`.

    Frames are taken as they come and shrunk a group at a time, one channel at a time, each group at
    most `RESIZE_BATCH_BYTES` of full-size floats: memory follows the output size, not the source
    resolution. Frames and channels are resized independently; only the last bit may differ from one
    resize of the whole clip (PyTorch's kernel vectorises differently for some group sizes).
    """
    group = 0
    parts: list[torch.Tensor] = []
    pending: list[np.ndarray] = []
    for frame in frames:
        group = group or max(1, RESIZE_BATCH_BYTES // max(1, frame.shape[0] * frame.shape[1] * 4))
        pending.append(frame)
        if len(pending) == group:
            parts.append(_resized_group(np.stack(pending), size))
            pending = []
    if pending:
        parts.append(_resized_group(np.stack(pending), size))
    return torch.cat(parts, dim=1)


def _resized_group(frames: np.ndarray, size: int) -> torch.Tensor:
    channels = [short_side_resize(normalise(frames[..., c : c + 1]), size) for c in range(frames.shape[-1])]
    return torch.cat(channels, dim=0)


def crop(clip: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """Crop `index` (see `crop_offset`) of a `[..., H, W]` clip."""
    height, width = clip.shape[-2:]
    y, x = crop_offset(height, width, size, index)
    return clip[..., y : y + size, x : x + size]
