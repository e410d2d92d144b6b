"""Temporal sampling: the rule names and which frames of a video form each view (PROTOCOLS.md 3).

- `dense`: `frames` frames `stride` apart (Kinetics);
- `segment`: one frame per equal segment (Something-Something, HMDB51);
- `sparse`: the segment rule clamped to the last frame (the light models).

The rule names themselves belong to `uniformer_cli.protocol`.

`test_indices` and `train_indices` are the one dispatch from a rule name to its index functions. All
functions return 0-based indices into the decoded frame sequence as int64 numpy arrays. Frame folders
read file number `index + first_number` (the folder reader handles that, PROTOCOLS.md 2.2).
"""

from __future__ import annotations

import math

import numpy as np

from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import Sampling, ViewProtocol


def _check(num_frames: int, frames: int) -> None:
    if num_frames < 1:
        raise UniformerError("cannot sample frames from a video with no frames")
    if frames < 1:
        raise UniformerError(f"a clip needs at least one frame, got {frames}")


def _linspace_clip(start: float, frames: int, stride: int, num_frames: int) -> np.ndarray:
    """`frames` evenly spaced positions from `start` to `start + frames*stride - 1` (both ends
    included), clamped to the video and truncated: the official rule, whose step is
    `(frames*stride - 1) / (frames - 1)`, not `stride` (PROTOCOLS.md 3.1)."""
    end = start + frames * stride - 1
    positions = np.clip(np.linspace(start, end, frames), 0, num_frames - 1)
    return positions.astype(np.int64)


def dense_indices(num_frames: int, frames: int, stride: int, view: int = 0, num_views: int = 1) -> np.ndarray:
    """Kinetics-style dense clip `view` of `num_views` with offset view placement (PROTOCOLS.md 3.1).

    One view takes the centre clip; several views start at `view * floor(delta / (num_views - 1))`,
    so the first starts at frame 0. Videos shorter than a clip give identical views whose tail
    repeats the last frame.
    """
    _check(num_frames, frames)
    delta = max(num_frames - frames * stride, 0)
    start = delta // 2 if num_views == 1 else view * (delta // (num_views - 1))
    return _linspace_clip(start, frames, stride, num_frames)


def random_dense_indices(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """Training clip: a real start drawn uniformly in `[0, delta]`, then the same spacing."""
    _check(num_frames, frames)
    delta = max(num_frames - frames * stride, 0)
    return _linspace_clip(rng.uniform(0, delta), frames, stride, num_frames)


def _segment_bounds(num_frames: int, frames: int) -> tuple[float, list[int]]:
    """Segment length `(L - 1) / T` and the segment starts `round_half_even(seg * i)`, i = 0..T.

    Python's `round` rounds half to even like numpy's; `seg * i` is often exactly .5 because T is a
    power of two, so half-up rounding would move most Sth videos' frames (PROTOCOLS.md 3.2).
    """
    _check(num_frames, frames)
    segment = (num_frames - 1) / frames
    return segment, [round(segment * i) for i in range(frames + 1)]


def segment_indices(num_frames: int, frames: int, view: int = 0, num_views: int = 1) -> np.ndarray:
    """Something-Something test clip `view` of `num_views` (PROTOCOLS.md 3.2): each segment start plus
    `floor(seg / (num_views + 1) * (view + 1))`."""
    segment, starts = _segment_bounds(num_frames, frames)
    shift = math.floor(segment / (num_views + 1) * (view + 1))
    return np.asarray(starts[:frames], dtype=np.int64) + shift


def random_segment_indices(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Training clip: one uniform integer in each segment, both segment ends included."""
    _, starts = _segment_bounds(num_frames, frames)
    return np.asarray([rng.integers(starts[i], starts[i + 1], endpoint=True) for i in range(frames)], dtype=np.int64)


def sparse_indices(num_frames: int, frames: int, view: int = 0, num_views: int = 1) -> np.ndarray:
    """Light-model clip (PROTOCOLS.md 3.3): the segment rule, clamped to the last frame."""
    return np.minimum(segment_indices(num_frames, frames, view, num_views), num_frames - 1)


def random_sparse_indices(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Light-model training clip: uniform inside each segment, clamped to the last frame."""
    return np.minimum(random_segment_indices(num_frames, frames, rng), num_frames - 1)


def test_indices(
    sampling: Sampling, num_frames: int, frames: int, stride: int | None, view: int = 0, num_views: int = 1
) -> np.ndarray:
    """Test clip `view` of `num_views` under rule `sampling` (`stride` only applies to dense sampling)."""
    if sampling == "dense":
        return dense_indices(num_frames, frames, stride or 1, view, num_views)
    if sampling == "segment":
        return segment_indices(num_frames, frames, view, num_views)
    return sparse_indices(num_frames, frames, view, num_views)


def train_indices(
    sampling: Sampling, num_frames: int, frames: int, stride: int | None, rng: np.random.Generator
) -> np.ndarray:
    """A random training clip under rule `sampling`, drawn from `rng`."""
    if sampling == "dense":
        return random_dense_indices(num_frames, frames, stride or 1, rng)
    if sampling == "segment":
        return random_segment_indices(num_frames, frames, rng)
    return random_sparse_indices(num_frames, frames, rng)


def clip_indices(protocol: ViewProtocol, num_frames: int) -> list[np.ndarray]:
    """Frame indices of each of `protocol`'s temporal clips of a `num_frames` video."""
    return [
        test_indices(protocol.sampling, num_frames, protocol.frames, protocol.stride, view, protocol.clips)
        for view in range(protocol.clips)
    ]


def view_frame_indices(
    protocol: ViewProtocol, num_frames: int, window: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct frame indices a video's test views need (sorted), and the positions of each clip's
    frames in them (`[clips, frames]`). `window = (first, stop)` samples inside frames `first..stop-1` as
    if they were the whole video (the timeline's windows)."""
    first, stop = window or (0, num_frames)
    clips = [first + indices for indices in clip_indices(protocol, stop - first)]
    unique, positions = np.unique(np.concatenate(clips), return_inverse=True)
    return unique, positions.reshape(protocol.clips, protocol.frames)
