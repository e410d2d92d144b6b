"""Dataset evaluation with the official test protocol (DATA.md 5): every view of a video goes through the
network, the video's score is the sum of the views' logits, and top-1 / top-5 / mean class accuracy are
computed over the videos, with unreadable videos counted as wrong unless the caller excludes them.

Under `torchrun` (RANK / WORLD_SIZE set) each process scores every WORLD_SIZE-th video, without the
official sampler's padding duplicates, and rank 0 gathers the per-video results: the numbers equal a
single-process run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from rich.markup import escape
from torch.utils.data import DataLoader, Dataset

from uniformer_cli.data.datasets import DatasetSpec, DatasetSplit, Sample, locate_split, read_split
from uniformer_cli.data.loading import DEFAULT_WORKERS, init_decoding_worker
from uniformer_cli.data.video import open_video
from uniformer_cli.data.views import ProtocolOverrides, ViewProtocol, resolve_protocol, views_from_video
from uniformer_cli.engine.device import batched_logits, select_device
from uniformer_cli.engine.signals import raise_on_sigterm
from uniformer_cli.errors import DatasetError, Terminated, UniformerError
from uniformer_cli.files import atomic_write
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.progress import progress_bar, stderr_console
from uniformer_cli.weights import resolve_model

TOP_K = 5
CHECKPOINT_SECONDS = 60.0  # how often a single-process run rewrites its --json file, for --resume
# Gathering waits for the slowest rank; the default 30 min collective timeout is too short for a shard
# of Kinetics on a slow disk.
DISTRIBUTED_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class EvalRequest:
    """Everything `uniformer eval` was asked to do; None means the model's or the dataset's default."""

    dataset: str
    root: Path | None
    split: str = "val"
    list_file: Path | None = None
    model: str | None = None
    weights: Path | None = None
    revision: str | None = None
    head_dim: int | None = None
    protocol: ProtocolOverrides = field(default_factory=ProtocolOverrides)
    device: str = "auto"
    decoder: str = "auto"
    batch_size: int = 8
    workers: int = DEFAULT_WORKERS
    limit: int | None = None
    skip_broken: bool = False
    json_path: Path | None = None
    resume: bool = False
    compile: bool = False


@dataclass
class VideoResult:
    """One video's outcome: its top-5 classes by summed logits, or why it could not be read."""

    video: str
    label: int
    top5: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # softmax of the mean logits, for the top-5
    error: str | None = None

    @property
    def correct1(self) -> bool:
        return self.error is None and self.top5[:1] == [self.label]

    @property
    def correct5(self) -> bool:
        return self.error is None and self.label in self.top5


@dataclass(frozen=True)
class Metrics:
    top1: float
    top5: float
    mean_class: float
    counted: int  # videos in the denominator


def compute_metrics(results: Sequence[VideoResult], skip_broken: bool = False) -> Metrics:
    """Percentages over the counted videos: all of them, or only the readable ones with `skip_broken`.
    Mean class accuracy averages the top-1 accuracy of each class that has counted videos."""
    counted = [result for result in results if result.error is None or not skip_broken]
    if not counted:
        return Metrics(0.0, 0.0, 0.0, 0)
    per_class: dict[int, list[bool]] = {}
    for result in counted:
        per_class.setdefault(result.label, []).append(result.correct1)
    return Metrics(
        top1=100.0 * sum(result.correct1 for result in counted) / len(counted),
        top5=100.0 * sum(result.correct5 for result in counted) / len(counted),
        mean_class=100.0 * sum(sum(hits) / len(hits) for hits in per_class.values()) / len(per_class),
        counted=len(counted),
    )


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
    seconds: float
    videos_per_s: float
    device: str
    processes: int
    complete: bool
    classes: list[str]
    results: list[VideoResult]

    @property
    def failed(self) -> list[VideoResult]:
        return [result for result in self.results if result.error is not None]

    def summary(self) -> dict[str, object]:
        values = asdict(self)
        values.pop("results")
        values.pop("classes")
        return values

    def to_json(self) -> dict[str, object]:
        def named(result: VideoResult) -> dict[str, object]:
            names = {"label_name": self.classes[result.label] if 0 <= result.label < len(self.classes) else None}
            return {**asdict(result), **names}

        return {"summary": self.summary(), "classes": self.classes, "videos": [named(r) for r in self.results]}


def write_report(path: Path, report: EvalReport) -> None:
    """Write the JSON atomically, so an interrupted run leaves the previous file intact for --resume."""
    text = json.dumps(report.to_json(), indent=1)
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def load_previous(path: Path, model: str, protocol: dict[str, object], split: DatasetSplit) -> dict[str, VideoResult]:
    """The readable videos of an earlier `--json` file of the same model, protocol and split."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        summary = data["summary"]
        previous = [
            VideoResult(item["video"], item["label"], item["top5"], item["scores"], item["error"])
            for item in data["videos"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"cannot resume from {path}: not an evaluation file ({error})") from None
    ours = {"model": model, "protocol": protocol, "dataset": split.dataset, "split": split.split}
    theirs = {key: summary.get(key) for key in ours}
    if theirs != ours:
        differ = ", ".join(key for key in ours if ours[key] != theirs[key])
        raise DatasetError(f"cannot resume from {path}: it was written with another {differ}")
    return {result.video: result for result in previous if result.error is None}


@dataclass(frozen=True)
class Session:
    """This process's place in a (possibly single-process) evaluation."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, results: dict[int, VideoResult]) -> dict[int, VideoResult]:
        """Every rank's results on rank 0 (other ranks get an empty dict)."""
        if self.world_size == 1:
            return results
        gathered: list[dict[int, VideoResult] | None] = [None] * self.world_size if self.main else []
        dist.gather_object(results, gathered if self.main else None, dst=0)
        merged: dict[int, VideoResult] = {}
        for part in gathered:
            merged.update(part or {})
        return merged


def world_size() -> int:
    """Processes of this job: torchrun's WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Session]:
    """One process, or one rank of a `torchrun` job: gloo on CPU, NCCL on CUDA, one GPU per rank."""
    device = select_device(device_name)
    if world_size() == 1:
        yield Session(0, 1, device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend, timeout=DISTRIBUTED_TIMEOUT)
    try:
        yield Session(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if started:
            dist.destroy_process_group()


def build_protocol(
    model_protocol: ViewProtocol | None, spec: DatasetSpec, request: EvalRequest, source: str
) -> tuple[ViewProtocol, bool]:
    """The model's test protocol (else the dataset's zoo model's) with the requested overrides
    (`resolve_protocol`; `source` names the model in its errors); also whether it is still the model's own."""
    base = model_protocol
    if base is None and spec.default_model is not None:
        base = ViewProtocol.from_entry(spec.default_model)
    protocol = resolve_protocol(base, request.protocol, source)
    return protocol, protocol == model_protocol


class _VideoViews(Dataset):
    """Item `i`: (position of the video in the split, views `[V, 3, T, S, S]` or None, error or None).
    Decoding happens here, in the DataLoader workers."""

    def __init__(
        self, samples: Sequence[Sample], positions: Sequence[int], protocol: ViewProtocol, decoder: str
    ) -> None:
        self.samples = samples
        self.positions = positions
        self.protocol = protocol
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        position = self.positions[index]
        sample = self.samples[position]
        try:
            with open_video(sample.path, self.decoder) as video:
                return position, views_from_video(video, self.protocol, (0, sample.frame_count(video))), None
        except UniformerError as error:
            return position, None, str(error)
        except Exception as error:  # one undecodable video must not end a run of thousands
            return position, None, f"{sample.path}: {type(error).__name__}: {error}"


def score_videos(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    positions: Sequence[int],
    keys: Sequence[str],
    protocol: ViewProtocol,
    device: torch.device,
    *,
    batch_size: int = 8,
    workers: int = 0,
    decoder: str = "auto",
) -> Iterator[tuple[int, VideoResult]]:
    """Score `samples[p]` for each p in `positions`, yielding (p, result) as videos finish: views go
    through the network `batch_size` at a time, and a video's score is the sum of its views' logits.
    `keys[p]` names the video in its result."""
    loader = DataLoader(
        _VideoViews(samples, positions, protocol, decoder),
        batch_size=max(1, batch_size // protocol.views),
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=init_decoding_worker if workers else None,
    )
    for batch in loader:
        sums = iter(_summed_logits(model, [views for _, views, _ in batch if views is not None], device, batch_size))
        for position, views, error in batch:
            result = VideoResult(keys[position], samples[position].label, error=error)
            if views is not None:
                summed = next(sums)
                top = torch.softmax(summed / protocol.views, dim=0).topk(min(TOP_K, summed.numel()))
                result.top5, result.scores = top.indices.tolist(), top.values.tolist()
            yield position, result


def _summed_logits(
    model: torch.nn.Module, videos: list[torch.Tensor], device: torch.device, batch_size: int
) -> list[torch.Tensor]:
    """Per video, the float32 sum of its views' logits (DATA.md 5.3); views of several videos share
    forward passes of at most `batch_size` views."""
    if not videos:
        return []
    logits = batched_logits(model, torch.cat(videos), device, batch_size)
    return [part.sum(0) for part in logits.split([len(v) for v in videos])]


def _key(sample: Sample, root: Path) -> str:
    """How a video is named in the results: relative to the dataset root when it lies under it."""
    try:
        return sample.path.relative_to(root).as_posix()
    except ValueError:
        return str(sample.path)


def _model_source(spec: DatasetSpec, request: EvalRequest) -> str | Path:
    """--weights FILE, else --model NAME, else the dataset's zoo model."""
    if request.weights is not None:
        return request.weights
    if request.model is not None:
        return request.model
    if spec.default_model is None:
        raise UniformerError(f"--dataset {spec.name} has no zoo model: pass --model NAME or --weights FILE")
    return spec.default_model.name


@dataclass
class _Run:
    """One evaluation's fixed context: what the report of any set of results is built from."""

    request: EvalRequest
    session: Session
    model_name: str
    entry_top1: float | None  # the zoo figure when the protocol is the released one
    split: DatasetSplit
    protocol: ViewProtocol
    samples: list[Sample]
    keys: list[str]
    previous: dict[str, VideoResult]
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
            seconds=seconds,
            videos_per_s=len(results) / seconds if seconds > 0 else 0.0,
            device=str(self.session.device),
            processes=self.session.world_size,
            complete=complete,
            classes=self.split.classes,
            results=done,
        )

    def save(self, results: dict[int, VideoResult]) -> bool:
        """Checkpoint a single-process run to its --json file (gathering happens only at the end);
        whether there was one to write."""
        if self.request.json_path is None or self.session.world_size > 1:
            return False
        write_report(self.request.json_path, self.report(results, complete=False))
        return True


def run_evaluation(request: EvalRequest) -> EvalReport | None:
    """Load the model, read the split, score it (sharded under torchrun) and return the report on rank 0
    (None on the other ranks). Writes `request.json_path` when given, also every minute while running."""
    if request.resume and request.json_path is None:
        raise UniformerError("--resume needs --json FILE (the file of the run to continue)")
    # The data is checked before a model is downloaded.
    location = locate_split(request.dataset, request.root, split=request.split, list_file=request.list_file)
    with session(request.device) as current:
        source = _model_source(location.spec, request)
        loaded = resolve_model(
            source,
            device=current.device,
            revision=request.revision,
            head_dim=request.head_dim,
            zoo_name=request.model if request.weights else None,
        )
        split = read_split(location, classes=loaded.labels, num_classes=loaded.config.num_classes)
        model_protocol = loaded.view_protocol
        protocol, released = build_protocol(model_protocol, location.spec, request, str(loaded.path))
        samples = split.samples[: request.limit] if request.limit else split.samples
        keys = [_key(sample, split.root) for sample in samples]
        model_name = loaded.entry.name if loaded.entry is not None else str(source)
        previous = {}
        if request.resume and request.json_path is not None:
            previous = load_previous(request.json_path, model_name, protocol.as_dict(), split)
        run = _Run(
            request,
            current,
            model_name,
            loaded.entry.top1 if loaded.entry is not None and released else None,
            split,
            protocol,
            samples,
            keys,
            previous,
        )
        todo = [position for position, key in enumerate(keys) if key not in previous]
        shard = todo[current.rank :: current.world_size]  # no padding duplicates, unlike the official sampler
        model = optimize_for_inference(loaded.model, inplace=True, compile=request.compile)
        scored = score_videos(
            model,
            samples,
            shard,
            keys,
            protocol,
            current.device,
            batch_size=request.batch_size,
            workers=request.workers,
            decoder=request.decoder,
        )
        results = current.gather(_collect(run, scored, total=len(shard)))
        if not current.main:
            return None
        final = run.report(results, complete=True)
        if request.json_path is not None:
            write_report(request.json_path, final)
        return final


def _collect(run: _Run, scored: Iterator[tuple[int, VideoResult]], total: int) -> dict[int, VideoResult]:
    """This rank's results by position, with a progress bar (running top-1) on rank 0; a single process
    saves its --json file every minute and on Ctrl-C or SIGTERM, so that an interrupted run can be resumed."""
    results: dict[int, VideoResult] = {}
    hits = sum(result.correct1 for result in run.previous.values())
    seen = len(run.previous)
    last_save = time.perf_counter()
    with raise_on_sigterm(), progress_bar("top1", disable=not run.session.main) as bar:
        task = bar.add_task("evaluating", total=total, top1="-")
        try:
            for position, result in scored:
                results[position] = result
                seen += 1
                hits += result.correct1
                bar.update(task, advance=1, top1=f"{100 * hits / seen:.2f}%")
                if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                    run.save(results)
                    last_save = time.perf_counter()
        except (KeyboardInterrupt, Terminated):
            if run.save(results):
                saved = f"{len(run.previous) + len(results)} videos saved in {run.request.json_path}"
                stderr_console.print(escape(f"{saved}: continue with the same command and --resume"), highlight=False)
            raise
    return results
