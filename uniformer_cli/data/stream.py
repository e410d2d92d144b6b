"""Live and piped video: a container on stdin (`-`), network URLs (rtsp://, http(s)://, udp://, ...) and
capture devices that FFmpeg opens (`v4l2:/dev/video0`, `avfoundation:0`, `dshow:video=NAME`,
`x11grab::0.0`, `lavfi:testsrc`; a bare `/dev/video*` means v4l2).

A stream has no length and cannot seek: frames are decoded in order, once, and handed on one at a time.
Timelines cut a stream into windows as it comes (`data.windows`).
"""

from __future__ import annotations

import os
import re
import select
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from uniformer_cli.data.video import ffmpeg_reason, rgb_array
from uniformer_cli.errors import Terminated, VideoError

STDIN = "-"
URL = re.compile(r"^(rtsp|rtsps|rtmp|rtmps|http|https|udp|tcp|srt|rtp|mms|ftp)://", re.IGNORECASE)
# FFmpeg input devices, as FORMAT:DEVICE.
DEVICE = re.compile(r"^(v4l2|video4linux2|avfoundation|dshow|x11grab|gdigrab|kmsgrab|lavfi|android_camera):(.*)$")
NETWORK_TIMEOUT_S = 15.0  # opening and each read: a dead camera fails instead of hanging


def is_stream(source: str) -> bool:
    """Whether `source` names stdin, a URL or a capture device rather than a file."""
    return source == STDIN or bool(URL.match(source) or DEVICE.match(source)) or source.startswith("/dev/video")


class _WakefulReader:
    """stdin as PyAV reads it when it is a pipe, a socket or a terminal: each read waits at most
    `WAKE_SECONDS` at a time, so that Ctrl-C and SIGTERM are handled while the stream is idle (a plain read
    blocks until the producer writes or closes). PyAV swallows exceptions raised inside a read: the signal's
    exception is kept, the stream ends there, and `Stream.frames` raises it."""

    WAKE_SECONDS = 0.2

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.stopped: BaseException | None = None
        self.peeked = b""  # read ahead by `peek`, given out first

    def _read(self, size: int) -> bytes:
        if self.stopped is not None:
            return b""
        try:
            while not select.select([self.descriptor], [], [], self.WAKE_SECONDS)[0]:
                pass
            return os.read(self.descriptor, size)
        except (KeyboardInterrupt, Terminated) as stop:
            self.stopped = stop
            return b""

    def read(self, size: int) -> bytes:
        if self.peeked:
            data, self.peeked = self.peeked[:size], self.peeked[size:]
            return data
        return self._read(size)

    def peek(self, size: int) -> bytes:
        """The stream's first `size` bytes (fewer if it ends sooner), read ahead and kept for `read`."""
        while len(self.peeked) < size:
            data = self._read(size - len(self.peeked))
            if not data:
                break
            self.peeked += data
        return self.peeked[:size]

    def seekable(self) -> bool:
        return False


def _stdin() -> object:
    """What PyAV reads for `-`: stdin's bytes (a regular file as it is, seekable; a pipe through
    `_WakefulReader`). A `VideoError` when there is no stdin to read (closed, or a terminal)."""
    stdin = sys.stdin
    if stdin is None or getattr(stdin, "closed", False):
        raise VideoError(
            "stdin is closed: pipe a video stream into `-` (e.g. `ffmpeg ... -f mpegts - | uniformer predict -`)"
        )
    buffer = getattr(stdin, "buffer", stdin)
    try:
        descriptor = buffer.fileno()
        mode = os.fstat(descriptor).st_mode
    except (AttributeError, OSError, ValueError):  # an in-memory stream: nothing waits on it
        return buffer
    if os.isatty(descriptor):
        raise VideoError(
            "stdin is a terminal: pipe a video stream into `-` (e.g. `ffmpeg ... -f mpegts - | uniformer predict -`)"
        )
    return buffer if stat.S_ISREG(mode) else _WakefulReader(descriptor)


@dataclass
class Stream:
    """An opened stream: its name, nominal frame rate and size, and its frames in order."""

    source: str
    fps: float
    width: int
    height: int
    container: av.container.InputContainer
    reader: _WakefulReader | None = None  # stdin's, when it is a pipe

    def _check_stopped(self) -> None:
        if self.reader is not None and self.reader.stopped is not None:
            raise self.reader.stopped

    def frames(self) -> Iterator[np.ndarray]:
        """uint8 RGB frames `[H, W, 3]`, decoded in order until the stream ends (or a signal stops it:
        its `KeyboardInterrupt` or `Terminated` is raised)."""
        try:
            for frame in self.container.decode(video=0):
                self._check_stopped()
                yield rgb_array(frame, self.source)  # each frame's size checked, and shrunk where too large
        except av.FFmpegError as error:
            self._check_stopped()
            if self.reader is not None and MP4_FAMILY & set(self.container.format.name.split(",")):
                raise VideoError(index_at_end()) from None  # the index came too late, whatever FFmpeg says
            name = "stdin" if self.source == STDIN else self.source
            raise VideoError(f"{name}: the stream broke off ({ffmpeg_reason(error)})") from None
        self._check_stopped()

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MP4_FAMILY = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}  # FFmpeg's names of the ISO base media demuxer
PEEK_BYTES = 4096  # how far into stdin the top-level MP4 boxes are looked for


def index_at_end() -> str:
    """Why a piped MP4 whose index follows its frames cannot be read, and the three ways around it."""
    return (
        "stdin: this MP4 keeps its index (the moov box) after its frames, and a pipe cannot seek back to the "
        "frames once the index arrives: give the file's path instead (uniformer predict FILE.mp4 --timeline "
        "2), or remux it with the index first (ffmpeg -i IN.mp4 -c copy -movflags +faststart OUT.mp4), or pipe "
        "a streamable container (ffmpeg -i IN.mp4 -f mpegts - | uniformer predict - ...)"
    )


def mp4_index_first(head: bytes) -> bool | None:
    """From the first bytes of a file: whether it is an MP4 (its first box `ftyp`) whose index (`moov`)
    comes before its frames (`mdat`); None when it is not an MP4 or `head` ends before either box."""
    offset, first = 0, True
    while offset + 8 <= len(head):
        size, kind = int.from_bytes(head[offset : offset + 4], "big"), head[offset + 4 : offset + 8]
        if first and kind != b"ftyp":
            return None
        first = False
        if kind in (b"moov", b"mdat"):
            return kind == b"moov"
        if size == 1 and offset + 16 <= len(head):  # a 64-bit size follows the type
            size = int.from_bytes(head[offset + 8 : offset + 16], "big")
        if size < 8:  # 0 (to the end of the file), a malformed size, or one cut off: nothing more to learn
            return None
        offset += size
    return None


def check_stream(source: str) -> None:
    """Fail now, in one line, if `source` is stdin and there is none to read (closed, or a terminal):
    before a model is loaded for it."""
    if source == STDIN:
        _stdin()


def open_stream(source: str) -> Stream:
    """Open stdin, a URL or a device (see the module doc); one-line `VideoError`s on failure. A piped MP4
    whose index follows its frames is refused at once, with what to do instead (`index_at_end`)."""
    reader = None
    try:
        if source == STDIN:
            stdin = _stdin()
            if isinstance(stdin, _WakefulReader):  # a pipe; a file redirected to stdin can seek to its index
                reader = stdin
                if mp4_index_first(reader.peek(PEEK_BYTES)) is False:
                    raise VideoError(index_at_end())
            container = av.open(stdin, mode="r")
        elif device := DEVICE.match(source):
            container = av.open(device[2], format="v4l2" if device[1] == "video4linux2" else device[1])
        elif source.startswith("/dev/video"):
            container = av.open(source, format="v4l2")
        else:
            options = {"rtsp_transport": "tcp"} if source.lower().startswith("rtsp") else {}
            container = av.open(source, options=options, timeout=NETWORK_TIMEOUT_S)
    except (av.FFmpegError, OSError, ValueError) as error:
        if reader is not None and reader.stopped is not None:
            raise reader.stopped from None
        name = "stdin" if source == STDIN else source
        raise VideoError(f"cannot open {name}: {ffmpeg_reason(error)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{source} has no video stream")
    video = container.streams.video[0]
    rate = video.average_rate or video.guessed_rate or video.base_rate or video.codec_context.framerate
    if not rate:
        container.close()
        raise VideoError(f"{source} does not say its frame rate, which the timeline's windows are measured in")
    video.thread_type = "AUTO"
    return Stream(source, float(rate), video.codec_context.width, video.codec_context.height, container, reader)
