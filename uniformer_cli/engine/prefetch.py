"""`uniformer predict`'s first video, decoded while torch is imported and the model opened.

The test protocol is known before the model loads (`request.planned_protocol`: the zoo table or the
weights' header), so a thread opens the first video and decodes the frames its views need (PyAV or decord,
no torch) while the main thread imports torch and opens the model. Decoded frames wait, at most
`READ_AHEAD_BYTES` of them, until torch is there; the thread then shrinks them and builds the views with
`data.views.views_from_frames`, the rules every other video goes through. `Predictor.predict_many` takes
the result for its first video only when the opened model's protocol and decoder are the planned ones
(else the thread is stopped and the video decoded as usual), and a failure of that decode surfaces there
as any video's does: one failed input, the rest go on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniformer_cli.data.sampling import view_frame_indices
from uniformer_cli.data.video import check_decoder, open_video
from uniformer_cli.engine.request import InferenceRequest, planned_protocol
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ViewProtocol

log = logging.getLogger(__name__)

# Source-resolution frames decoded ahead while torch loads (26 MB holds all 64 frames of a 426x320 clip's
# four 16-frame views; a 1080p source stops after ~20 frames and goes on once torch is there).
READ_AHEAD_BYTES = 128 * 2**20


@dataclass(frozen=True)
class LoadedVideo:
    """A decoded and preprocessed video, ready for the model."""

    views: Any  # float32 `[V, 3, T, S, S]`: a torch.Tensor, or a numpy array on the torch-free route
    num_frames: int
    fps: float
    seconds: float  # decoding and preprocessing time


class _Stopped(Exception):
    """The first video was not needed after all (the model failed to open, or runs another protocol)."""


class FirstVideo:
    """The views of `path` under `protocol`, decoded with `decoder` in a daemon thread (`start`): a
    torch.Tensor, or with `arrays` a numpy array made by `data.portable` (the torch-free route)."""

    def __init__(self, path: str | Path, protocol: ViewProtocol, decoder: str, arrays: bool = False) -> None:
        self.path = str(path)
        self.protocol = protocol
        self.decoder = decoder
        self.arrays = arrays
        self._stop = threading.Event()
        self._result: Future[LoadedVideo] = Future()
        self._thread = threading.Thread(target=self._run, name="uniformer-first-video", daemon=True)

    def start(self) -> FirstVideo:
        self._thread.start()
        return self

    def serves(self, path: str | Path, protocol: ViewProtocol, decoder: str, arrays: bool = False) -> bool:
        """Whether this is the video a predictor wants, under the protocol and decoder it runs with, as
        the views it takes (numpy `arrays`, or tensors)."""
        return (
            self.path == str(path) and self.protocol == protocol and self.decoder == decoder and self.arrays == arrays
        )

    def result(self) -> LoadedVideo:
        """The views, once decoded; the decode's own exception (a `VideoError` names the video)."""
        return self._result.result()

    def stop(self) -> None:
        """Stop decoding (between two frames) and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._result.set_result(self._decode())
        except BaseException as error:  # handed to whoever takes the result, as a pool's future does
            self._result.set_exception(error)

    def _decode(self) -> LoadedVideo:
        started = time.perf_counter()
        with open_video(self.path, self.decoder) as video:
            unique, positions = view_frame_indices(self.protocol, video.num_frames)
            frames = video.iter_frames(unique)
            ahead: deque[np.ndarray] = deque()
            held = 0
            for frame in frames:
                ahead.append(frame)
                held += frame.nbytes
                if held >= READ_AHEAD_BYTES or self._stop.is_set():
                    break
            busy = time.perf_counter() - started
            early = len(ahead)
            if self._stop.is_set():
                raise _Stopped
            resumed = time.perf_counter()
            views: Any
            if self.arrays:
                from uniformer_cli.data import portable

                views = portable.views_from_frames(self._frames(ahead, frames), positions, self.protocol)
            else:  # waits here while the main thread imports torch
                from uniformer_cli.data.views import views_from_frames

                resumed = time.perf_counter()
                views = views_from_frames(self._frames(ahead, frames), positions, self.protocol)
            seconds = busy + time.perf_counter() - resumed
            log.debug("%s: decoded while the model loaded (%d of %d frames early)", self.path, early, unique.size)
            return LoadedVideo(views, video.num_frames, video.fps, seconds)

    def _frames(self, ahead: deque[np.ndarray], rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """The frames decoded ahead (each let go once taken), then the rest as they decode."""
        while ahead:
            if self._stop.is_set():
                raise _Stopped
            yield ahead.popleft()
        for frame in rest:
            if self._stop.is_set():
                raise _Stopped
            yield frame


@contextlib.contextmanager
def first_video(
    request: InferenceRequest, paths: Sequence[str | Path], decoder: str, arrays: bool = False
) -> Iterator[FirstVideo | None]:
    """The first of `paths` decoding in a thread under `request`'s planned protocol for the block's
    duration (None where the protocol is not known before the model loads, or there is no video), as
    numpy `arrays` for the torch-free route; the thread is stopped when the block ends."""
    # torchcodec loads torch itself; a decoder that is not there is reported by opening the predictor.
    protocol = planned_protocol(request) if paths and decoder != "torchcodec" else None
    try:
        check_decoder(decoder)
    except UniformerError:
        protocol = None
    first = FirstVideo(paths[0], protocol, decoder, arrays).start() if protocol is not None else None
    try:
        yield first
    finally:
        if first is not None:
            first.stop()
