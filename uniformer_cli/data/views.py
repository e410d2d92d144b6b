"""Test views: a video's clips x crops model inputs under one test protocol (PROTOCOLS.md 3-5)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from uniformer_cli.data import sampling, transforms
from uniformer_cli.data.sampling import Sampling, check_sampling
from uniformer_cli.data.video import Decoder, Video, open_video
from uniformer_cli.errors import UniformerError
from uniformer_cli.zoo import ChannelOrder, ZooEntry

# Upper bounds of a protocol, far above every released one (16 frames, 224 px, 4 clips x 3 crops) but low
# enough that no option or metadata value decodes without end or allocates without bound.
LIMITS = {"frames": 1024, "stride": 1000, "clips": 100, "crops": 3, "size": 2048}
MAX_VIEW_BYTES = 8 * 2**30  # the float32 views of one video
SingleCrop = Literal["centre", "first"]


@dataclass(frozen=True)
class ViewProtocol:
    """How a model sees a video: temporal sampling, views, size and channel order.

    `single_crop` says which crop a 1-crop test takes: the centre (Kinetics-style and sparse loaders)
    or the first, left/top one (the Sth/HMDB frame loaders); None picks "first" for segment sampling
    and "centre" otherwise.
    """

    frames: int
    stride: int | None = None
    sampling: Sampling = "dense"
    clips: int = 1
    crops: int = 1
    size: int = 224
    channel_order: ChannelOrder = "rgb"
    single_crop: SingleCrop | None = None

    def __post_init__(self) -> None:
        check_sampling(self.sampling)
        for name, high in LIMITS.items():
            value = getattr(self, name)
            if value is None and name == "stride":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise UniformerError(f"{name} must be a whole number, got {value!r}")
            if not 1 <= value <= high:
                raise UniformerError(f"{name} {value} is out of range: 1 to {high}")
        if self.sampling == "dense" and not self.stride:
            raise UniformerError("dense sampling needs a stride (frames x stride, e.g. 16x4)")
        view_bytes = self.clips * self.crops * 3 * self.frames * self.size**2 * 4
        if view_bytes > MAX_VIEW_BYTES:
            raise UniformerError(
                f"{self.clips}x{self.crops} views of {self.frames} frames at {self.size}px take "
                f"{view_bytes / 2**30:.1f} GiB per video (at most {MAX_VIEW_BYTES // 2**30} GiB): lower --frames, "
                "--size, --clips or --crops"
            )
        if self.channel_order not in ("rgb", "bgr"):
            raise UniformerError(f"unknown channel order {self.channel_order!r} (rgb or bgr)")
        if self.single_crop is None:
            object.__setattr__(self, "single_crop", "first" if self.sampling == "segment" else "centre")

    @classmethod
    def from_entry(cls, entry: ZooEntry, clips: int | None = None, crops: int | None = None) -> ViewProtocol:
        """The released test protocol of a zoo checkpoint, with optional clip / crop overrides."""
        return cls(
            frames=entry.frames,
            stride=entry.stride,
            sampling=entry.sampling,
            clips=clips or entry.clips,
            crops=crops or entry.crops,
            size=entry.size,
            channel_order=entry.channel_order,
            single_crop=entry.single_crop,
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | str) -> ViewProtocol:
        """From `as_dict` output or its JSON (the `protocol` metadata of saved weights)."""
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except json.JSONDecodeError as error:
                raise UniformerError(f"malformed view protocol JSON: {error}") from None
        if not isinstance(values, Mapping):
            raise UniformerError("a view protocol must be a JSON object")
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UniformerError(f"unknown view protocol fields: {', '.join(sorted(unknown))}")
        return cls(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def with_views(self, clips: int | None = None, crops: int | None = None) -> ViewProtocol:
        return replace(self, clips=clips or self.clips, crops=crops or self.crops)

    @property
    def views(self) -> int:
        return self.clips * self.crops

    def describe(self) -> str:
        """Short human form, e.g. `16x4, 4x1 views, 224px, RGB` or `16 segment, 1x3 views, 224px, BGR`."""
        temporal = f"{self.frames}x{self.stride}" if self.sampling == "dense" else f"{self.frames} {self.sampling}"
        return f"{temporal}, {self.clips}x{self.crops} views, {self.size}px, {self.channel_order.upper()}"

    def clip_indices(self, num_frames: int) -> list[np.ndarray]:
        """Frame indices of each temporal clip of a `num_frames` video."""
        return [
            sampling.test_indices(self.sampling, num_frames, self.frames, self.stride, view, self.clips)
            for view in range(self.clips)
        ]


@dataclass(frozen=True)
class ProtocolOverrides:
    """Changes asked of a model's test protocol (`--frames`, `--clips`...); None keeps the model's value.
    Names are checked where they are used, by `ViewProtocol`."""

    frames: int | None = None
    stride: int | None = None
    sampling: str | None = None
    clips: int | None = None
    crops: int | None = None
    size: int | None = None
    channel_order: str | None = None


def resolve_protocol(model_protocol: ViewProtocol | None, overrides: ProtocolOverrides, source: str) -> ViewProtocol:
    """The protocol a model is run with: its own (zoo entry or weights metadata) with the overrides.

    A model without one (`source` names it in the error) takes the overrides alone: `frames` and a
    temporal rule (`stride` for dense, or `sampling`) are required; clips 1, crops 1, size 224 and RGB
    are the defaults. Segment and sparse sampling drop the stride (PROTOCOLS.md 3.2, 3.3), and a change of
    sampling re-derives which crop a 1-crop test takes.
    """
    changes = {name: value for name, value in asdict(overrides).items() if value is not None}
    if model_protocol is None:
        if overrides.frames is None or (overrides.sampling is None and overrides.stride is None):
            raise UniformerError(
                f"{source} carries no test protocol: give --frames with --stride (dense sampling) or --sampling "
                "segment|sparse, or name its zoo entry with --model (see `uniformer models`)"
            )
        model_protocol = ViewProtocol(
            frames=overrides.frames,
            stride=overrides.stride,
            sampling=overrides.sampling or "dense",  # type: ignore[arg-type]
        )
    sampling = changes.get("sampling", model_protocol.sampling)
    if sampling != "dense":
        changes["stride"] = None
    if sampling != model_protocol.sampling:
        changes["single_crop"] = None
    return replace(model_protocol, **changes)


def _view_frame_indices(
    video: Video, protocol: ViewProtocol, window: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct frame indices the views need (sorted), and the positions of each clip's frames in
    them (`[clips, frames]`)."""
    first, stop = window or (0, video.num_frames)
    clips = [first + indices for indices in protocol.clip_indices(stop - first)]
    unique, positions = np.unique(np.concatenate(clips), return_inverse=True)
    return unique, positions.reshape(protocol.clips, protocol.frames)


def read_view_frames(
    video: Video, protocol: ViewProtocol, window: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct uint8 frames the views need, each decoded once even where clips overlap, and the
    positions of each clip's frames in them (`[clips, frames]`).

    `window = (first, stop)` samples inside frames `first..stop-1` as if they were the whole video
    (used by the timeline).
    """
    unique, positions = _view_frame_indices(video, protocol, window)
    return video.read(unique), positions


def resized_view_frames(
    video: Video, protocol: ViewProtocol, window: tuple[int, int] | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """`read_view_frames`, with each frame normalised and resized (`transforms.resized_clip`) as soon
    as it is decoded: float32 `[3, U, h, w]`. Memory follows the model's input size, not the video's
    resolution (a 4000x3000 source never has all its frames decoded at once)."""
    unique, positions = _view_frame_indices(video, protocol, window)
    return transforms.resized_clip(video.iter_frames(unique), protocol.size), positions


def views_from_frames(frames: np.ndarray, positions: np.ndarray, protocol: ViewProtocol) -> torch.Tensor:
    """float32 `[clips * crops, 3, T, size, size]` from `read_view_frames` output, view index =
    clip * crops + crop. Each frame is normalised and resized once; the channel axis is reversed for
    BGR-trained checkpoints (PROTOCOLS.md 1.3)."""
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
    """The model input views of an opened video, decoded and shrunk frame by frame (`resized_view_frames`)."""
    return views_from_resized(*resized_view_frames(video, protocol, window), protocol)


def load_views(
    path: str | Path,
    *,
    frames: int,
    stride: int | None = None,
    sampling: Sampling = "dense",
    clips: int = 1,
    crops: int = 1,
    size: int = 224,
    decoder: Decoder | str = "auto",
) -> torch.Tensor:
    """Model input views of a video file or frame folder: float32 `[clips * crops, 3, frames, size, size]`.

    View index = clip * crops + crop; crops in left/centre/right (top/centre/bottom) order; RGB.
    Example (the K400 16x4 test): `load_views("clip.mp4", frames=16, stride=4, clips=4)`.
    """
    protocol = ViewProtocol(frames=frames, stride=stride, sampling=sampling, clips=clips, crops=crops, size=size)
    with open_video(path, decoder) as video:
        return views_from_video(video, protocol)
