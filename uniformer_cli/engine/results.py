"""What `uniformer predict` produces, without torch: the ranked classes of a video or its timeline, a
run's report of results and failures in input order (its records are docs/OUTPUT.md's `predict` records),
and the loop that gathers them. Both routes of predict (`engine.predict`, PyTorch or OpenVINO behind the
network; `engine.torch_free`, a cached OpenVINO model and numpy views) report through here."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from uniformer_cli.data.paths import VideoSearch
from uniformer_cli.data.video import is_frame_folder
from uniformer_cli.engine.prefetch import FirstVideo, LoadedVideo
from uniformer_cli.errors import Terminated, UniformerError, stop_reason
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.protocol import ViewProtocol, check_frame_rate, check_timeline
from uniformer_cli.records import Failure, Record, class_record, model_fields

log = logging.getLogger(__name__)


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
            "elapsed_s": round(self.seconds, 4),
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
    # A stream's timeline ended by Ctrl-C or SIGTERM: the signal's exception, to raise once it is saved.
    stopped: BaseException | None = field(default=None, repr=False)

    def fields(self) -> Record:
        """The fields of its `predict --timeline` record after video, model, weights and protocol."""
        windows = [
            {"start": round(w.start, 4), "end": round(w.end, 4), **class_record(w.index, w.label, w.score)}
            for w in self.windows
        ]
        return {"windows": windows, "elapsed_s": round(self.seconds, 4)}


def failed_video(path: str | Path, error: UniformerError) -> Failure:
    """A video's failure, its message naming the video (a video's own errors do already)."""
    message = str(error)
    return Failure(str(path), message if str(path) in message else f"{path}: {message}")


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
    # Ctrl-C or SIGTERM ended the run early: the exception to raise once the results are saved (the videos
    # it left are failures saying so).
    stopped: BaseException | None = None

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


def check_timeline_request(videos: VideoSearch, seconds: float | None, fps: float | None) -> None:
    """A timeline's window must be a positive, finite number of seconds, and frame folders need `fps`:
    checked before a model is loaded."""
    if fps is not None:
        check_frame_rate(fps)
    if seconds is None:
        return
    check_timeline(seconds)
    folder = next((path for path in videos.paths if isinstance(path, Path) and is_frame_folder(path)), None)
    if folder is not None and fps is None:
        raise no_frame_rate(folder)


def no_frame_rate(folder: str | Path) -> UniformerError:
    return UniformerError(f"{folder} is a frame folder, which records no frame rate: give --fps for --timeline")


class VideoClassifier(ABC):
    """What both predict routes share: a model with its test protocol and labels that ranks the classes
    of decoded videos (`load`, then `ranked`), one video after another with the next one decoding
    meanwhile (`predict_many`). `labels` may be shorter than the model's outputs (the HMDB51 head has
    101 rows for 51 classes): only the first `len(labels)` are ranked."""

    arrays: ClassVar[bool] = False  # its views are numpy arrays (the torch-free route), not tensors
    protocol: ViewProtocol
    labels: list[str] | None
    name: str
    weights: str | None
    decoder: str

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else f"class {index}"

    @abstractmethod
    def load(self, path: str | Path) -> LoadedVideo:
        """Decode and preprocess one video under the protocol."""

    @abstractmethod
    def ranked(self, views: Any, top_k: int) -> list[Prediction]:
        """The `top_k` classes of a video's views by the softmax of the mean of their logits."""

    def classify(self, path: str | Path, video: LoadedVideo, top_k: int) -> VideoPrediction:
        started = time.perf_counter()
        predictions = self.ranked(video.views, top_k)
        log.debug(
            "%s: decoded and preprocessed in %.2f s (%d views), model %.2f s",
            path,
            video.seconds,
            len(video.views),
            time.perf_counter() - started,
        )
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

    def predict_many(
        self, paths: Sequence[str | Path], top_k: int = 5, first: FirstVideo | None = None
    ) -> Iterator[VideoPrediction | Failure]:
        """Predictions in order; the next video is decoded in a background thread while the model
        runs on the current one. A video that cannot be read yields a `Failure` and the rest go on.
        `first`: the first video, already decoding (`engine.prefetch`), used if it is `paths[0]` under
        this predictor's protocol and decoder, else stopped."""
        early = (
            first
            if first is not None and paths and first.serves(paths[0], self.protocol, self.decoder, self.arrays)
            else None
        )
        if first is not None and early is None:
            first.stop()

        def load_first(path: str | Path) -> LoadedVideo:
            return early.result() if early is not None else self.load(path)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniformer-decode") as pool:
            upcoming: Future | None = pool.submit(load_first, paths[0]) if paths else None
            for position, path in enumerate(paths):
                assert upcoming is not None
                current = upcoming
                upcoming = pool.submit(self.load, paths[position + 1]) if position + 1 < len(paths) else None
                try:
                    prediction = self.classify(path, current.result(), top_k)
                except UniformerError as error:
                    yield failed_video(path, error)
                    continue
                yield prediction


def run_outcomes(
    report: PredictReport,
    videos: VideoSearch,
    outcomes: Iterable[VideoPrediction | VideoTimeline | Failure],
    progress: ProgressCallback | None = None,
) -> PredictReport:
    """Record the paths that named no video, then each outcome of `videos.paths` in order (`outcomes`, made
    as they are taken), reporting each finished video to `progress`. Ctrl-C or SIGTERM keeps what finished;
    each video left becomes a failure that says why, and `report.stopped` the exception, for the caller to
    raise once the records are saved."""
    paths: Sequence[str | Path] = videos.paths
    for failure in videos.failures:
        record(report, failure)
    notify(progress, Progress("predicting", 0, len(paths)))
    try:
        for done, outcome in enumerate(outcomes, start=1):
            record(report, outcome)
            notify(progress, Progress("predicting", done, len(paths)))
    except (KeyboardInterrupt, Terminated) as stop:
        report.stopped = stop
        for path in paths[len(report.outcomes) - len(videos.failures) :]:
            record(report, Failure(str(path), f"{path}: not predicted: {stop_reason(stop)} stopped the run"))
    return report


def top_classes(scores: Sequence[float], indices: Sequence[int], label: Callable[[int], str]) -> list[Prediction]:
    """The ranked classes from the best scores and their class indices, named by `label`."""
    return [Prediction(label(int(i)), int(i), float(s)) for s, i in zip(scores, indices, strict=True)]


def record(report: PredictReport, outcome: VideoPrediction | VideoTimeline | Failure) -> None:
    report.outcomes.append(outcome)
    if isinstance(outcome, Failure):
        report.failures.append(outcome)
    else:
        report.results.append(outcome)


def non_finite(weights: str) -> str:
    """The error of an input whose scores or features came out NaN or infinite: the weights' fault (all
    NaN, or values so large that the network overflows), which the input cannot mend."""
    return f"the network's outputs are not finite numbers (NaN or infinity): the weights {weights} are unusable"
