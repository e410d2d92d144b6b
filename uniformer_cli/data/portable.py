"""The test protocol with numpy and PyAV alone: what an exported model's `preprocess.py` runs.

`uniformer export` writes this module beside the model (`engine.standalone.preprocess_source`), with the
block marked below replaced by the source of the package's own rules (the frame indices of
`data.sampling`, the resize size, crop offsets and crop choice of `data.geometry`, which files of a frame
folder are its frames and in which order, `data.video.frame_folder_files`) and the model's protocol as
`PROTOCOL`. What is written here is the rest, in numpy: reading the frames with PyAV (a video's from its
first stream, a frame folder's one image file at a time, as `data.video` reads them), the
normalisation table, a bilinear resize that computes what `torch.nn.functional.interpolate` computes
(`align_corners=False`, no antialiasing), the channel order and the crops, in the package's order
(`data.views`): normalise, resize, reverse the channels, crop. tests/test_standalone.py holds `views`
to `data.views.load_views` on every protocol family, so the two cannot drift apart. The package's
torch-free predict route (`engine.torch_free`) makes its views with `views_from_frames` from the frames
its own decoders give: the same code as the exported file.

Nothing here imports torch or this package once the block is replaced.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

# --- the package's rules: `engine.standalone` writes their source in place of this block -----------------
# isort: off
from uniformer_cli.data.sampling import clip_indices
from uniformer_cli.data.geometry import MEAN, STD, crop_indices, crop_offset, short_side_size
from uniformer_cli.data.video import frame_folder_files

# isort: on
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
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    return resized_planes(planes, height, width, (0, height), (0, width)).transpose(1, 2, 0)


def resized_planes(
    planes: np.ndarray, height: int, width: int, rows: tuple[int, int], columns: tuple[int, int]
) -> np.ndarray:
    """Rows `rows[0]..rows[1]-1` and columns `columns[0]..columns[1]-1` of float32 channel planes
    `[C, H, W]` resized to `height x width` (`resize`'s arithmetic, each output computed alone): the
    columns first, over the source rows the wanted rows read, then the rows."""
    top, bottom, upper, lower = (part[rows[0] : rows[1]] for part in _taps(planes.shape[1], height))
    left, right, near, far = (part[columns[0] : columns[1]] for part in _taps(planes.shape[2], width))
    first = int(top[0])
    source = planes[:, first : int(bottom[-1]) + 1]
    across = np.take(source, left, axis=2)
    across *= near
    other = np.take(source, right, axis=2)
    other *= far
    across += other
    down = np.take(across, top - first, axis=1)
    down *= upper[:, None]
    other = np.take(across, bottom - first, axis=1)
    other *= lower[:, None]
    down += other
    return down


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
    frames = decoded_frames(video_path, unique.tolist())
    return views_from_frames(frames, positions.reshape(protocol.clips, protocol.frames), protocol, video_path)


def views_from_frames(
    frames: Iterable[np.ndarray], positions: np.ndarray, protocol: Any, name: str = "the video"
) -> np.ndarray:
    """The views from the distinct uint8 RGB frames `[H, W, 3]` they need (sorted frame order, each
    normalised and shrunk as it comes, only where a crop reads it) and `positions`, each clip's frames
    among them (`[clips, frames]`); `protocol` has the fields of `Protocol`. Frames of mixed sizes are
    refused (as the package refuses them), the error naming the video as `name`."""
    size = protocol.size
    first = None
    resized = []
    offsets: list[tuple[int, int]] = []
    corner = (0, 0)
    for frame in frames:
        first = frame.shape if first is None else first
        if frame.shape != first:  # one size for the whole video
            raise ValueError(f"{name}: its frames are not all one size ({first[:2]} and {frame.shape[:2]})")
        height, width = short_side_size(frame.shape[0], frame.shape[1], size)
        offsets = [
            crop_offset(height, width, size, index) for index in crop_indices(protocol.crops, protocol.single_crop)
        ]
        corner = (min(y for y, _ in offsets), min(x for _, x in offsets))
        rows = (corner[0], max(y for y, _ in offsets) + size)
        columns = (corner[1], max(x for _, x in offsets) + size)
        planes = LEVELS[frame.transpose(2, 0, 1)]  # normalised, [3, H, W]
        if frame.shape[:2] == (height, width):
            resized.append(planes[:, rows[0] : rows[1], columns[0] : columns[1]])
        else:
            resized.append(resized_planes(planes, height, width, rows, columns))
    stacked = np.stack(resized, axis=1)  # [3, U, h, w]: the part of the resized frames the crops cover
    if protocol.channel_order == "bgr":
        stacked = stacked[::-1]
    chosen = []
    for clip in positions:
        for y, x in offsets:
            top, left = y - corner[0], x - corner[1]
            chosen.append(stacked[:, clip, top : top + size, left : left + size])
    return np.ascontiguousarray(np.stack(chosen), dtype=np.float32)


# The exported model's protocol: `engine.standalone` writes it here.
PROTOCOL: Protocol | None = None

if __name__ == "__main__":  # python preprocess.py clip.mp4 views.npy (or a frame folder for clip.mp4)
    np.save(sys.argv[2], views(sys.argv[1]))
