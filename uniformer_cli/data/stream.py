"""Live and piped video: a container on stdin (`-`), network URLs (rtsp://, http(s)://, udp://, ...) and
capture devices that FFmpeg opens (`v4l2:/dev/video0`, `avfoundation:0`, `dshow:video=NAME`,
`x11grab::0.0`, `lavfi:testsrc`; a bare `/dev/video*` means v4l2).

A stream has no length and cannot seek: frames are decoded in order, once, and handed on one at a time.
Timelines cut a stream into windows as it comes (`data.windows`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from uniformer_cli.data.video import ffmpeg_reason, rgb_array
from uniformer_cli.errors import VideoError

STDIN = "-"
URL = re.compile(r"^(rtsp|rtsps|rtmp|rtmps|http|https|udp|tcp|srt|rtp|mms|ftp)://", re.IGNORECASE)
# FFmpeg input devices, as FORMAT:DEVICE.
DEVICE = re.compile(r"^(v4l2|video4linux2|avfoundation|dshow|x11grab|gdigrab|kmsgrab|lavfi|android_camera):(.*)$")
NETWORK_TIMEOUT_S = 15.0  # opening and each read: a dead camera fails instead of hanging


def is_stream(source: str) -> bool:
    """Whether `source` names stdin, a URL or a capture device rather than a file."""
    return source == STDIN or bool(URL.match(source) or DEVICE.match(source)) or source.startswith("/dev/video")


@dataclass
class Stream:
    """An opened stream: its name, nominal frame rate and size, and its frames in order."""

    source: str
    fps: float
    width: int
    height: int
    container: av.container.InputContainer

    def frames(self) -> Iterator[np.ndarray]:
        """uint8 RGB frames `[H, W, 3]`, decoded in order until the stream ends."""
        try:
            for frame in self.container.decode(video=0):
                yield rgb_array(frame, self.source)  # each frame's size checked, and shrunk where too large
        except av.FFmpegError as error:
            piped = self.source == STDIN and not _seekable(sys.stdin.buffer)
            if piped and MP4_FAMILY & set(self.container.format.name.split(",")):
                raise VideoError(index_at_end()) from None  # the index came too late, whatever FFmpeg says
            name = "stdin" if self.source == STDIN else self.source
            raise VideoError(f"{name}: the stream broke off ({ffmpeg_reason(error)})") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MP4_FAMILY = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}  # FFmpeg's names of the ISO base media demuxer
PEEK_BYTES = 4096  # how far into stdin the top-level MP4 boxes are looked for


def _seekable(stream: object) -> bool:
    """Whether a stream can seek (a file redirected to stdin can; a pipe cannot)."""
    try:
        return bool(getattr(stream, "seekable", lambda: False)())
    except (OSError, ValueError):
        return False


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


def open_stream(source: str) -> Stream:
    """Open stdin, a URL or a device (see the module doc); one-line `VideoError`s on failure. A piped MP4
    whose index follows its frames is refused at once, with what to do instead (`index_at_end`)."""
    try:
        if source == STDIN:
            if not _seekable(sys.stdin.buffer):  # a pipe; a file redirected to stdin can seek to its index
                head = sys.stdin.buffer.peek(PEEK_BYTES)[:PEEK_BYTES] if hasattr(sys.stdin.buffer, "peek") else b""
                if mp4_index_first(head) is False:
                    raise VideoError(index_at_end())
            container = av.open(sys.stdin.buffer, mode="r")
        elif device := DEVICE.match(source):
            container = av.open(device[2], format="v4l2" if device[1] == "video4linux2" else device[1])
        elif source.startswith("/dev/video"):
            container = av.open(source, format="v4l2")
        else:
            options = {"rtsp_transport": "tcp"} if source.lower().startswith("rtsp") else {}
            container = av.open(source, options=options, timeout=NETWORK_TIMEOUT_S)
    except (av.FFmpegError, OSError, ValueError) as error:
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
    return Stream(source, float(rate), video.codec_context.width, video.codec_context.height, container)
