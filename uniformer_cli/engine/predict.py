"""`uniformer predict`: ranked labels for videos under their model's test protocol, and timelines.

A video's score is the softmax of the mean of its views' logits: the official metric sums the logits
(PROTOCOLS.md 5.3), which ranks the classes the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from uniformer_cli.data.paths import VideoSearch
from uniformer_cli.data.stream import STDIN, open_stream
from uniformer_cli.data.video import check_decoder, is_frame_folder, open_video
from uniformer_cli.data.views import views_from_video
from uniformer_cli.data.windows import stream_windows, window_bounds
from uniformer_cli.device import batched_logits
from uniformer_cli.engine.inference import InferenceModel, open_model, request_for
from uniformer_cli.engine.prefetch import FirstVideo, LoadedVideo
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.engine.results import (
    Prediction,
    PredictReport,
    TimelineWindow,
    VideoClassifier,
    VideoPrediction,
    VideoTimeline,
    check_timeline_request,
    failed_video,
    no_frame_rate,
    record,
    run_outcomes,
    top_classes,
)
from uniformer_cli.engine.scoring import all_finite, non_finite
from uniformer_cli.errors import Terminated, UniformerError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.records import Failure, Record
from uniformer_cli.zoo import DEFAULT_MODEL

log = logging.getLogger(__name__)


class Predictor(VideoClassifier):
    """A model in eval mode with its test protocol, labels and device; called on a video path (or a list
    of them) it returns the ranked classes, as the transformers video-classification pipeline does.

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

    @classmethod
    def of(cls, opened: InferenceModel, *, batch_size: int = 8, decoder: str = "auto") -> Predictor:
        """The predictor of a model opened for inference (`engine.inference.open_model`)."""
        return cls(
            opened.network,
            opened.protocol,
            labels=opened.labels,
            name=opened.name,
            weights=opened.weights,
            device=opened.device,
            batch_size=batch_size,
            decoder=decoder,
        )

    def logits(self, views: torch.Tensor) -> torch.Tensor:
        """float32 logits `[views, classes]` on the CPU, `batch_size` views per forward pass; a
        `UniformerError` (that input's) when they are not finite."""
        scores = batched_logits(self.model, views, self.device, self.batch_size)
        if not all_finite(scores):
            raise UniformerError(non_finite(self.weights or self.name))
        return scores[:, : len(self.labels)] if self.labels else scores

    def probabilities(self, views: torch.Tensor) -> torch.Tensor:
        """Softmax of the mean of the views' logits: `[classes]`."""
        return self.logits(views).mean(dim=0).softmax(dim=0)

    def rank(self, probabilities: torch.Tensor, top_k: int) -> list[Prediction]:
        scores, indices = probabilities.topk(min(top_k, probabilities.numel()))
        return top_classes(scores.tolist(), indices.tolist(), self.label)

    def load(self, path: str | Path) -> LoadedVideo:
        """Decode and preprocess one video under the protocol."""
        started = time.perf_counter()
        with open_video(path, self.decoder) as video:
            views = views_from_video(video, self.protocol)
            return LoadedVideo(views, video.num_frames, video.fps, time.perf_counter() - started)

    def predict(self, path: str | Path, top_k: int = 5) -> VideoPrediction:
        return self.classify(path, self.load(path), top_k)

    def ranked(self, views: torch.Tensor, top_k: int) -> list[Prediction]:
        return self.rank(self.probabilities(views), top_k)

    def __call__(self, videos: str | Path | Sequence[str | Path], top_k: int = 5) -> list[Record] | list[list[Record]]:
        """The ranked classes of a video, `[{"label", "score", "index"}, ...]` best first (`top_k` of them),
        or a list of those for a list of videos (the next one decoded while the model runs). A video that
        cannot be read raises `VideoError`."""
        if isinstance(videos, (str, Path)):
            return _ranked(self.predict(videos, top_k))
        ranked: list[list[Record]] = []
        for outcome in self.predict_many(list(videos), top_k):
            if isinstance(outcome, Failure):
                raise UniformerError(outcome.error)
            ranked.append(_ranked(outcome))
        return ranked

    def timeline(
        self,
        path: str | Path,
        seconds: float,
        clips: int = 1,
        progress: ProgressCallback | None = None,
        fps: float | None = None,
    ) -> VideoTimeline:
        """Top class of each `seconds`-long window of the video (`data.windows.window_bounds`). Each window is
        sampled with the model's temporal rule as if it were a whole video, with `clips` clips and the
        centre crop. `fps` is the frame rate of a frame folder, which records none (required for one); a
        video file's own rate is used otherwise. `progress` hears of each window (a sub step)."""
        started = time.perf_counter()
        timeline = _Timeline(self, str(path), self.timeline_protocol(clips))
        with open_video(path, self.decoder, "timeline") as video:
            if is_frame_folder(Path(path)):
                if fps is None:
                    raise no_frame_rate(path)
                rate = fps
            else:
                rate = video.fps
            bounds = window_bounds(video.num_frames, rate, seconds)
            for number, (first, stop) in enumerate(bounds):
                timeline.score(views_from_video(video, timeline.protocol, window=(first, stop)), first, stop, rate)
                notify(progress, Progress(Path(path).name, number + 1, len(bounds), sub=True))
        log.debug("%s: %d windows in %.2f s", path, len(timeline.windows), time.perf_counter() - started)
        return timeline.result(time.perf_counter() - started)

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
        it is final (`data.windows.stream_windows`: the same windows as `timeline`'s on the same frames, at
        most half a window late, at most 1.5 windows of frames in memory) and passed to `on_window`, until
        the stream ends. Ctrl-C or SIGTERM ends it as the stream's end would: the result holds the windows
        scored so far, and `stopped` the signal's exception, for the caller to raise once they are saved."""
        started = time.perf_counter()
        timeline = _Timeline(self, "stdin" if source == STDIN else source, self.timeline_protocol(clips))
        peak = 0
        stopped = None
        with open_stream(source) as stream:
            try:
                for first, stop, ring in stream_windows(stream, seconds, timeline.protocol.size):
                    window = timeline.score(ring.views(first, stop, timeline.protocol), first, stop, stream.fps)
                    peak = ring.peak
                    if on_window:
                        on_window(window)
            except (KeyboardInterrupt, Terminated) as signalled:
                stopped = signalled
        result = timeline.result(time.perf_counter() - started)
        result.frames_held = peak
        result.stopped = stopped
        return result


@dataclass
class _Timeline:
    """A timeline being built: the file and stream timelines score their windows the same way."""

    predictor: Predictor
    file: str
    protocol: ViewProtocol
    windows: list[TimelineWindow] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)

    def score(self, views: torch.Tensor, first: int, stop: int, fps: float) -> TimelineWindow:
        probabilities = self.predictor.probabilities(views)
        best = self.predictor.rank(probabilities, 1)[0]
        window = TimelineWindow(first / fps, stop / fps, best.label, best.index, best.score)
        self.windows.append(window)
        self.scores.append(probabilities.tolist())
        return window

    def result(self, seconds: float) -> VideoTimeline:
        labels = [self.predictor.label(index) for index in range(len(self.scores[0]))] if self.scores else []
        return VideoTimeline(
            self.file, self.predictor.name, self.windows, seconds, self.protocol.describe(), self.scores, labels
        )


def _ranked(prediction: VideoPrediction) -> list[Record]:
    return [{"label": p.label, "score": p.score, "index": p.index} for p in prediction.predictions]


def open_predictor(
    request: InferenceRequest,
    *,
    batch_size: int = 8,
    decoder: str = "auto",
    progress: ProgressCallback | None = None,
) -> Predictor:
    """The `Predictor` of a request (`engine.inference.open_model`: the zoo entry's or the weights' own
    protocol with the request's changes, the fast path or OpenVINO at the requested precision); a model
    without labels names its classes `class N`. `progress` hears of downloads and conversions."""
    check_decoder(decoder)
    return Predictor.of(open_model(request, progress=progress), batch_size=batch_size, decoder=decoder)


def load_predictor(
    name_or_path: str | Path = DEFAULT_MODEL,
    *,
    zoo_name: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    engine: str = "auto",
    compile: bool = False,
    revision: str | None = None,
    head_dim: int | None = None,
    batch_size: int = 8,
    decoder: str = "auto",
) -> Predictor:
    """A callable `Predictor` for a zoo name or a weights file (with `zoo_name`, the zoo entry that file
    belongs to), as `uniformer predict` runs it: `load_predictor("s-k400")("clip.mp4", top_k=3)` gives the
    ranked `[{"label", "score", "index"}]` that `uniformer predict clip.mp4 --json` scores. The device
    rule is `load_model`'s ("auto": CUDA, then MPS, then CPU)."""
    request = request_for(
        name_or_path,
        zoo_name,
        device=device,
        precision=precision,
        engine=engine,
        compile=compile,
        revision=revision,
        head_dim=head_dim,
    )
    return open_predictor(request, batch_size=batch_size, decoder=decoder)


def run_predict(
    predictor: Predictor,
    videos: VideoSearch,
    *,
    top_k: int = 5,
    timeline: float | None = None,
    timeline_clips: int | None = None,
    fps: float | None = None,
    progress: ProgressCallback | None = None,
    first: FirstVideo | None = None,
) -> PredictReport:
    """Predict (or build `timeline`-second timelines for, `timeline_clips` clips per window, default 1)
    every video `data.paths.find_videos` found, reporting each finished video (and each window, as a sub
    step) to `progress`; unreadable videos are reported, not fatal. `fps`: the frame rate of frame folders,
    for timelines. `first`: the first video decoding since before the model loaded (`engine.prefetch`)."""
    check_timeline_request(videos, timeline, fps)
    paths = videos.paths
    # A timeline's record names the protocol each window used (`Predictor.timeline_protocol`).
    protocol = predictor.protocol if timeline is None else predictor.timeline_protocol(timeline_clips or 1)
    result = PredictReport(predictor.name, predictor.weights, protocol.as_dict())
    outcomes: Iterator[VideoPrediction | VideoTimeline | Failure] = (
        predictor.predict_many(paths, top_k, first)
        if timeline is None
        else (_timeline_or_failure(predictor, path, timeline, timeline_clips or 1, fps, progress) for path in paths)
    )
    return run_outcomes(result, videos, outcomes, progress)


def _timeline_or_failure(
    predictor: Predictor,
    path: Path | str,
    seconds: float,
    clips: int,
    fps: float | None,
    progress: ProgressCallback | None,
) -> VideoTimeline | Failure:
    try:
        return predictor.timeline(path, seconds, clips, progress, fps)
    except UniformerError as error:
        return failed_video(path, error)


def run_live(
    predictor: Predictor,
    source: str,
    seconds: float,
    clips: int | None = None,
    on_window: Callable[[TimelineWindow], None] | None = None,
) -> PredictReport:
    """`Predictor.live_timeline` of one stream as a report (failures to open or read it raise)."""
    result = PredictReport(predictor.name, predictor.weights, predictor.timeline_protocol(clips or 1).as_dict())
    timeline = predictor.live_timeline(source, seconds, clips or 1, on_window)
    record(result, timeline)
    result.stopped = timeline.stopped
    return result
