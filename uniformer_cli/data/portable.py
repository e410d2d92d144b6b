"""The test protocol with numpy and PyAV alone: what an exported model's `preprocess.py` runs.

`uniformer export` writes this module beside the model (`engine.standalone.preprocess_source`), with the
block marked below replaced by the source of the package's own rules (the frame indices of
`data.sampling`, the resize size, crop offsets and crop choice of `data.transforms`, which files of a frame
folder are its frames and in which order, `data.video.frame_folder_files`) and the model's protocol as
`PROTOCOL`. What is written here is the rest, in numpy: reading the frames with PyAV (a video's from its
first stream, a frame folder's one image file at a time, as `data.video` reads them), the
normalisation table, a bilinear resize that computes what `torch.nn.functional.interpolate` computes
(`align_corners=False`, no antialiasing), the channel order and the crops, in the package's order
(`data.views`): normalise, resize, reverse the channels, crop. tests/test_standalone.py holds `views` to
`data.views.load_views` on every protocol family, so the two cannot drift apart.

Nothing here imports torch or this package once the block is replaced.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

# --- the package's rules: `engine.standalone` writes their source in place of this block -----------------
from uniformer_cli.data.sampling import clip_indices
from uniformer_cli.data.transforms import MEAN, STD, crop_indices, crop_offset, short_side_size
from uniformer_cli.data.video import frame_folder_files

# --- end of the package's rules ---------------------------------------------------------------------------


class Protocol(NamedTuple):
    """A test protocol (the fields of the package's `ViewProtocol`, which also serves here)."""

    frames: int
    stride: int | None
    sampling: str
    clips: int
    crops: int
    size: int
    channel_order: str
    single_crop: str


# The normalised value of each uint8 level, with the package's float32 steps: (x / 255 - MEAN) / STD.
LEVELS = (np.arange(256, dtype=np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)


def frame_count(video_path: str) -> int:
    """The frames of the video's first stream, counted as the package counts them: the packets that carry
    data (an edit list's hidden frames aside), which is also what decoding every frame gives. A frame
    folder's are its frame files."""
    if os.path.isdir(video_path):
        return len(frame_folder_files(Path(video_path)))
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)


def image_frame(file: Path) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` of one image file (a JPEG or PNG frame), decoded by PyAV."""
    with av.open(str(file)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def decoded_frames(video_path: str, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """uint8 RGB frames `[H, W, 3]` at sorted, distinct `indices`, decoded in one pass in presentation order
    (of a frame folder: its files at those positions)."""
    if os.path.isdir(video_path):
        files = frame_folder_files(Path(video_path))
        yield from (image_frame(files[index]) for index in indices)
        return
    wanted = iter(indices)
    target = next(wanted, None)
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for position, frame in enumerate(container.decode(stream)):
            if target is None:
                return
            if position == target:
                yield frame.to_ndarray(format="rgb24")
                target = next(wanted, None)
    if target is not None:
        raise ValueError(f"{video_path}: frame {target} could not be decoded")


def _taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two source positions of each of `target` outputs along one axis and their float32 weights:
    half-pixel centres `source / target` apart (the ratio in float32), clamped at 0 and at the last
    position. Each position is rounded to float32 once, as PyTorch's compiled kernel computes it (its
    multiply and subtract fuse): rounding after each step moves outputs by up to 6e-5."""
    scale = np.float64(np.float32(source) / np.float32(target))
    position = np.maximum(((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32), np.float32(0))
    low = position.astype(np.int64)
    high = np.minimum(low + 1, source - 1)
    far = (position - low).astype(np.float32)
    return low, high, np.float32(1) - far, far


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float32 `[H, W, C]` image without antialiasing, within 1e-6 of
    `torch.nn.functional.interpolate`; the same size is left as is."""
    if image.shape[:2] == (height, width):
        return image
    top, bottom, upper, lower = _taps(image.shape[0], height)
    left, right, near, far = _taps(image.shape[1], width)
    columns = image[:, left] * near[None, :, None] + image[:, right] * far[None, :, None]
    return columns[top] * upper[:, None, None] + columns[bottom] * lower[:, None, None]


def views(video_path: str, protocol: Protocol | None = None) -> np.ndarray:
    """The model's input views of a video file or a frame folder (numbered JPEG/PNG files such as
    `img_00001.jpg`) under its test protocol (`PROTOCOL` unless given): float32 `[V, 3, T, S, S]`, view
    index = clip * crops + crop. The model's score for a class is the softmax of
    the mean over the views of its logits."""
    protocol = protocol or PROTOCOL
    if protocol is None:
        raise ValueError("views needs a protocol")
    clips = clip_indices(protocol, frame_count(video_path))  # type: ignore[arg-type]
    unique, positions = np.unique(np.concatenate(clips), return_inverse=True)
    resized = []
    first = None
    for frame in decoded_frames(video_path, unique.tolist()):
        first = frame.shape if first is None else first
        if frame.shape != first:  # as the package refuses it: one size for the whole video
            raise ValueError(f"{video_path}: its frames are not all one size ({first[:2]} and {frame.shape[:2]})")
        height, width = short_side_size(frame.shape[0], frame.shape[1], protocol.size)
        resized.append(resize(LEVELS[frame], height, width))
    frames = np.stack(resized).transpose(3, 0, 1, 2)  # [3, U, h, w]
    if protocol.channel_order == "bgr":
        frames = frames[::-1]
    size = protocol.size
    chosen = []
    for clip in positions.reshape(protocol.clips, protocol.frames):
        for index in crop_indices(protocol.crops, protocol.single_crop):
            y, x = crop_offset(frames.shape[2], frames.shape[3], size, index)
            chosen.append(frames[:, clip, y : y + size, x : x + size])
    return np.ascontiguousarray(np.stack(chosen), dtype=np.float32)


# The exported model's protocol: `engine.standalone` writes it here.
PROTOCOL: Protocol | None = None

if __name__ == "__main__":  # python preprocess.py clip.mp4 views.npy (or a frame folder for clip.mp4)
    np.save(sys.argv[2], views(sys.argv[1]))
