"""Dataset evaluation with the official test protocol (PROTOCOLS.md 5): a split's videos are scored
(`scoring.score_videos`: the sum of each video's view logits) and top-1 / top-5 / mean class accuracy are
computed over them, with unreadable videos counted as wrong unless the caller excludes them.

Under `torchrun` (RANK / WORLD_SIZE set) each process scores a contiguous share of the videos (a packed
dataset's shards are read front to back), without the official sampler's padding duplicates, and rank 0
gathers the per-video results: the numbers equal a single-process run.

The split is a dataset layout (`dataset` + `root`/`list_file`) or a packed dataset (`data`: its folder,
index or shards, local or a storage URL); a packed split's records name each video by the path it was
packed from, so they equal those of the original layout.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from uniformer_cli.data import storage
from uniformer_cli.data.datasets import DatasetSpec, DatasetSplit, Sample, locate_split, read_split
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.engine.distributed import Session, session
from uniformer_cli.engine.inference import InferenceModel, open_model
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.engine.scoring import VideoResult, compute_metrics, score_videos
from uniformer_cli.engine.signals import raise_on_sigterm
from uniformer_cli.errors import DatasetError, Terminated, UniformerError, WriteError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import ensure_writable, remove_stale_temporaries, write_or_fail, write_with_fallback
from uniformer_cli.jsonio import MAX_JSON_BYTES, dump_json, load_json, read_json
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.records import Record, class_record, model_fields
from uniformer_cli.weights.cache import weights_sha256

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 60.0  # how often a single-process run rewrites its --json file, for --resume


@dataclass(frozen=True)
class EvalRequest:
    """Everything `uniformer eval` was asked to do; None means the model's or the dataset's default."""

    dataset: str | None
    root: str | Path | None  # a local folder or a storage URL
    split: str = "val"
    list_file: str | Path | None = None
    data: str | None = None  # a packed dataset instead of dataset + root
    inference: InferenceRequest = field(default_factory=InferenceRequest)  # the model and how it runs
    decoder: str = "auto"
    batch_size: int = 8
    workers: int = DEFAULT_WORKERS
    limit: int | None = None
    skip_broken: bool = False
    json_path: str | Path | None = None  # a local file or a storage URL
    resume: bool = False


@dataclass
class EvalReport:
    """The summary a user reads and the per-video predictions that `--json` writes and `--resume` reads."""

    model: str
    dataset: str
    split: str
    list_file: str
    layout: str
    protocol: dict[str, object]
    protocol_text: str
    paper_top1: float | None  # the zoo figure, when the protocol is the released one
    top1: float
    top5: float
    mean_class: float
    videos: int
    counted: int
    failures: int
    skip_broken: bool
    evaluated: int  # videos scored by this run (the rest came from --resume)
    elapsed_s: float  # the run's wall-clock time
    videos_per_s: float
    device: str
    processes: int
    complete: bool
    classes: list[str]
    results: list[VideoResult]
    weights: str | None = None  # the file that was loaded
    # What the results were computed from (`--resume` continues only a report of the same): the weights'
    # content and the split's videos with their labels (`inputs_sha256`).
    weights_sha256: str | None = None
    videos_sha256: str | None = None

    @property
    def failed(self) -> list[VideoResult]:
        return [result for result in self.results if result.error is not None]

    def summary(self) -> dict[str, object]:
        values = asdict(self)
        values.pop("results")
        values.pop("classes")
        return values

    def label(self, index: int) -> str | None:
        return self.classes[index] if 0 <= index < len(self.classes) else None

    def record(self, result: VideoResult) -> Record:
        """One video's `eval` record (docs/OUTPUT.md)."""
        best = result.top5[0] if result.top5 else None
        return {
            "video": result.video,
            **model_fields(self.model, self.weights),
            "protocol": self.protocol,
            "true_index": result.label,
            "true_label": self.label(result.label),
            "predicted_index": best,
            "predicted_label": None if best is None else self.label(best),
            "score": round(result.scores[0], 6) if result.scores else None,
            "top5": [
                class_record(index, self.label(index), score)
                for index, score in zip(result.top5, result.scores, strict=True)
            ],
            "correct": None if result.error is not None else result.correct1,
            "error": result.error,
        }

    def to_json(self) -> dict[str, object]:
        """The `eval` JSON document: summary, class names, one record per video."""
        return {"summary": self.summary(), "classes": self.classes, "videos": [self.record(r) for r in self.results]}


def write_report(path: str | Path, report: EvalReport, *, final: bool = False) -> None:
    """Write the JSON atomically, so an interrupted run leaves the previous file intact for --resume. A
    `final` report that cannot be written to `path` is written elsewhere, and the `WriteError` says where.
    A storage URL gets the whole object at once (stores replace objects atomically)."""
    text = dump_json(report.to_json(), indent=1)
    if storage.is_url(path):
        storage.write_bytes(path, text.encode())
        return
    write = write_with_fallback if final else write_or_fail
    write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), "evaluation report")


# The summary fields a report must share with the run that continues it, and how an error names them.
RESUME_KEYS = {
    "model": "model",
    "dataset": "dataset",
    "split": "split",
    "protocol": "protocol",
    "weights_sha256": "weights (their sha256 differs)",
    "videos_sha256": "list of videos or labels (its sha256 differs)",
}


def load_previous(path: str | Path, expected: dict[str, object]) -> dict[str, VideoResult]:
    """The readable videos of an earlier `--json` file computed from what `expected` (`RESUME_KEYS`)
    says: the same model, weights content, protocol and split (its videos and labels)."""
    if not storage.is_file(path):
        return {}
    try:
        data = load_json(storage.read_text(path, MAX_JSON_BYTES)) if storage.is_url(path) else read_json(path)
        summary = data["summary"]
        if not isinstance(summary, dict) or not isinstance(data["videos"], list):
            raise TypeError("its summary or videos are not an object and a list")
        previous = [_from_record(item) for item in data["videos"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"cannot resume from {path}: not an evaluation file ({error})") from None
    differ = [words for key, words in RESUME_KEYS.items() if summary.get(key) != expected[key]]
    if differ:
        raise DatasetError(f"cannot resume from {path}: it was computed with another {', '.join(differ)}")
    return {result.video: result for result in previous if result.error is None}


def _from_record(item: object) -> VideoResult:
    """A video of an `eval` file back from its record; `TypeError` for a record of the wrong shape."""
    if not isinstance(item, dict) or not isinstance(item.get("top5"), list):
        raise TypeError("a video record is not an object with a top5 list")
    ranked: list[Any] = item["top5"]
    if not all(isinstance(entry, dict) for entry in ranked):
        raise TypeError("a top5 entry is not an object")
    result = VideoResult(
        item["video"], item["true_index"], [c["index"] for c in ranked], [c["score"] for c in ranked], item["error"]
    )
    valid = (
        isinstance(result.video, str)
        and type(result.label) is int
        and (result.error is None or isinstance(result.error, str))
        and all(type(index) is int for index in result.top5)
        and all(type(score) in (int, float) and math.isfinite(score) for score in result.scores)
    )
    if not valid:
        raise TypeError(f"the record of {str(item.get('video'))[:200]!r} holds values of the wrong types")
    return result


def inputs_sha256(keys: Sequence[str], labels: Sequence[int] | None) -> str:
    """The sha256 of a list of inputs (names, and labels when given), in order: what a resume file
    records to tell whether the list it continues is still the same."""
    digest = hashlib.sha256()
    for position, key in enumerate(keys):
        digest.update(dump_json([key, None if labels is None else labels[position]]).encode() + b"\n")
    return digest.hexdigest()


def sample_key(sample: Sample, root: Path) -> str:
    """How a video is named in the results: relative to the dataset root when it lies under it (packed
    samples and those of a dataset at a URL have paths relative to it, and `root` is `.`)."""
    try:
        return sample.path.relative_to(root).as_posix()
    except ValueError:
        return str(sample.path)


def open_for_dataset(
    request: InferenceRequest,
    spec: DatasetSpec,
    device: torch.device,
    *,
    features: int | None = None,
    progress: ProgressCallback | None = None,
) -> InferenceModel:
    """The model of a dataset run (eval, features): the request's, else the dataset's zoo model; a model
    without a protocol of its own runs the dataset's zoo model's (with the request's changes). `features`:
    as `open_model`'s."""
    default = spec.default_model
    if request.model is None and request.weights is None and default is None:
        raise UniformerError(f"--dataset {spec.name} has no zoo model: pass --model NAME or --weights FILE")
    return open_model(
        request,
        device=device,
        default_model=default.name if default else None,
        fallback_protocol=default.protocol if default else None,
        features=features,
        progress=progress,
    )


@dataclass
class _Run:
    """One evaluation's fixed context: what the report of any set of results is built from."""

    request: EvalRequest
    session: Session
    model_name: str
    entry_top1: float | None  # the zoo figure when the protocol is the released one
    weights: str  # the file that was loaded
    split: DatasetSplit
    protocol: ViewProtocol
    samples: list[Sample]
    keys: list[str]
    previous: dict[str, VideoResult]
    sources: dict[str, str]  # `EvalReport.weights_sha256` and `videos_sha256`
    progress: ProgressCallback | None
    started: float = field(default_factory=time.perf_counter)

    def report(self, results: dict[int, VideoResult], complete: bool) -> EvalReport:
        """This run's results (by position) merged with the resumed ones, in split order."""
        seconds = time.perf_counter() - self.started
        ordered = [results.get(p) or self.previous.get(key) for p, key in enumerate(self.keys)]
        done = [result for result in ordered if result is not None]
        metrics = compute_metrics(done, self.request.skip_broken)
        return EvalReport(
            model=self.model_name,
            dataset=self.split.dataset,
            split=self.split.split,
            list_file=str(self.split.source),
            layout=self.split.layout,
            protocol=self.protocol.as_dict(),
            protocol_text=self.protocol.describe(),
            paper_top1=self.entry_top1,
            top1=metrics.top1,
            top5=metrics.top5,
            mean_class=metrics.mean_class,
            videos=len(done),
            counted=metrics.counted,
            failures=sum(result.error is not None for result in done),
            skip_broken=self.request.skip_broken,
            evaluated=len(results),
            elapsed_s=seconds,
            videos_per_s=len(results) / seconds if seconds > 0 else 0.0,
            device=str(self.session.device),
            processes=self.session.world_size,
            complete=complete,
            classes=self.split.classes,
            results=done,
            weights=self.weights,
            **self.sources,
        )

    def save(self, results: dict[int, VideoResult]) -> bool:
        """Checkpoint a single-process run to its --json file (gathering happens only at the end);
        whether there was one to write."""
        if self.request.json_path is None or self.session.world_size > 1:
            return False
        try:
            write_report(self.request.json_path, self.report(results, complete=False))
        except WriteError as error:  # the run goes on; the final write tries again, then elsewhere
            log.warning("%s (the evaluation continues)", error)
            return False
        return True


def run_evaluation(request: EvalRequest, progress: ProgressCallback | None = None) -> EvalReport | None:
    """Load the model, read the split, score it (sharded under torchrun) and return the report on rank 0
    (None on the other ranks). Writes `request.json_path` when given, also every minute while running.
    Rank 0 reports each scored video to `progress`, with the running top-1."""
    if request.resume and request.json_path is None:
        raise UniformerError("--resume needs -o FILE.json (the file of the run to continue)")
    if request.json_path is not None and not storage.is_url(request.json_path):
        ensure_writable(request.json_path, "evaluation report")
        remove_stale_temporaries(Path(request.json_path).parent)  # left by killed runs
    # The data is checked before a model is downloaded.
    location = locate_split(
        request.dataset, request.root, split=request.split, list_file=request.list_file, data=request.data
    )
    with session(request.inference.device) as current:
        opened = open_for_dataset(request.inference, location.spec, current.device, progress=progress)
        split = read_split(location, classes=opened.labels, num_classes=opened.config.num_classes)
        protocol = opened.protocol
        released = protocol == opened.loaded.protocol  # the paper's figure applies
        samples = split.samples[: request.limit] if request.limit else split.samples
        keys = [sample_key(sample, split.root) for sample in samples]
        sources = {
            "weights_sha256": weights_sha256(opened.loaded.path),
            "videos_sha256": inputs_sha256(
                [sample_key(sample, split.root) for sample in split.samples], [sample.label for sample in split.samples]
            ),
        }
        previous = {}
        if request.resume and request.json_path is not None:
            expected: dict[str, object] = {
                "model": opened.name,
                "protocol": protocol.as_dict(),
                "dataset": split.dataset,
                "split": split.split,
            }
            previous = load_previous(request.json_path, expected | sources)
        run = _Run(
            request,
            current,
            opened.name,
            opened.entry.top1 if opened.entry is not None and released else None,
            opened.weights,
            split,
            protocol,
            samples,
            keys,
            previous,
            sources,
            progress if current.main else None,
        )
        todo = [position for position, key in enumerate(keys) if key not in previous]
        shard = current.share(todo)  # no padding duplicates, unlike the official sampler
        scored = score_videos(
            opened.network,
            samples,
            shard,
            keys,
            protocol,
            current.device,
            batch_size=request.batch_size,
            workers=request.workers,
            decoder=request.decoder,
            weights=opened.weights,
        )
        results = current.gather(_collect(run, scored, total=len(shard)))
        if not current.main:
            return None
        final = run.report(results, complete=True)
        if request.json_path is not None:
            write_report(request.json_path, final, final=True)
        return final


def _collect(run: _Run, scored: Iterator[tuple[int, VideoResult]], total: int) -> dict[int, VideoResult]:
    """This rank's results by position, with a progress bar (running top-1) on rank 0; a single process
    saves its --json file every minute and on Ctrl-C or SIGTERM, so that an interrupted run can be resumed."""
    results: dict[int, VideoResult] = {}
    hits = sum(result.correct1 for result in run.previous.values())
    seen = len(run.previous)
    last_save = time.perf_counter()
    with raise_on_sigterm():
        notify(run.progress, Progress("evaluating", 0, total))
        try:
            for position, result in scored:
                results[position] = result
                seen += 1
                hits += result.correct1
                notify(run.progress, Progress("evaluating", len(results), total, {"top1": f"{100 * hits / seen:.2f}%"}))
                if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                    run.save(results)
                    last_save = time.perf_counter()
        except (KeyboardInterrupt, Terminated):
            if run.save(results):
                saved = f"{len(run.previous) + len(results)} videos saved in {run.request.json_path}"
                log.warning(f"{saved}: continue with the same command and --resume")
            raise
    return results
