"""The test protocol's spatial rules, without torch (PROTOCOLS.md 1 and 4): the normalisation constants,
the short-side size and the crops' offsets and choice.

Both ways of making views follow them: `data.transforms` / `data.views` (PyTorch) and `data.portable`
(numpy: the torch-free predict route, and the `preprocess.py` that `uniformer export` writes from it)."""

from __future__ import annotations

import math

# The same mean and std on every channel, after /255 (PROTOCOLS.md 1.1): not the ImageNet values.
MEAN = 0.45
STD = 0.225


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """`(height, width)` after scaling the short side to `size`; the long side is truncated, not
    rounded (340x256 -> 297x224, PROTOCOLS.md 4.1)."""
    if min(height, width) == size:
        return height, width
    if width < height:
        return math.floor(height / width * size), size
    return size, math.floor(width / height * size)


def crop_offset(height: int, width: int, size: int, index: int) -> tuple[int, int]:
    """Top-left `(y, x)` of crop `index` (0, 1, 2) of a `size` square in a `height x width` frame.

    1 is the centre (offsets rounded up, PROTOCOLS.md 4.2); 0 and 2 are left/right for landscape or
    square frames and top/bottom for portrait ones.
    """
    y = math.ceil((height - size) / 2)
    x = math.ceil((width - size) / 2)
    if index == 1:
        return y, x
    if height > width:
        return (0 if index == 0 else height - size), x
    return y, (0 if index == 0 else width - size)


def crop_indices(crops: int, single_crop: str) -> list[int]:
    """Crop positions of a test with `crops` crops: all of them in order, or for one crop the centre
    ("centre", Kinetics-style loaders) or the left/top one ("first", Sth/HMDB loaders, PROTOCOLS.md 4.2)."""
    if crops > 1:
        return list(range(crops))
    return [1] if single_crop == "centre" else [0]
