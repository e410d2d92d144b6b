"""Timeline windows: a video (a file, or a stream as it comes) cut into windows of some seconds, each
scored as if it were a whole video. A stream's frames wait in a `FrameRing` until no window needs them."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from uniformer_cli.data import transforms
from uniformer_cli.data.sampling import clip_indices
from uniformer_cli.data.stream import STDIN, Stream
from uniformer_cli.data.views import views_from_resized
from uniformer_cli.errors import UniformerError, VideoError
from uniformer_cli.protocol import ViewProtocol, check_timeline


def window_length(fps: float, seconds: float) -> int:
    """Frames per `seconds`-long timeline window (a video's own rate may be anything its header says: the
    count is only bounded by the seconds)."""
    check_timeline(seconds)
    frames = seconds * fps
    if not math.isfinite(frames) or frames <= 0:
        raise UniformerError(f"a frame rate of {fps:g} fps gives no window of {seconds:g} s")
    return max(1, round(frames))


def window_bounds(num_frames: int, fps: float, seconds: float) -> list[tuple[int, int]]:
    """`(first, stop)` frame ranges of consecutive `seconds`-long windows covering a video (a file's, or
    the frames a stream has given): the last window absorbs a tail shorter than half a window."""
    length = window_length(fps, seconds)
    bounds = [(first, min(first + length, num_frames)) for first in range(0, num_frames, length)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < length / 2:
        bounds[-2:] = [(bounds[-2][0], num_frames)]
    return bounds


class FrameRing:
    """The frames of a stream that a window may still need, each normalised and resized to the model's
    short side as it arrives (the same values `resized_clip` gives a file's frames)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.frames: dict[int, torch.Tensor] = {}  # frame index -> [3, 1, h, w]
        self.count = 0  # frames seen
        self.peak = 0  # most frames held at once (the memory bound)

    def frame_bytes(self, image: np.ndarray) -> int:
        """What one frame like `image` takes in the ring, resized to the model's short side."""
        height, width = transforms.short_side_size(image.shape[0], image.shape[1], self.size)
        return 3 * height * width * 4

    def append(self, image: np.ndarray) -> None:
        self.frames[self.count] = transforms.resized_clip([image], self.size)
        self.count += 1
        self.peak = max(self.peak, len(self.frames))

    def drop_before(self, index: int) -> None:
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]

    def views(self, first: int, stop: int, protocol: ViewProtocol) -> torch.Tensor:
        """The window `first..stop-1`'s views, sampled as `read_view_frames` samples a file's window."""
        clips = [first + indices for indices in clip_indices(protocol, stop - first)]
        unique, positions = np.unique(np.concatenate(clips), return_inverse=True)
        resized = torch.cat([self.frames[int(index)] for index in unique], dim=1)
        return views_from_resized(resized, positions.reshape(protocol.clips, protocol.frames), protocol)


# The frames a live timeline holds (`FrameRing`: 1.5 windows at the model's size) may take at most this.
MAX_RING_BYTES = 2 * 2**30


def check_ring(source: str, fps: float, seconds: float, length: int, frame_bytes: int) -> None:
    """Refuse a live window whose frames would not fit `MAX_RING_BYTES` (a stream may declare any frame
    rate: 100000 fps makes a 2 s window of 200000 frames), before the frames are read."""
    held = math.ceil(1.5 * length) * frame_bytes
    if held > MAX_RING_BYTES:
        name = "stdin" if source == STDIN else source
        raise VideoError(
            f"{name} declares {fps:g} fps: a {seconds:g} s window is {length:,} frames, {held / 2**30:,.1f} GiB "
            f"held at the model's size (at most {MAX_RING_BYTES // 2**30} GiB): give a shorter --timeline"
        )


def stream_windows(stream: Stream, seconds: float, size: int) -> Iterator[tuple[int, int, FrameRing]]:
    """The `(first, stop)` windows of a stream as soon as each is final, with the ring holding their frames.

    They equal `window_bounds` on the same frames: window k is final once half a window has followed it
    (a shorter tail would join it), so results come at most half a window late; frames are kept only while
    a window may still need them, never more than 1.5 windows of them, and those within `MAX_RING_BYTES`
    (`check_ring`, on the first frame).
    """
    length = window_length(stream.fps, seconds)
    ring = FrameRing(size)
    first = 0  # the next window to give starts here
    for image in stream.frames():
        if ring.count == 0:
            check_ring(stream.source, stream.fps, seconds, length, ring.frame_bytes(image))
        ring.append(image)
        if ring.count - (first + length) >= length / 2:  # the next window will stand alone
            yield first, first + length, ring
            first += length
            ring.drop_before(first)
    if ring.count == 0:
        raise VideoError(f"{stream.source} ended before its first frame")
    for start, stop in window_bounds(ring.count, stream.fps, seconds):
        if start >= first:
            yield start, stop, ring
