"""Video decoding: PyAV (always installed), decord or torchcodec, and JPEG frame folders; files, videos
held in memory (`EncodedVideo`) or at a storage URL (`RemoteVideo`, read in ranges as it is decoded).

Every reader returns uint8 RGB frames `[T, H, W, 3]` at the stored resolution (up to 4096x4096 pixels,
see below) for 0-based indices into the decoded frame sequence, numbered like decord (PROTOCOLS.md 2.1):
no fps resampling, no decoder side resizing. Every failure becomes a one-line `VideoError`.

Frame geometry is bounded before anything is decoded (`decode_size`, which every reader and the live
streams call): frames above `MAX_DECODED_PIXELS` (4096x4096, beyond any released protocol's source) are
shrunk by the decoder itself, so memory follows the model's input and not a hostile header; an aspect
ratio past `MAX_ASPECT_RATIO`, or a size no video has, is refused in one line.
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

import av
import numpy as np

from uniformer_cli.data import storage
from uniformer_cli.errors import DatasetError, UniformerError, VideoError, first_line

if TYPE_CHECKING:
    import decord
    from torchcodec.decoders import VideoDecoder

logger = logging.getLogger(__name__)

Decoder = Literal["auto", "decord", "pyav", "torchcodec"]
DECODERS: tuple[str, ...] = ("auto", "decord", "pyav", "torchcodec")
# What a caller reads from an opened video: test views of a clip (predict, eval, features, explain), the
# windows of a long video in order (the timeline), or one training clip of each video.
Workload = Literal["views", "timeline", "train"]
# What `auto` decodes each workload with: the first of these that is installed and suits the video,
# fastest first where its frames equal PyAV's (benchmarks/bench_decoders.py, README "Video decoders").
# PyAV, always installed, comes last.
AUTO_DECODERS: dict[str, tuple[str, ...]] = {
    "views": ("decord", "pyav"),
    "timeline": ("torchcodec", "pyav"),
    "train": ("pyav",),
}
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
# Frame folders carry no frame rate; the Sth/HMDB frames were extracted at 30 fps (PROTOCOLS.md 2.2).
FRAME_FOLDER_FPS = 30.0
_FRAME_FILE = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<ext>\.[A-Za-z]+)$")


@dataclass(frozen=True)
class EncodedVideo:
    """A video file held in memory (a shard member, an object read from a store); `name` is how
    messages and records call it."""

    name: str
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.name


# What one read of a video at a URL fetches at least, and about what its file object holds.
REMOTE_BLOCK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class RemoteVideo:
    """A video file at a storage URL, decoded from a seekable file object that fetches the byte ranges
    the decoder asks for, a block (`REMOTE_BLOCK_BYTES`) at a time: memory follows the decoder, not the
    file's size, and nothing is copied to the local disk."""

    url: str

    def __str__(self) -> str:
        return self.url

    def open(self) -> IO[bytes]:
        try:
            return storage.open_input(self.url, block_size=REMOTE_BLOCK_BYTES).__enter__()
        except DatasetError as error:
            raise VideoError(str(error)) from None


Source = Path | EncodedVideo | RemoteVideo  # what a reader decodes


def media(source: Source) -> str | IO[bytes]:
    """What PyAV and torchcodec open for a source: a file name, or a file object over the bytes (held in
    memory, or fetched in ranges from a store)."""
    if isinstance(source, RemoteVideo):
        return source.open()
    return io.BytesIO(source.data) if isinstance(source, EncodedVideo) else str(source)


def decord_available() -> bool:
    return importlib.util.find_spec("decord") is not None


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's one-line reason without the errno and file name PyAV wraps around it."""
    return getattr(error, "strerror", None) or first_line(error)


def _decord_reason(error: BaseException) -> str:
    """The last message of decord's nested `[time] file.cc:line: message` chain, without the failed
    check's C++ expression."""
    message = str(error).strip().splitlines()[-1].rsplit("] ", 1)[-1].split(": ", 1)[-1]
    return message.rsplit(") ", 1)[-1] if message.startswith("Check failed") else message


# decord decodes a batch of frames into one array: batches are cut to about this size, so reading a
# 4K video costs a few frames of memory at a time instead of all of them.
DECODE_BATCH_BYTES = 64 * 2**20
# Above this frame size `auto` decodes with PyAV, frame by frame: decord buffers frames internally, over
# 1 GB at 4000x3000 even when asked for one frame at a time (the frames are the same either way).
DECORD_MAX_PIXELS = 1920 * 1088
# A long sequential read with decord reopens its reader after serving this many frames (see DecordVideo).
DECORD_REOPEN_FRAMES = 512


def batches(indices: list[int], width: int, height: int) -> Iterator[list[int]]:
    """`indices` cut into runs of at most `DECODE_BATCH_BYTES` of frames, for decoders that return a
    batch of frames at a time."""
    per_batch = max(1, DECODE_BATCH_BYTES // max(1, width * height * 3))
    for start in range(0, len(indices), per_batch):
        yield indices[start : start + per_batch]


# Frame geometry, checked before decoding. The short side is scaled to the model's size (PROTOCOLS.md 4.1)
# and the long side with it: past 16:1 (a 100000x1 strip would become 22 million pixels wide) no video is
# read. Frames above MAX_DECODED_PIXELS are shrunk to fit it (area averaging, aspect kept) as they are
# converted to RGB; the largest frames FFmpeg decodes are about MAX_SOURCE_PIXELS.
MAX_ASPECT_RATIO = 16.0
MAX_DECODED_PIXELS = 4096 * 4096
MAX_SOURCE_PIXELS = 1 << 28


def decode_size(source: object, width: int, height: int) -> tuple[int, int]:
    """`(width, height)` that frames stored at `width` x `height` are decoded at: as stored, or shrunk
    to fit `MAX_DECODED_PIXELS`. A `VideoError` naming `source` for a size no video has (zero, above
    `MAX_SOURCE_PIXELS`) or an aspect ratio past `MAX_ASPECT_RATIO`. Every decoder calls it (on the
    header's size, and again on each frame's, which a header cannot lie about)."""
    if width < 1 or height < 1:
        raise VideoError(f"{source} has frames of {width}x{height} pixels")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise VideoError(
            f"{source} has {width}x{height} frames, an aspect ratio of {ratio:,.0f}:1: at most "
            f"{MAX_ASPECT_RATIO:g}:1 is read (the short side is scaled to the model's size, the long one with it)"
        )
    if width * height > MAX_SOURCE_PIXELS:
        raise VideoError(f"{source} claims {width}x{height} frames, more than the {MAX_SOURCE_PIXELS:,} pixels read")
    if width * height <= MAX_DECODED_PIXELS:
        return width, height
    scale = math.sqrt(MAX_DECODED_PIXELS / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def rgb_array(frame: av.VideoFrame, source: object) -> np.ndarray:
    """A decoded frame as uint8 RGB `[H, W, 3]`, at `decode_size` (shrunk in the conversion itself: the
    full-size RGB frame is never made)."""
    width, height = decode_size(source, frame.width, frame.height)
    if (width, height) == (frame.width, frame.height):
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")


def _stack(frames: list[np.ndarray], mixed_sizes: str) -> np.ndarray:
    if len({frame.shape for frame in frames}) > 1:
        raise VideoError(mixed_sizes)
    return np.stack(frames)


class Video(ABC):
    """An opened video: frame count, frame rate, size, and `read(indices)`."""

    path: Source
    num_frames: int
    fps: float
    width: int
    height: int
    decoder: str

    @abstractmethod
    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        """Frames for sorted, unique, in-range indices, decoded one (or a few) at a time."""

    @property
    def mixed_sizes(self) -> str:
        """The error when frames of one video differ in size."""
        return f"{self.path} changes its frame size mid-stream, which is not supported"

    def _check(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        if wanted.size == 0:
            raise VideoError(f"no frames asked of {self.path}")
        outside = wanted[(wanted < 0) | (wanted >= self.num_frames)]
        if outside.size:
            raise VideoError(f"frame {int(outside[0])} is out of range for {self.path} ({self.num_frames} frames)")
        return wanted

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 RGB frames `[len(indices), H, W, 3]`; each distinct frame is decoded once."""
        wanted = self._check(indices)
        unique, positions = np.unique(wanted, return_inverse=True)
        frames = _stack(list(self._decode(unique.tolist())), self.mixed_sizes)
        # Views ask for sorted distinct frames: skip the copy a gather would make.
        return frames if np.array_equal(unique, wanted) else frames[positions]

    def iter_frames(self, indices: Sequence[int] | np.ndarray) -> Iterator[np.ndarray]:
        """uint8 RGB frames `[H, W, 3]` for sorted, distinct `indices`, decoded as they are consumed:
        a caller that shrinks each frame at once holds one source-resolution frame at a time (a few
        for decord, within `DECODE_BATCH_BYTES`), whatever the video's resolution."""
        wanted = self._check(indices)
        if np.any(np.diff(wanted) <= 0):
            raise ValueError("iter_frames takes sorted, distinct indices")
        shape = None
        for frame in self._decode(wanted.tolist()):
            if shape is not None and frame.shape != shape:
                raise VideoError(self.mixed_sizes)
            shape = frame.shape
            yield frame

    @property
    def duration(self) -> float:
        """Seconds, counted as frames / fps like the frame indices."""
        return self.num_frames / self.fps

    @abstractmethod
    def close(self) -> None:
        """Release the decoder."""

    def __enter__(self) -> Video:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, {self.num_frames} frames, {self.fps:g} fps, "
            f"{self.width}x{self.height})"
        )


@dataclass(frozen=True)
class _Probe:
    """What PyAV tells about a video stream from its header and one demux pass (no decoding)."""

    num_frames: int  # frames that carry data
    fps: float
    width: int  # as decoded (`decode_size`)
    height: int
    stored_pixels: int  # width x height as stored
    pts: list[int] | None  # presentation timestamps in frame order; None when missing or repeated
    keyframes: list[int]  # frame indices of keyframes, ascending
    hazard: str | None = None  # why a native decoder should not see it in this process (`_hazard`)


# A container whose duration or timestamps claim far more frames than it stores (a Matroska file whose
# timestamps start at 1e9 s) makes decord reserve an index for all of them (std::bad_alloc, SIGABRT) and
# is read by no decoder in this process: `open_video` decodes it in a checked child process instead. A
# claim within this many frames (or 16 times what is stored) costs any decoder's index a few MB at most.
MAX_CLAIMED_FRAMES = 2**20


def _hazard(container: av.container.InputContainer, stream: av.VideoStream, pts: list[int], count: int) -> str | None:
    """Why the container's claims make it unsafe for a native decoder, in words, or None: the seconds its
    duration and timestamps reach, at its frame rate, against the frames it stores."""
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    seconds = [container.duration / av.time_base if container.duration else 0.0]
    if stream.time_base and pts:
        seconds += [abs(float(min(pts) * stream.time_base)), abs(float(max(pts) * stream.time_base))]
    claimed = max(seconds) * max(fps, 1.0)
    if math.isfinite(claimed) and claimed <= max(MAX_CLAIMED_FRAMES, 16 * count):
        return None
    return f"its timestamps reach {max(seconds):.3g} s at {fps:g} fps, {claimed:.3g} frames for the {count} it stores"


def _open_container(path: Source) -> av.container.InputContainer:
    try:
        return av.open(media(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"cannot open {path}: not a video, or truncated or corrupt ({ffmpeg_reason(error)})") from None


def _probe(path: Source) -> _Probe:
    """Check that the file has a complete video stream and index its packets.

    The frame count is the number of packets that carry data, which equals decord's count and the
    decoded frame count for ordinary files; a count below the header's means the file was cut short.
    """
    with _open_container(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        timestamps: list[int | None] = []
        is_key: list[bool] = []
        stored = 0  # packets with data, including those an edit list hides (the header counts them)
        corrupt = False
        try:
            for packet in container.demux(stream):
                # Size 0: the flush packet at the end; discard: frames an edit list hides from decoders.
                stored += bool(packet.size)
                if packet.size and not packet.is_discard:
                    timestamps.append(packet.pts)
                    is_key.append(packet.is_keyframe)
        except av.FFmpegError:
            corrupt = True
        count = len(timestamps)
        if count == 0:
            raise VideoError(f"{path} has a video stream without frames")
        if corrupt or stream.frames > stored:
            promised = f"its header lists {stream.frames} frames but " if stream.frames else ""
            raise VideoError(f"{path} is truncated or corrupt: {promised}only {stored} frames can be read")
        fps = float(stream.average_rate or stream.guessed_rate or FRAME_FOLDER_FPS)
        # Checked (and shrunk) before anything is decoded; the frames themselves are checked again.
        stored = stream.codec_context.width * stream.codec_context.height
        width, height = decode_size(path, stream.codec_context.width, stream.codec_context.height)
        known = [pts for pts in timestamps if pts is not None]
        hazard = _hazard(container, stream, known, count)
    if len(known) < count or len(set(known)) < count:
        return _Probe(count, fps, width, height, stored, None, [0], hazard)
    order = sorted(range(count), key=known.__getitem__)
    keyframes = [index for index, packet in enumerate(order) if is_key[packet]]
    return _Probe(count, fps, width, height, stored, [known[packet] for packet in order], keyframes or [0], hazard)


class PyAVVideo(Video):
    """PyAV reader that decodes only what it needs: it decodes forward while the next wanted frame is
    before the next keyframe, and otherwise seeks to the keyframe at or before it. Frames are numbered
    by their presentation timestamp (decoding every frame and counting gives the same numbers)."""

    decoder = "pyav"

    def __init__(self, path: Source, probe: _Probe):
        self.path = path
        self.num_frames, self.fps, self.width, self.height = probe.num_frames, probe.fps, probe.width, probe.height
        self._pts = probe.pts
        self._pts_to_index: dict[int | None, int] = {pts: index for index, pts in enumerate(probe.pts or [])}
        self._keyframes = probe.keyframes
        self._container = _open_container(path)
        self._stream = self._container.streams.video[0]
        # Frame threads each hold a frame in flight: the largest frames are decoded by slices instead.
        self._stream.thread_type = "SLICE" if probe.stored_pixels > MAX_DECODED_PIXELS else "AUTO"
        self._frames: Iterator[av.VideoFrame] = iter(())
        self._position = -1  # index of the last decoded frame
        self.frames_decoded = 0  # decoding work done so far (benchmarks and tests read it)

    def _keyframe_before(self, index: int) -> int:
        if self._pts is None:
            return 0
        return self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]

    def _restart(self, index: int) -> None:
        """Seek to the keyframe at or before frame `index` and decode from there."""
        keyframe = self._keyframe_before(index)
        self._container.seek(self._pts[keyframe] if self._pts else 0, stream=self._stream, backward=True)
        self._frames = self._container.decode(self._stream)
        self._position = -1

    def _decode_to(self, target: int) -> av.VideoFrame | None:
        for frame in self._frames:
            self.frames_decoded += 1
            if self._pts is None:
                self._position += 1
            else:
                self._position = self._pts_to_index.get(frame.pts, self._position)
            if self._position == target:
                return frame
            if self._position > target:
                return None
        return None

    def _frame(self, target: int) -> av.VideoFrame:
        if target <= self._position or self._keyframe_before(target) > self._position + 1:
            self._restart(target)
        frame = self._decode_to(target)
        if frame is None and self._pts is not None:
            # The seek landed past the frame or the timestamps misled: count frames from the start.
            self._pts = None
            self._restart(0)
            frame = self._decode_to(target)
        if frame is None:
            raise VideoError(f"cannot decode frame {target} of {self.path}: the file is truncated or corrupt")
        return frame

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        for index in indices:
            try:
                frame = rgb_array(self._frame(index), self.path)
            except av.FFmpegError as error:
                raise VideoError(f"cannot decode {self.path}: {ffmpeg_reason(error)}") from None
            yield frame

    def close(self) -> None:
        self._container.close()


class DecordVideo(Video):
    """decord `VideoReader` on the CPU with one `get_batch` per read: the official decoder.

    With `fallback`, a read that decord fails (it rejects some valid files, e.g. frames 48 pixels
    wide) is served by PyAV instead, and so are all later reads.
    """

    decoder = "decord"

    def __init__(self, path: Source, probe: _Probe, fallback: bool = False, long: bool = False):
        import decord

        # FFmpeg inside decord logs every damaged packet to stderr; our errors say it in one line.
        decord.logging.set_level(decord.logging.QUIET)
        self.path = path
        self._probe = probe if fallback else None
        self._pyav: PyAVVideo | None = None
        self._long = long
        self._served = 0  # frames returned since the native reader was opened
        self.readers_opened = 0  # tests read it
        self._reader = self._open()
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        self.width, self.height = probe.width, probe.height

    def _open(self) -> decord.VideoReader:
        """decord's reader; for a long read in order (the timeline) on one decoding thread.

        What decord's reader holds grows with the frames it has served while the caller works between
        reads: a 5-minute 720p timeline reached 2.0 GB with FFmpeg's frame threads, still growing, where
        PyAV stays at 0.4 GB. One thread, and a new reader every `DECORD_REOPEN_FRAMES` frames (one
        seek, like any window's first frame), keep it near 1 GB whatever the length
        (benchmarks/bench_decoders.py)."""
        import decord

        self.readers_opened += 1
        try:
            return decord.VideoReader(media(self.path), ctx=decord.cpu(0), num_threads=1 if self._long else 0)
        except (decord.DECORDError, RuntimeError) as error:
            raise VideoError(f"decord cannot open {self.path}: {_decord_reason(error)}") from None
        except UnicodeEncodeError:  # decord passes names to C as UTF-8 only
            raise VideoError(f"decord cannot open {self.path}: its name is not UTF-8 (use --decoder pyav)") from None

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        for batch in batches(indices, self.width, self.height):
            yield from self._batch(batch)

    def _batch(self, indices: list[int]) -> np.ndarray:
        import decord

        if self._pyav is not None:
            return _stack(list(self._pyav._decode(indices)), self.mixed_sizes)
        if self._long and self._served >= DECORD_REOPEN_FRAMES:
            self._reader = None
            self._reader = self._open()
            self._served = 0
        self._served += len(indices)
        try:
            batch = self._reader.get_batch(indices)
        except (decord.DECORDError, RuntimeError) as error:
            if self._probe is None or self._probe.num_frames != self.num_frames:
                raise VideoError(f"decord cannot decode {self.path}: {_decord_reason(error)}") from None
            self._pyav = PyAVVideo(self.path, self._probe)
            self.decoder = "pyav"
            return _stack(list(self._pyav._decode(indices)), self.mixed_sizes)
        # decord's bridge is global state: another library may have switched it to torch.
        return np.asarray(batch.asnumpy() if hasattr(batch, "asnumpy") else batch)

    def close(self) -> None:
        # decord frees its native reader when the object is collected.
        self._reader = None
        if self._pyav is not None:
            self._pyav.close()


# --- torchcodec ----------------------------------------------------------------------------------------
# torchcodec links against the system's FFmpeg libraries (major versions 4 to 8) instead of bundling them:
# where they are missing its libraries fail to load, and `torchcodec_problem` says so in one line.

# What `pip install 'uniformer[torchcodec]'` installs; each torchcodec release is built for given torch
# releases (pyproject.toml pins the pair this project tests).
TORCHCODEC_HINT = "pip install 'uniformer[torchcodec]'"
FFMPEG_HINT = "install FFmpeg's shared libraries, e.g. `apt install ffmpeg` or `brew install ffmpeg`"


def torchcodec_installed() -> bool:
    return importlib.util.find_spec("torchcodec") is not None


@functools.cache
def torchcodec_problem() -> str | None:
    """None when torchcodec can decode here; otherwise why not, in one line (checked once per process:
    loading its libraries is what fails when FFmpeg is missing or torch is of another release)."""
    if not torchcodec_installed():
        return f"torchcodec is not installed ({TORCHCODEC_HINT})"
    try:
        import torchcodec.decoders  # noqa: F401  (loads the native libraries)
    except (OSError, RuntimeError, ImportError) as error:
        reason = first_line(error)
        if "libtorchcodec" in str(error) or "FFmpeg" in str(error):
            return f"torchcodec cannot load its FFmpeg libraries ({FFMPEG_HINT}): {reason}"
        return f"torchcodec cannot be loaded: {reason}"
    return None


@functools.cache
def torchcodec_usable() -> bool:
    """Whether torchcodec can decode here; where it is installed but cannot load, say so once."""
    problem = torchcodec_problem()
    if problem is not None and torchcodec_installed():
        logger.warning("%s: decoding with PyAV instead", problem)
    return problem is None


def fast_width(width: int) -> bool:
    """Whether torchcodec converts frames of this width to RGB on its fast path (swscale, for widths
    that are a multiple of 32); other widths go through an FFmpeg filter graph about 8x slower than
    PyAV (torchcodec 0.13, bench_decoders.py)."""
    return width % 32 == 0


def _torchcodec_reason(error: BaseException) -> str:
    """torchcodec's message without the C++ location it may start with."""
    return first_line(error).rsplit("] ", 1)[-1]


class TorchCodecVideo(Video):
    """torchcodec `VideoDecoder` on the CPU (exact seek mode, HWC frames), `get_frames_at` per batch.

    With `fallback`, a file whose frame count torchcodec sees differently from the probe, or a read
    it fails, is served by PyAV instead, and so are all later reads.
    """

    decoder = "torchcodec"

    def __init__(self, path: Source, probe: _Probe, fallback: bool = False):
        from torchcodec.decoders import VideoDecoder

        self.path = path
        self.num_frames, self.fps, self.width, self.height = probe.num_frames, probe.fps, probe.width, probe.height
        self._probe = probe if fallback else None
        self._pyav: PyAVVideo | None = None
        self._reader: VideoDecoder | None = None
        try:
            # 0 threads: FFmpeg picks, as PyAV's AUTO threading does.
            source: Any = path.data if isinstance(path, EncodedVideo) else media(path)  # a file object reads ranges
            self._reader = VideoDecoder(source, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=0)
        except (RuntimeError, ValueError) as error:
            if not fallback:
                raise VideoError(f"torchcodec cannot open {path}: {_torchcodec_reason(error)}") from None
            self._use_pyav()
            return
        if len(self._reader) != probe.num_frames:
            if not fallback:
                raise VideoError(
                    f"torchcodec counts {len(self._reader)} frames in {path} where its packets hold {probe.num_frames}"
                )
            self._use_pyav()

    def _use_pyav(self) -> None:
        assert self._probe is not None
        self._reader = None
        self._pyav = PyAVVideo(self.path, self._probe)
        self.decoder = "pyav"

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        for batch in batches(indices, self.width, self.height):
            yield from self._batch(batch)

    def _batch(self, indices: list[int]) -> np.ndarray:
        if self._pyav is None:
            assert self._reader is not None
            try:
                return self._reader.get_frames_at(indices).data.numpy()
            except (RuntimeError, IndexError, ValueError) as error:
                if self._probe is None:
                    raise VideoError(f"torchcodec cannot decode {self.path}: {_torchcodec_reason(error)}") from None
                self._use_pyav()
        assert self._pyav is not None
        return _stack(list(self._pyav._decode(indices)), self.mixed_sizes)

    def close(self) -> None:
        # torchcodec frees its decoder when the object is collected.
        self._reader = None
        if self._pyav is not None:
            self._pyav.close()


# `CheckedVideo`'s pipe (`data.checked` is the child's side): `F`, height and width (two little-endian
# uint32) and the RGB bytes of each frame; or `E`, a uint32 length and the UTF-8 message ending a read.
_FRAME, _ERROR = b"F", b"E"
_SIZE = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
MAX_MESSAGE_BYTES = 1 << 16


class CheckedVideo(Video):
    """A video whose frames `decoder` decodes in a child process (`data.checked`), for files whose probe
    found them suspicious (`_Probe.hazard`): an abort there (a signal, or an exit without a message) is
    one `VideoError` naming the video, the decoder and the signal. Its frame count, rate and size come
    from the parent's probe, as the child's own reader finds them. A video held in memory or at a URL is
    handed to the child as a temporary file, removed on `close`."""

    def __init__(self, path: Source, probe: _Probe, decoder: str) -> None:
        self.path = path
        self.num_frames, self.fps, self.width, self.height = probe.num_frames, probe.fps, probe.width, probe.height
        self.decoder = decoder
        self.hazard = probe.hazard
        self._child: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._copy: Path | None = None  # the temporary file of a video held in memory

    def _start(self) -> subprocess.Popen[bytes]:
        if self._child is None:
            file = self.path
            if isinstance(file, EncodedVideo | RemoteVideo):
                if self._copy is None:
                    descriptor, name = tempfile.mkstemp(
                        suffix=storage.suffix_of(str(file)), prefix="uniformer-checked-"
                    )
                    with os.fdopen(descriptor, "wb") as stream:
                        if isinstance(file, EncodedVideo):
                            stream.write(file.data)
                        else:
                            with file.open() as remote:
                                shutil.copyfileobj(remote, stream, REMOTE_BLOCK_BYTES)
                    self._copy = Path(name)
                file = self._copy
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open while the child lives (`close`)
            child = "uniformer_cli.data.checked"
            command: list[str | bytes] = [sys.executable, "-m", child, self.decoder, os.fsencode(file)]
            self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        return self._child

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        child = self._start()
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(json.dumps(indices).encode() + b"\n")
            child.stdin.flush()
        except OSError:  # it died before this read: its exit status says why
            raise self._died() from None
        for _ in indices:
            tag = child.stdout.read(1)
            if tag == _ERROR:
                (length,) = _LENGTH.unpack(_exactly(child.stdout, _LENGTH.size))
                message = _exactly(child.stdout, min(length, MAX_MESSAGE_BYTES)).decode("utf-8", "replace")
                raise VideoError(message)
            if tag != _FRAME:
                raise self._died()
            height, width = _SIZE.unpack(_exactly(child.stdout, _SIZE.size))
            if width * height > MAX_DECODED_PIXELS:  # the child decodes at `decode_size`: never more
                raise VideoError(f"the decoder of {self.path} sent a {width}x{height} frame")
            yield np.frombuffer(_exactly(child.stdout, height * width * 3), np.uint8).reshape(height, width, 3)

    def _died(self) -> VideoError:
        """The error of a child that stopped answering: the signal it died of, or its last words."""
        assert self._child is not None and self._stderr is not None
        self._child.kill()
        status = self._child.wait()
        self._child = None
        self._stderr.seek(0)
        said = [line.strip() for line in self._stderr.read()[-4096:].decode("utf-8", "replace").splitlines()]
        last = next((line for line in reversed(said) if line), "")
        how = f"crashed ({signal.Signals(-status).name})" if status < 0 else f"stopped (exit status {status})"
        detail = f" ({last})" if last else ""
        advice = " (--decoder pyav reads it)" if self.decoder != "pyav" else ""
        return VideoError(
            f"the {self.decoder} decoder {how} on {self.path}{detail}, in the separate process it ran in "
            f"because {self.hazard}{advice}"
        )

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            assert child.stdin is not None
            try:
                child.stdin.close()  # the end of the requests: it exits
                child.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._copy is not None:
            self._copy.unlink(missing_ok=True)
            self._copy = None


def _exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _frame_file_numbers(folder: Path) -> dict[int, Path]:
    """The frame files of a folder: the largest group of `<prefix><number>.<image ext>` names."""
    groups: dict[tuple[str, str], dict[int, Path]] = {}
    for entry in folder.iterdir():
        match = _FRAME_FILE.match(entry.name)
        if match and match["ext"].lower() in IMAGE_EXTENSIONS and entry.is_file():
            groups.setdefault((match["prefix"], match["ext"]), {})[int(match["number"])] = entry
    return max(groups.values(), key=len, default={})


def is_frame_folder(folder: Path) -> bool:
    return folder.is_dir() and bool(_frame_file_numbers(folder))


def frame_folder_files(folder: Path) -> list[Path]:
    """The frame files of a frame folder in frame order (`_frame_file_numbers`, from its first number on);
    a `VideoError` for a folder without any, or with a number missing between its first and last."""
    numbers = _frame_file_numbers(folder)
    if not numbers:
        raise VideoError(f"{folder} is a folder without numbered image frames (e.g. img_00001.jpg)")
    first = min(numbers)
    missing = sorted(set(range(first, first + len(numbers))) - set(numbers))
    if missing:
        raise VideoError(f"frame folder {folder} has gaps: frame number {missing[0]} is missing")
    return [numbers[first + k] for k in range(len(numbers))]


def _decode_image(file: Source) -> np.ndarray:
    try:
        with av.open(media(file), mode="r") as container:
            return rgb_array(next(container.decode(video=0)), file)
    except (av.FFmpegError, OSError, ValueError, StopIteration) as error:
        raise VideoError(f"cannot decode frame file {file}: {ffmpeg_reason(error)}") from None


def _image_size(file: Source) -> tuple[int, int]:
    """`(width, height)` of an image file as decoded (`decode_size`), from its header."""
    try:
        with av.open(media(file), mode="r") as container:
            context = container.streams.video[0].codec_context
            return decode_size(file, context.width, context.height)
    except (av.FFmpegError, OSError, ValueError, IndexError) as error:
        raise VideoError(f"cannot decode frame file {file}: {ffmpeg_reason(error)}") from None


class FrameFolderVideo(Video):
    """A folder of numbered JPEG/PNG frames (`00001.jpg`, `img_00001.jpg`...; `frame_folder_files`): index `k`
    reads the `k`-th number from the first one (file 1 for the Sth/HMDB folders, PROTOCOLS.md 2.2), decoded to RGB
    with PyAV. The Sth/HMDB checkpoints want BGR: the view protocol reverses channels, not this.
    `from_frames` makes one of frame files held in memory (a packed frame folder)."""

    decoder = "frames"

    def __init__(self, folder: Path):
        self._start(folder, frame_folder_files(folder))

    def _start(self, name: Source, files: Sequence[Source]) -> None:
        self.path = name
        self._files = list(files)
        self.num_frames = len(self._files)
        self.fps = FRAME_FOLDER_FPS
        self.width, self.height = _image_size(self._files[0])

    @classmethod
    def from_frames(cls, name: str, frames: Sequence[bytes]) -> FrameFolderVideo:
        """Frames `frames[k]` (encoded images, in frame order) of a folder that `name` names."""
        if not frames:
            raise VideoError(f"{name} holds no frames")
        video = cls.__new__(cls)
        video._start(EncodedVideo(name, b""), [EncodedVideo(f"{name}#{k + 1}", data) for k, data in enumerate(frames)])
        return video

    @property
    def frame_files(self) -> list[Source]:
        """The frame files, in frame order."""
        return list(self._files)

    @property
    def mixed_sizes(self) -> str:
        return f"frame folder {self.path} mixes image sizes"

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        return (_decode_image(self._files[index]) for index in indices)

    def close(self) -> None:
        """Nothing stays open: each frame file is opened and closed as it is read."""


def check_decoder(decoder: str) -> None:
    """A one-line error for an unknown or missing decoder. torchcodec asked for by name is loaded here,
    before any DataLoader worker starts: where it cannot load its FFmpeg libraries that is noted once, and
    PyAV decodes instead."""
    if decoder not in DECODERS:
        raise UniformerError(f"unknown decoder {decoder!r} (use one of {', '.join(DECODERS)})")
    if decoder == "decord" and not decord_available():
        raise UniformerError("decord is not installed (`pip install decord`, x86-64 only): use --decoder pyav")
    if decoder == "torchcodec":  # `auto` loads torchcodec (about 2 s) only for a video it would decode
        if not torchcodec_installed():
            raise UniformerError(f"torchcodec is not installed ({TORCHCODEC_HINT}): use --decoder pyav")
        torchcodec_usable()


def choose_decoder(decoder: str, workload: Workload, width: int) -> str:
    """The decoder that reads a video `width` pixels wide for `workload` (`AUTO_DECODERS`); torchcodec,
    asked for by name where it cannot load, gives way to PyAV (noted once)."""
    if decoder != "auto":
        return "pyav" if decoder == "torchcodec" and not torchcodec_usable() else decoder
    for candidate in AUTO_DECODERS[workload]:
        if candidate == "decord" and decord_available():
            return candidate
        if candidate == "torchcodec" and fast_width(width) and torchcodec_usable():
            return candidate
    return "pyav"


def remote_video(url: str) -> RemoteVideo:
    """A video file at a storage URL, checked to be there and not empty: a dataset at a URL is read a
    video at a time, in ranges, never copied to the local disk. Frame folders are read from local disks
    or packed shards."""
    if storage.suffix_of(url) not in VIDEO_EXTENSIONS:
        raise VideoError(f"{url}: only video files are read from URLs (pack frame folders: uniformer data pack)")
    try:
        size = storage.size_of(url)
    except DatasetError as error:
        raise VideoError(str(error)) from None
    if size == 0:
        raise VideoError(f"{url} is empty (0 bytes)")
    return RemoteVideo(url)


@functools.cache
def _note_streaming(decoder: str) -> None:
    """Said once a process: decord reads a file object whole into memory, so PyAV decodes URLs."""
    log = logger.info if decoder == "decord" else logger.debug
    log("decord reads a whole file into memory: videos at URLs are decoded by PyAV, which reads them in ranges")


def open_video(
    path: str | Path | EncodedVideo | RemoteVideo,
    decoder: Decoder | str = "auto",
    workload: Workload = "views",
    *,
    guarded: bool = True,
) -> Video:
    """Open a video file, a frame folder or a video held in memory, for `workload` (what will be read,
    see `AUTO_DECODERS`).

    `auto` picks the fastest decoder installed for the workload and the video (`choose_decoder`); frames
    above 1080p always go to PyAV, which decodes them one at a time (decord's buffers take gigabytes),
    and decord's failures on files PyAV reads fall back to PyAV. All decoders return identical frames
    for the same indices. Every file is first checked with PyAV, which reads the header and the packet
    list without decoding: that catches bad input with a clear message before a native decoder could
    print its own errors, and gives the frame size. A file whose claims could crash a native decoder
    (`_Probe.hazard`) is decoded by `decoder` in a checked child process (`CheckedVideo`; `auto` means
    PyAV there), so that an abort is one error line; `guarded=False` is that child's own call.
    """
    check_decoder(decoder)
    if workload not in AUTO_DECODERS:
        raise ValueError(f"unknown decoding workload {workload!r}")
    source: Source
    if isinstance(path, str) and storage.is_url(path):
        path = remote_video(path)
    if isinstance(path, RemoteVideo):
        source = path
    elif isinstance(path, EncodedVideo):
        source = path
        if not source.data:
            raise VideoError(f"{source} is empty (0 bytes)")
    else:
        source = Path(path)
        try:
            status = source.stat()
        except FileNotFoundError:
            raise VideoError(f"no such file or folder: {source}") from None
        except OSError as error:
            raise VideoError(f"cannot open {source}: {error.strerror or error}") from None
        if stat.S_ISDIR(status.st_mode):
            return FrameFolderVideo(source)
        if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block or never end: streams take `-`
            raise VideoError(f"{source} is not a regular file (a pipe or a device): pipe a stream to `-` instead")
        if status.st_size == 0:
            raise VideoError(f"{source} is empty (0 bytes)")
    probe = _probe(source)
    if probe.hazard is not None and guarded:  # every decoder passes here: none sees it in this process
        return CheckedVideo(source, probe, "pyav" if decoder == "auto" else decoder)
    chosen = choose_decoder(decoder, workload, probe.width)
    if decoder == "auto" and probe.width * probe.height > DECORD_MAX_PIXELS:
        chosen = "pyav"
    # decord and torchcodec decode at the stored size: frames that must be shrunk always go to PyAV.
    if probe.stored_pixels > MAX_DECODED_PIXELS:
        chosen = "pyav"
    if chosen == "decord" and isinstance(source, RemoteVideo):  # it cannot read in ranges
        _note_streaming(decoder)
        chosen = "pyav"
    if chosen == "torchcodec":
        return TorchCodecVideo(source, probe, fallback=decoder == "auto")
    if chosen == "pyav":
        return PyAVVideo(source, probe)
    try:
        return DecordVideo(source, probe, fallback=decoder == "auto", long=workload == "timeline")
    except VideoError:
        if decoder == "decord":
            raise
        return PyAVVideo(source, probe)
