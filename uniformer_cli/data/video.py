"""Video decoding: decord (fast random access) or PyAV (always installed), and JPEG frame folders.

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
import importlib.util
import math
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np

from uniformer_cli.errors import UniformerError, VideoError, first_line

Decoder = Literal["auto", "decord", "pyav"]
DECODERS: tuple[str, ...] = ("auto", "decord", "pyav")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
# Frame folders carry no frame rate; the Sth/HMDB frames were extracted at 30 fps (PROTOCOLS.md 2.2).
FRAME_FOLDER_FPS = 30.0
_FRAME_FILE = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<ext>\.[A-Za-z]+)$")


def decord_available() -> bool:
    return importlib.util.find_spec("decord") is not None


def _reason(error: BaseException) -> str:
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

    path: Path
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


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"cannot open {path}: not a video, or truncated or corrupt ({_reason(error)})") from None


def _probe(path: Path) -> _Probe:
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
    if len(known) < count or len(set(known)) < count:
        return _Probe(count, fps, width, height, stored, None, [0])
    order = sorted(range(count), key=known.__getitem__)
    keyframes = [index for index, packet in enumerate(order) if is_key[packet]]
    return _Probe(count, fps, width, height, stored, [known[packet] for packet in order], keyframes or [0])


class PyAVVideo(Video):
    """PyAV reader that decodes only what it needs: it decodes forward while the next wanted frame is
    before the next keyframe, and otherwise seeks to the keyframe at or before it. Frames are numbered
    by their presentation timestamp (decoding every frame and counting gives the same numbers)."""

    decoder = "pyav"

    def __init__(self, path: Path, probe: _Probe):
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
                raise VideoError(f"cannot decode {self.path}: {_reason(error)}") from None
            yield frame

    def close(self) -> None:
        self._container.close()


class DecordVideo(Video):
    """decord `VideoReader` on the CPU with one `get_batch` per read: the official decoder.

    With `fallback`, a read that decord fails (it rejects some valid files, e.g. frames 48 pixels
    wide) is served by PyAV instead, and so are all later reads.
    """

    decoder = "decord"

    def __init__(self, path: Path, probe: _Probe, fallback: bool = False):
        import decord

        # FFmpeg inside decord logs every damaged packet to stderr; our errors say it in one line.
        decord.logging.set_level(decord.logging.QUIET)
        self.path = path
        self._probe = probe if fallback else None
        self._pyav: PyAVVideo | None = None
        try:
            self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        except (decord.DECORDError, RuntimeError) as error:
            raise VideoError(f"decord cannot open {path}: {_decord_reason(error)}") from None
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        self.width, self.height = probe.width, probe.height

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        per_batch = max(1, DECODE_BATCH_BYTES // max(1, self.width * self.height * 3))
        for start in range(0, len(indices), per_batch):
            yield from self._batch(indices[start : start + per_batch])

    def _batch(self, indices: list[int]) -> np.ndarray:
        import decord

        if self._pyav is not None:
            return _stack(list(self._pyav._decode(indices)), self.mixed_sizes)
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


def _decode_image(file: Path) -> np.ndarray:
    try:
        with av.open(str(file)) as container:
            return rgb_array(next(container.decode(video=0)), file)
    except (av.FFmpegError, OSError, ValueError, StopIteration) as error:
        raise VideoError(f"cannot decode frame file {file}: {_reason(error)}") from None


def _image_size(file: Path) -> tuple[int, int]:
    """`(width, height)` of an image file as decoded (`decode_size`), from its header."""
    try:
        with av.open(str(file)) as container:
            context = container.streams.video[0].codec_context
            return decode_size(file, context.width, context.height)
    except (av.FFmpegError, OSError, ValueError, IndexError) as error:
        raise VideoError(f"cannot decode frame file {file}: {_reason(error)}") from None


class FrameFolderVideo(Video):
    """A folder of numbered JPEG/PNG frames (`00001.jpg`, `img_00001.jpg`...): index `k` reads the
    `k`-th number from the first one (file 1 for the Sth/HMDB folders, PROTOCOLS.md 2.2), decoded to RGB
    with PyAV. The Sth/HMDB checkpoints want BGR: the view protocol reverses channels, not this."""

    decoder = "frames"

    def __init__(self, folder: Path):
        numbers = _frame_file_numbers(folder)
        if not numbers:
            raise VideoError(f"{folder} is a folder without numbered image frames (e.g. img_00001.jpg)")
        first = min(numbers)
        missing = sorted(set(range(first, first + len(numbers))) - set(numbers))
        if missing:
            raise VideoError(f"frame folder {folder} has gaps: frame number {missing[0]} is missing")
        self.path = folder
        self._files = [numbers[first + k] for k in range(len(numbers))]
        self.num_frames = len(self._files)
        self.fps = FRAME_FOLDER_FPS
        self.width, self.height = _image_size(self._files[0])

    @property
    def mixed_sizes(self) -> str:
        return f"frame folder {self.path} mixes image sizes"

    def _decode(self, indices: list[int]) -> Iterator[np.ndarray]:
        return (_decode_image(self._files[index]) for index in indices)

    def close(self) -> None:
        """Nothing stays open: each frame file is opened and closed as it is read."""


def open_video(path: str | Path, decoder: Decoder | str = "auto") -> Video:
    """Open a video file or a frame folder.

    `auto` uses decord when it is installed and PyAV otherwise (or when decord fails on a file PyAV
    reads, or for frames larger than 1080p, where decord's buffers take gigabytes); both return
    identical frames for the same indices. Every file is first checked with
    PyAV, which reads the header and the packet list without decoding: that catches bad input with a
    clear message before decord could print native errors, and gives the frame size.
    """
    if decoder not in DECODERS:
        raise UniformerError(f"unknown decoder {decoder!r} (use one of {', '.join(DECODERS)})")
    if decoder == "decord" and not decord_available():
        raise UniformerError("decord is not installed (`pip install decord`, x86-64 only): use --decoder pyav")
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise VideoError(f"no such file or folder: {path}") from None
    except OSError as error:
        raise VideoError(f"cannot open {path}: {error.strerror or error}") from None
    if stat.S_ISDIR(status.st_mode):
        return FrameFolderVideo(path)
    if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block or never end: streams take `-`
        raise VideoError(f"{path} is not a regular file (a pipe or a device): pipe a stream to `-` instead")
    if status.st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    probe = _probe(path)
    large = probe.width * probe.height > DECORD_MAX_PIXELS
    # decord decodes at the stored size: frames that must be shrunk always go to PyAV.
    shrunk = probe.stored_pixels > MAX_DECODED_PIXELS
    if decoder == "pyav" or not decord_available() or (decoder == "auto" and large) or shrunk:
        return PyAVVideo(path, probe)
    try:
        return DecordVideo(path, probe, fallback=decoder == "auto")
    except VideoError:
        if decoder == "decord":
            raise
        return PyAVVideo(path, probe)
