"""Test protocols: how a model sees a video (PROTOCOLS.md 3-5), as plain values.

The one home of the protocol's vocabulary (sampling rules, channel orders, crop counts), of
`ViewProtocol` and of the rule that combines a model's protocol with a user's changes. It imports neither
torch nor numpy: the zoo, the weights' metadata, the CLI's choices and the Python API all read it. What
the protocol *does* to frames lives in `data/` (`data.sampling`, `data.views`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, get_args

from uniformer_cli.errors import UniformerError
from uniformer_cli.jsonio import load_json

Sampling = Literal["dense", "segment", "sparse"]
SAMPLINGS: tuple[Sampling, ...] = get_args(Sampling)
ChannelOrder = Literal["rgb", "bgr"]
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)
SingleCrop = Literal["centre", "first"]
# The official tests take one square crop, or three along the long side (PROTOCOLS.md 4).
CROP_COUNTS = (1, 3)

# Upper bounds of a protocol, far above every released one (64 frames, 336 px, 4 clips x 3 crops) but low
# enough that no option or metadata value decodes without end or allocates without bound.
LIMITS = {"frames": 1024, "stride": 1000, "clips": 100, "crops": 3, "size": 2048}
MAX_VIEW_BYTES = 8 * 2**30  # the float32 views of one video
# Timelines: a window of at most a day, and frame rates (given for frame folders) of at most 10000 fps, so
# that a window's frame count (seconds x fps) is always a finite, ordinary number.
MAX_WINDOW_SECONDS = 86400.0
MAX_FPS = 10000.0


def check_timeline(seconds: float) -> None:
    """A timeline window must be a positive, finite number of seconds, at most `MAX_WINDOW_SECONDS`."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_WINDOW_SECONDS):
        raise UniformerError(
            f"--timeline needs a positive, finite window length in seconds (at most {MAX_WINDOW_SECONDS:g}), "
            f"got {seconds:g}"
        )


def check_frame_rate(fps: float) -> None:
    """A frame rate given for frame folders must be positive and at most `MAX_FPS`."""
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise UniformerError(f"--fps needs a positive frame rate of at most {MAX_FPS:g}, got {fps:g}")


def check_sampling(name: str) -> Sampling:
    """`name` as a sampling rule, or a one-line error listing the rules."""
    if name not in SAMPLINGS:
        raise UniformerError(f"unknown sampling {name!r} (use one of {', '.join(SAMPLINGS)})")
    return name


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
        if self.channel_order not in CHANNEL_ORDERS:
            raise UniformerError(
                f"unknown channel order {self.channel_order!r} (use one of {', '.join(CHANNEL_ORDERS)})"
            )
        if self.single_crop not in (None, *get_args(SingleCrop)):
            raise UniformerError(f"unknown single crop {self.single_crop!r} (centre or first)")
        if self.single_crop is None:
            object.__setattr__(self, "single_crop", "first" if self.sampling == "segment" else "centre")

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | str) -> ViewProtocol:
        """From `as_dict` output or its JSON (the `protocol` metadata of saved weights)."""
        if isinstance(values, str):
            try:
                values = load_json(values)
            except ValueError as error:
                raise UniformerError(f"malformed view protocol JSON: {error}") from None
        if not isinstance(values, Mapping):
            raise UniformerError("a view protocol must be a JSON object")
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UniformerError(f"unknown view protocol fields: {', '.join(sorted(map(str, unknown)))}")
        if "frames" not in values:
            raise UniformerError("a view protocol needs its frames")
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


def resolve_protocol(
    model_protocol: ViewProtocol | None, overrides: ProtocolOverrides | None = None, source: str = "this model"
) -> ViewProtocol:
    """The protocol a model is run with: its own (zoo entry or weights metadata) with the overrides.

    A model without one (`source` names it in the error) takes the overrides alone: `frames` and a
    temporal rule (`stride` for dense, or `sampling`) are required; clips 1, crops 1, size 224 and RGB
    are the defaults. Segment and sparse sampling drop the stride (PROTOCOLS.md 3.2, 3.3), and a change of
    sampling re-derives which crop a 1-crop test takes.
    """
    overrides = overrides or ProtocolOverrides()
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
            sampling=check_sampling(overrides.sampling or "dense"),
        )
    sampling = changes.get("sampling", model_protocol.sampling)
    if sampling != "dense":
        changes["stride"] = None
    if sampling != model_protocol.sampling:
        changes["single_crop"] = None
    return replace(model_protocol, **changes)


def check_clip_size(takes: int | None, size: int, name: str) -> None:
    """One error line for a crop side a network cannot take (`takes`: the only side it takes, a
    UniFormerV2's resolution; None: any)."""
    if takes is not None and size != takes:
        raise UniformerError(f"{name} takes {takes} px crops (its position embedding): --size {size} does not fit it")
