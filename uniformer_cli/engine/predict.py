"""`uniformer predict`: ranked labels for videos under their model's test protocol, and timelines.

A video's score is the softmax of the mean of its views' logits: the official metric sums the logits
(PROTOCOLS.md 5.3), which ranks the classes the same way.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from rich.progress import Progress, TaskID
from torch import nn

from uniformer_cli.data import transforms
from uniformer_cli.data.stream import STDIN, open_stream
from uniformer_cli.data.video import DECODERS, VIDEO_EXTENSIONS, is_frame_folder, open_video
from uniformer_cli.data.views import (
    ProtocolOverrides,
    ViewProtocol,
    resolve_protocol,
    views_from_resized,
    views_from_video,
)
from uniformer_cli.device import batched_logits, select_device
from uniformer_cli.engine.openvino_engine import choose_engine, inference_model
from uniformer_cli.errors import UniformerError, VideoError
from uniformer_cli.models.fast import check_precision
from uniformer_cli.progress import progress_bar
from uniformer_cli.records import Record, class_record, model_fields
from uniformer_cli.weights import resolve_model
from uniformer_cli.zoo import DEFAULT_MODEL

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass
class VideoPrediction:
    """The top-k classes of one video."""

    file: str
    model: str
    predictions: list[Prediction]
    seconds: float
    protocol: str = ""
    views: int = 0
    num_frames: int = 0
    fps: float = 0.0

    def fields(self) -> Record:
        """The fields of its `predict` record (docs/OUTPUT.md) after video, model, weights and protocol."""
        best = self.predictions[0] if self.predictions else None
        return {
            "predicted_index": best.index if best else None,
            "predicted_label": best.label if best else None,
            "score": round(best.score, 6) if best else None,
            "top_k": [class_record(p.index, p.label, p.score) for p in self.predictions],
            "video_frames": self.num_frames,
            "fps": self.fps,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class TimelineWindow:
    start: float  # seconds
    end: float
    label: str
    index: int
    score: float


@dataclass
class VideoTimeline:
    """The top class of each window of one video."""

    file: str
    model: str
    windows: list[TimelineWindow]
    seconds: float
    protocol: str = ""
    # Every class's probability per window `[windows, classes]`, for plots (not part of the JSON record).
    probabilities: list[list[float]] = field(default_factory=list, repr=False)
    labels: list[str] = field(default_factory=list, repr=False)  # the names of those classes
    frames_held: int = 0  # a stream's timeline: the most frames it kept in memory at once

    def fields(self) -> Record:
        """The fields of its `predict --timeline` record after video, model, weights and protocol."""
        windows = [
            {"start": round(w.start, 4), "end": round(w.end, 4), **class_record(w.index, w.label, w.score)}
            for w in self.windows
        ]
        return {"windows": windows, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class LoadedVideo:
    """A decoded and preprocessed video, ready for the model."""

    views: torch.Tensor
    num_frames: int
    fps: float
    seconds: float  # decoding and preprocessing time


@dataclass(frozen=True)
class Failure:
    file: str
    error: str


@dataclass
class PredictReport:
    """Everything a predict run produced: the results and the failures, and both in input order
    (paths that named no video first)."""

    model: str = "model"
    weights: str | None = None
    protocol: dict[str, object] = field(default_factory=dict)
    results: list[VideoPrediction | VideoTimeline] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    outcomes: list[VideoPrediction | VideoTimeline | Failure] = field(default_factory=list)

    def records(self) -> list[Record]:
        """One `predict` record per input (docs/OUTPUT.md); a failure has `error` and null results."""
        timeline = any(isinstance(outcome, VideoTimeline) for outcome in self.outcomes)
        empty = {key: None for key in (VideoTimeline if timeline else VideoPrediction)("", "", [], 0.0).fields()}
        records = []
        for outcome in self.outcomes:
            common = {"video": outcome.file, **model_fields(self.model, self.weights), "protocol": self.protocol}
            if isinstance(outcome, Failure):
                records.append({**common, **empty, "error": outcome.error})
            else:
                records.append({**common, **outcome.fields(), "error": None})
        return records


class Predictor:
    """A model in eval mode with its test protocol, labels and device.

    `labels` may be shorter than the model's outputs (the HMDB51 head has 101 rows for 51 classes):
    only the first `len(labels)` logits are ranked.
    """

    def __init__(
        self,
        model: nn.Module,
        protocol: ViewProtocol,
        *,
        labels: Sequence[str] | None = None,
        name: str = "model",
        weights: str | None = None,
        device: torch.device | str = "cpu",
        batch_size: int = 8,
        decoder: str = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.protocol = protocol
        self.labels = list(labels) if labels is not None else None
        self.name = name
        self.weights = weights
        self.batch_size = batch_size
        self.decoder = decoder

    def logits(self, views: torch.Tensor) -> torch.Tensor:
        """float32 logits `[views, classes]` on the CPU, `batch_size` views per forward pass."""
        scores = batched_logits(self.model, views, self.device, self.batch_size)
        return scores[:, : len(self.labels)] if self.labels else scores

    def probabilities(self, views: torch.Tensor) -> torch.Tensor:
        """Softmax of the mean of the views' logits: `[classes]`."""
        return self.logits(views).mean(dim=0).softmax(dim=0)

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else f"class {index}"

    def rank(self, probabilities: torch.Tensor, top_k: int) -> list[Prediction]:
        scores, indices = probabilities.topk(min(top_k, probabilities.numel()))
        return [
            Prediction(self.label(int(i)), int(i), float(s))
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]

    def load(self, path: str | Path) -> LoadedVideo:
        """Decode and preprocess one video under the protocol."""
        started = time.perf_counter()
        with open_video(path, self.decoder) as video:
            views = views_from_video(video, self.protocol)
            return LoadedVideo(views, video.num_frames, video.fps, time.perf_counter() - started)

    def classify(self, path: str | Path, video: LoadedVideo, top_k: int) -> VideoPrediction:
        started = time.perf_counter()
        predictions = self.rank(self.probabilities(video.views), top_k)
        return VideoPrediction(
            file=str(path),
            model=self.name,
            predictions=predictions,
            seconds=video.seconds + time.perf_counter() - started,
            protocol=self.protocol.describe(),
            views=len(video.views),
            num_frames=video.num_frames,
            fps=video.fps,
        )

    def predict(self, path: str | Path, top_k: int = 5) -> VideoPrediction:
        return self.classify(path, self.load(path), top_k)

    def predict_many(self, paths: Sequence[str | Path], top_k: int = 5) -> Iterator[VideoPrediction | Failure]:
        """Predictions in order; the next video is decoded in a background thread while the model
        runs on the current one. A video that cannot be read yields a `Failure` and the rest go on."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniformer-decode") as pool:
            upcoming: Future | None = pool.submit(self.load, paths[0]) if paths else None
            for position, path in enumerate(paths):
                assert upcoming is not None
                current = upcoming
                upcoming = pool.submit(self.load, paths[position + 1]) if position + 1 < len(paths) else None
                try:
                    video = current.result()
                except UniformerError as error:
                    yield Failure(str(path), str(error))
                    continue
                yield self.classify(path, video, top_k)

    def timeline(
        self,
        path: str | Path,
        seconds: float,
        clips: int = 1,
        on_window: Callable[[int, int], None] | None = None,
        fps: float | None = None,
    ) -> VideoTimeline:
        """Top class of each `seconds`-long window of the video (the last window absorbs a tail
        shorter than half a window). Each window is sampled with the model's temporal rule as if it
        were a whole video, with `clips` clips and the centre crop. `fps` is the frame rate of a frame
        folder, which records none (required for one); a video file's own rate is used otherwise."""
        started = time.perf_counter()
        protocol = self.timeline_protocol(clips)
        windows, scores = [], []
        with open_video(path, self.decoder) as video:
            if is_frame_folder(Path(path)):
                if fps is None:
                    raise UniformerError(f"{path} is a frame folder, which records no frame rate: give --fps")
                rate = fps
            else:
                rate = video.fps
            bounds = window_bounds(video.num_frames, rate, seconds)
            for number, (first, stop) in enumerate(bounds):
                probabilities = self.probabilities(views_from_video(video, protocol, window=(first, stop)))
                best = self.rank(probabilities, 1)[0]
                windows.append(TimelineWindow(first / rate, stop / rate, best.label, best.index, best.score))
                scores.append(probabilities.tolist())
                if on_window:
                    on_window(number + 1, len(bounds))
        labels = [self.label(index) for index in range(len(scores[0]))] if scores else []
        elapsed = time.perf_counter() - started
        return VideoTimeline(str(path), self.name, windows, elapsed, protocol.describe(), scores, labels)

    def timeline_protocol(self, clips: int) -> ViewProtocol:
        """How each timeline window is sampled: the model's temporal rule, `clips` clips, the centre crop."""
        return replace(self.protocol, clips=clips, crops=1, single_crop="centre")

    def live_timeline(
        self,
        source: str,
        seconds: float,
        clips: int = 1,
        on_window: Callable[[TimelineWindow], None] | None = None,
    ) -> VideoTimeline:
        """`timeline` for a stream (stdin, URL or device, `open_stream`): each window is scored as soon as
        it is final and passed to `on_window`, until the stream ends (or Ctrl-C, which propagates).

        The windows equal `timeline`'s on the same frames: window k is final once half a window has
        followed it (a shorter tail would join it, as `window_bounds` does). Frames are normalised and
        resized on arrival and kept only while a window may still need them: `FrameRing` never holds
        more than 1.5 windows of frames.
        """
        started = time.perf_counter()
        protocol = self.timeline_protocol(clips)
        windows: list[TimelineWindow] = []
        scores: list[list[float]] = []

        def score(first: int, stop: int) -> None:
            probabilities = self.probabilities(ring.views(first, stop, protocol))
            best = self.rank(probabilities, 1)[0]
            window = TimelineWindow(first / stream.fps, stop / stream.fps, best.label, best.index, best.score)
            windows.append(window)
            scores.append(probabilities.tolist())
            if on_window:
                on_window(window)

        with open_stream(source) as stream:
            length = window_length(stream.fps, seconds)
            ring = FrameRing(protocol.size)
            first = 0  # the next window to score starts here
            for image in stream.frames():
                ring.append(image)
                if ring.count - (first + length) >= length / 2:  # the next window will stand alone
                    score(first, first + length)
                    first += length
                    ring.drop_before(first)
            if ring.count == 0:
                raise VideoError(f"{source} ended before its first frame")
            for start, stop in window_bounds(ring.count, stream.fps, seconds):
                if start >= first:
                    score(start, stop)
        labels = [self.label(index) for index in range(len(scores[0]))] if scores else []
        elapsed = time.perf_counter() - started
        name = "stdin" if source == STDIN else source
        return VideoTimeline(name, self.name, windows, elapsed, protocol.describe(), scores, labels, ring.peak)


class FrameRing:
    """The frames of a stream that a window may still need, each normalised and resized to the model's
    short side as it arrives (the same values `resized_clip` gives a file's frames)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.frames: dict[int, torch.Tensor] = {}  # frame index -> [3, 1, h, w]
        self.count = 0  # frames seen
        self.peak = 0  # most frames held at once (the memory bound)

    def append(self, image: np.ndarray) -> None:
        self.frames[self.count] = transforms.resized_clip([image], self.size)
        self.count += 1
        self.peak = max(self.peak, len(self.frames))

    def drop_before(self, index: int) -> None:
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]

    def views(self, first: int, stop: int, protocol: ViewProtocol) -> torch.Tensor:
        """The window `first..stop-1`'s views, sampled as `read_view_frames` samples a file's window."""
        clips = [first + indices for indices in protocol.clip_indices(stop - first)]
        unique, positions = np.unique(np.concatenate(clips), return_inverse=True)
        resized = torch.cat([self.frames[int(index)] for index in unique], dim=1)
        return views_from_resized(resized, positions.reshape(protocol.clips, protocol.frames), protocol)


def window_length(fps: float, seconds: float) -> int:
    """Frames per `seconds`-long timeline window."""
    check_timeline(seconds)
    return max(1, round(seconds * fps))


def check_timeline(seconds: float) -> None:
    """A timeline window must be a positive, finite number of seconds."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise UniformerError(f"--timeline needs a positive, finite window length in seconds, got {seconds:g}")


def window_bounds(num_frames: int, fps: float, seconds: float) -> list[tuple[int, int]]:
    """`(first, stop)` frame ranges of consecutive `seconds`-long windows covering the video."""
    length = window_length(fps, seconds)
    bounds = [(first, min(first + length, num_frames)) for first in range(0, num_frames, length)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < length / 2:
        bounds[-2:] = [(bounds[-2][0], num_frames)]
    return bounds


def load_predictor(
    model: str | None = None,
    weights: str | Path | None = None,
    *,
    revision: str | None = None,
    head_dim: int | None = None,
    device: str = "auto",
    overrides: ProtocolOverrides | None = None,
    batch_size: int = 8,
    decoder: str = "auto",
    compile: bool = False,
    precision: str = "auto",
    engine: str = "auto",
) -> Predictor:
    """A `Predictor` for a zoo model (default `DEFAULT_MODEL`) or a weights file, on the fast inference
    path (`optimize_for_inference` at `precision`, `torch.compile` with `compile`), or on OpenVINO
    (`engine` "openvino": `engine.openvino_engine`, which says why "auto" runs PyTorch).

    The protocol comes from the zoo entry (`model`, which also names the entry a local `.pth` belongs
    to) or the safetensors metadata, changed by `overrides`; a file with neither takes it from the
    overrides alone (`resolve_protocol`). A model without labels names its classes `class N`.
    """
    if decoder not in DECODERS:
        raise UniformerError(f"unknown decoder {decoder!r} (use one of {', '.join(DECODERS)})")
    target = select_device(device)
    check_precision(precision, target)
    engine = choose_engine(engine, precision, target, compile)
    if weights is not None:
        loaded = resolve_model(Path(weights), device=target, revision=revision, head_dim=head_dim, zoo_name=model)
    else:
        loaded = resolve_model(model or DEFAULT_MODEL, device=target, revision=revision, head_dim=head_dim)
    protocol = resolve_protocol(loaded.protocol, overrides or ProtocolOverrides(), str(loaded.path))
    # A file that is no zoo entry's is named by its path as given, never by a bare (ambiguous) file name.
    name = loaded.entry.name if loaded.entry else str(weights if weights is not None else loaded.path)
    return Predictor(
        inference_model(loaded, protocol, engine, precision, compile),
        protocol,
        labels=loaded.labels,
        name=name,
        weights=str(loaded.path),
        device=target,
        batch_size=batch_size,
        decoder=decoder,
    )


def _videos_in(folder: Path) -> list[Path]:
    """The folder itself when it is a frame folder, else the videos below it."""
    return [folder] if is_frame_folder(folder) else _videos_under(folder)


def _videos_under(folder: Path) -> list[Path]:
    """Video files and frame folders below `folder`, in sorted order; frame folders are not entered."""
    found = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        here = Path(root)
        if here != folder and is_frame_folder(here):
            found.append(here)
            directories.clear()
            continue
        found.extend(here / name for name in sorted(files) if Path(name).suffix.lower() in VIDEO_EXTENSIONS)
    return found


def expand_paths(patterns: Sequence[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Files as given, folders searched recursively (video extensions and frame folders), globs
    (`**` included) expanded; each pattern that yields nothing is a `Failure`. Duplicates are dropped."""
    found: list[Path] = []
    failures: list[Failure] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = _videos_in(path)
            reason = f"no videos or frame folders found under {path}"
        elif path.exists():
            matches, reason = [path], ""
        elif GLOB_CHARACTERS & set(str(pattern)):
            matches = []
            for match in map(Path, sorted(glob.glob(str(pattern), recursive=True))):
                if match.is_dir():
                    matches.extend(_videos_in(match))
                elif match.suffix.lower() in VIDEO_EXTENSIONS:
                    matches.append(match)
            reason = f"no videos match {pattern}"
        else:
            matches, reason = [], f"no such file or folder: {path}"
        if not matches:
            failures.append(Failure(str(pattern), reason))
        found.extend(matches)
    return list(dict.fromkeys(found)), failures


@dataclass(frozen=True)
class VideoSearch:
    """The videos some paths and patterns name, and the patterns that named nothing."""

    paths: list[Path]
    failures: list[Failure]


def find_videos(patterns: Sequence[str | Path]) -> VideoSearch:
    """`expand_paths`, failing when it finds nothing at all: called before the model is loaded, so a
    mistyped path costs no download."""
    paths, failures = expand_paths(patterns)
    if not paths:
        raise UniformerError("; ".join(failure.error for failure in failures) or "no video given")
    return VideoSearch(paths, failures)


def run_predict(
    predictor: Predictor,
    videos: VideoSearch,
    *,
    top_k: int = 5,
    timeline: float | None = None,
    timeline_clips: int | None = None,
    fps: float | None = None,
    progress: bool = True,
) -> PredictReport:
    """Predict (or build `timeline`-second timelines for, `timeline_clips` clips per window, default 1)
    every video `find_videos` found, with a progress bar when there are several files (or windows);
    unreadable videos are reported, not fatal. `fps`: the frame rate of frame folders, for timelines."""
    if timeline is not None:
        check_timeline(timeline)
    paths = videos.paths
    report = PredictReport(predictor.name, predictor.weights, predictor.protocol.as_dict())
    for failure in videos.failures:
        _record(report, failure)
    with progress_bar(disable=not progress or (len(paths) < 2 and timeline is None)) as bar:
        task = bar.add_task("predicting", total=len(paths))
        if timeline is None:
            for result in predictor.predict_many(paths, top_k):
                _record(report, result)
                bar.advance(task)
            return report
        for path in paths:
            windows = bar.add_task(escape(f"  {path.name}"), total=None)
            outcome: VideoTimeline | Failure
            try:
                outcome = predictor.timeline(
                    path,
                    timeline,
                    timeline_clips or 1,
                    functools.partial(_show_windows, bar, windows),
                    fps,
                )
            except UniformerError as error:
                outcome = Failure(str(path), str(error))
            bar.remove_task(windows)
            _record(report, outcome)
            bar.advance(task)
    return report


def _show_windows(bar: Progress, task: TaskID, done: int, total: int) -> None:
    bar.update(task, completed=done, total=total)


def run_live(
    predictor: Predictor,
    source: str,
    seconds: float,
    clips: int | None = None,
    on_window: Callable[[TimelineWindow], None] | None = None,
) -> PredictReport:
    """`Predictor.live_timeline` of one stream as a report (failures to open or read it raise)."""
    report = PredictReport(predictor.name, predictor.weights, predictor.protocol.as_dict())
    _record(report, predictor.live_timeline(source, seconds, clips or 1, on_window))
    return report


def _record(report: PredictReport, outcome: VideoPrediction | VideoTimeline | Failure) -> None:
    report.outcomes.append(outcome)
    if isinstance(outcome, Failure):
        report.failures.append(outcome)
    else:
        report.results.append(outcome)
