"""Test views: a video's clips x crops model inputs under one test protocol (PROTOCOLS.md 3-5)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from uniformer_cli.data import transforms
from uniformer_cli.data.sampling import view_frame_indices
from uniformer_cli.data.video import Decoder, Video, open_video
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ProtocolOverrides, ViewProtocol, resolve_protocol


def read_view_frames(
    video: Video, protocol: ViewProtocol, window: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct uint8 frames the views need, each decoded once even where clips overlap, and the
    positions of each clip's frames in them (`[clips, frames]`).

    `window = (first, stop)` samples inside frames `first..stop-1` as if they were the whole video
    (used by the timeline).
    """
    unique, positions = view_frame_indices(protocol, video.num_frames, window)
    return video.read(unique), positions


def views_from_frames(
    frames: np.ndarray | Iterable[np.ndarray], positions: np.ndarray, protocol: ViewProtocol
) -> torch.Tensor:
    """float32 `[clips * crops, 3, T, size, size]` from `read_view_frames` output, view index =
    clip * crops + crop. Each frame is normalised and resized once; the channel axis is reversed for
    BGR-trained checkpoints (PROTOCOLS.md 1.3). `frames` may also be an iterator of the distinct frames
    (`sampling.view_frame_indices` order), each shrunk as it comes: memory then follows the model's input
    size, not the video's resolution (a 4000x3000 source never has all its frames decoded at once)."""
    return views_from_resized(transforms.resized_clip(frames, protocol.size), positions, protocol)


def views_from_resized(resized: torch.Tensor, positions: np.ndarray, protocol: ViewProtocol) -> torch.Tensor:
    """`views_from_frames` from frames already normalised and resized (`transforms.resized_clip` output,
    `[3, N, h, w]`): a live stream resizes each frame once as it arrives."""
    if protocol.channel_order == "bgr":
        resized = resized.flip(0)
    crop_positions = transforms.crop_indices(protocol.crops, protocol.single_crop or "centre")
    views = [
        transforms.crop(resized[:, clip_positions], protocol.size, position)
        for clip_positions in positions
        for position in crop_positions
    ]
    return torch.stack(views)


def views_from_video(video: Video, protocol: ViewProtocol, window: tuple[int, int] | None = None) -> torch.Tensor:
    """The model input views of an opened video, decoded and shrunk frame by frame (`views_from_frames`)."""
    unique, positions = view_frame_indices(protocol, video.num_frames, window)
    return views_from_frames(video.iter_frames(unique), positions, protocol)


def load_views(
    video: str | Path,
    protocol: ViewProtocol | Mapping[str, object] | None = None,
    *,
    decoder: Decoder | str = "auto",
    frames: int | None = None,
    stride: int | None = None,
    sampling: str | None = None,
    clips: int | None = None,
    crops: int | None = None,
    size: int | None = None,
    channel_order: str | None = None,
) -> torch.Tensor:
    """The model input views of a video file or frame folder under `protocol`: float32
    `[clips * crops, 3, frames, size, size]`, exactly what `uniformer predict` feeds the model (sampling,
    views, resize, crops, normalisation and channel order).

    `protocol` is a `ViewProtocol` (a loaded model's `.protocol` as it is) or its `as_dict()` form; the
    keywords change it as the CLI's protocol flags do (`resolve_protocol`), or, without a protocol, make
    one (`frames` with `stride`, or `sampling`). View index = clip * crops + crop; crops in
    left/centre/right (top/centre/bottom) order.

    Example: `load_views("clip.mp4", model.protocol)`, or `load_views("clip.mp4", frames=16, stride=4, clips=4)`.
    """
    if protocol is not None and not isinstance(protocol, ViewProtocol):
        protocol = ViewProtocol.from_dict(protocol)
    if protocol is None and (frames is None or (stride is None and sampling is None)):
        raise UniformerError(
            "load_views needs a protocol (e.g. a model's .protocol), or frames= with stride= or sampling="
        )
    changes = ProtocolOverrides(frames, stride, sampling, clips, crops, size, channel_order)
    resolved = resolve_protocol(protocol, changes)
    with open_video(video, decoder) as opened:
        return views_from_video(opened, resolved)
