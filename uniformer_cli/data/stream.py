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

from uniformer_cli.data.video import rgb_array
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
            raise VideoError(f"{self.source}: the stream broke off ({error})") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(source: str) -> Stream:
    """Open stdin, a URL or a device (see the module doc); one-line `VideoError`s on failure."""
    try:
        if source == STDIN:
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
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise VideoError(f"cannot open {name}: {reason}") from None
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
