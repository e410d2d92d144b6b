"""The child process of `video.CheckedVideo`: decoding apart, for containers a native decoder may crash on.

A native decoder that fails an allocation or an assertion aborts the whole process (decord on a Matroska
file whose timestamps start at 1e9 s: `std::bad_alloc`, SIGABRT), with no message and no chance to save
anything. `video.open_video` probes every file first; one whose claims are suspicious (`_Probe.hazard`)
is opened as a `CheckedVideo` instead, which runs the decoder here, in a child process (`python -m
uniformer_cli.data.checked DECODER PATH`), and receives the frames through a pipe: an abort here is one
`VideoError` there, naming the video, the decoder and the signal, and the command goes on with the next
video. Ordinary files never pay for it: the probe's check is a few comparisons on what it already read.

Protocol: the parent writes one JSON line of sorted, distinct frame indices per read; the child answers
each frame with `F`, its height and width (two little-endian uint32) and its RGB bytes, or ends the read
with `E`, a uint32 length and a UTF-8 message (a `VideoError` there). A child that dies mid-read (a
signal, or an exit without a message) ends the read with the error that says so.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import IO

import numpy as np

from uniformer_cli.data.video import _ERROR, _FRAME, _LENGTH, _SIZE, MAX_MESSAGE_BYTES, Video, open_video
from uniformer_cli.errors import VideoError


def _serve(decoder: str, path: Path, requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child: open `path` with `decoder` (unguarded: this process is the guard) and answer each
    request line with its frames, or with the `VideoError` that ended it."""
    video: Video | None = None
    for line in requests:
        try:
            if video is None:
                video = open_video(path, decoder, guarded=False)
            for frame in video.iter_frames(json.loads(line)):
                answers.write(_FRAME + _SIZE.pack(frame.shape[0], frame.shape[1]))
                answers.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except Exception as error:  # every failure goes back as the read's error
            message = str(error) if isinstance(error, VideoError) else f"{type(error).__name__}: {error}"
            encoded = message.encode("utf-8", "surrogateescape")[:MAX_MESSAGE_BYTES]
            answers.write(_ERROR + _LENGTH.pack(len(encoded)) + encoded)
        answers.flush()
    if video is not None:
        video.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    _serve(sys.argv[1], Path(sys.argv[2]), sys.stdin.buffer, sys.stdout.buffer)
