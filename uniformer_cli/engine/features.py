"""Pooled video representations for downstream models: `uniformer features`.

Each video goes through the network under its test protocol (the same views `eval` scores) and
`model.forward_features` gives one vector per view: after the final norm, before the head (`layer` 4),
or the mean of an earlier stage's map. A video's vector is the mean over its views, or every view's with
`per_view`.

Output files
- `OUT.safetensors`: tensor `features`, float32 `[N, D]` (`[N, V, D]` per view), and metadata whose
  values are JSON texts: `format`, `videos` (the N names, row order), `labels` (dataset label per row,
  or absent), `classes`, `failures` (`[{"video", "error"}]`: never dropped silently), `model`,
  `protocol`, `layer`, `per_view`.
- `OUT.npy` with the same array and `OUT.json` holding the metadata as one JSON object.
Both are written atomically, every minute while running and on Ctrl-C / SIGTERM, so `resume` can skip
the videos already done. Under `torchrun` each rank computes a shard, as `eval` does, and rank 0 writes.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from uniformer_cli.data.datasets import Sample, locate_split, read_split
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.data.views import ProtocolOverrides, ViewProtocol, resolve_protocol
from uniformer_cli.device import batched_logits
from uniformer_cli.engine.distributed import Session, session
from uniformer_cli.engine.evaluate import CHECKPOINT_SECONDS, build_protocol, model_source, sample_key
from uniformer_cli.engine.predict import find_videos
from uniformer_cli.engine.scoring import decoded_batches
from uniformer_cli.engine.signals import raise_on_sigterm
from uniformer_cli.errors import Terminated, UniformerError
from uniformer_cli.files import atomic_write, ensure_writable
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.models.layers import StagedModel
from uniformer_cli.progress import progress_bar
from uniformer_cli.weights import resolve_model
from uniformer_cli.zoo import DEFAULT_MODEL

logger = logging.getLogger(__name__)

FORMATS = (".safetensors", ".npy")
FORMAT_TAG = "uniformer-features/1"


@dataclass(frozen=True)
class FeaturesRequest:
    """Everything `uniformer features` was asked to do: `paths` (files, folders, globs) or a dataset split."""

    output: Path
    paths: Sequence[str] = ()
    dataset: str | None = None
    root: Path | None = None
    split: str = "val"
    list_file: Path | None = None
    model: str | None = None
    weights: Path | None = None
    revision: str | None = None
    head_dim: int | None = None
    protocol: ProtocolOverrides = field(default_factory=ProtocolOverrides)
    layer: int = 4
    per_view: bool = False
    device: str = "auto"
    decoder: str = "auto"
    batch_size: int = 8
    workers: int = DEFAULT_WORKERS
    limit: int | None = None
    resume: bool = False
    compile: bool = False


@dataclass(frozen=True)
class FeatureFailure:
    video: str
    error: str


@dataclass
class FeatureSet:
    """Features with their rows' names: what the output files hold."""

    features: torch.Tensor  # float32 [N, D] or [N, V, D]
    videos: list[str]
    labels: list[int] | None  # dataset labels per row
    failures: list[FeatureFailure]
    meta: dict[str, object]  # model, protocol, layer, per_view, classes

    def metadata(self) -> dict[str, object]:
        values: dict[str, object] = {"format": FORMAT_TAG, **self.meta, "videos": self.videos}
        if self.labels is not None:
            values["labels"] = self.labels
        values["failures"] = [{"video": f.video, "error": f.error} for f in self.failures]
        return values


@dataclass(frozen=True)
class FeaturesResult:
    """What a run wrote: the file(s), the rows, the failures and how long it took."""

    output: Path
    index: Path | None  # the .json next to a .npy
    shape: tuple[int, ...]
    videos: int
    failures: list[FeatureFailure]
    computed: int  # videos this run computed (the rest came from --resume)
    model: str
    protocol: str
    layer: int
    seconds: float


def index_path(output: Path) -> Path:
    """The JSON index written next to an `.npy` output."""
    return output.with_suffix(".json")


def write_features(output: Path, data: FeatureSet) -> None:
    """Atomically write `data` as `.safetensors` or `.npy` + `.json` (the index last: it names the rows)."""
    tensor = data.features.contiguous()
    metadata = data.metadata()
    if output.suffix == ".safetensors":
        strings = {key: json.dumps(value) for key, value in metadata.items()}
        atomic_write(output, lambda temporary: save_file({"features": tensor}, str(temporary), metadata=strings))
        return

    def write_array(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            np.save(handle, tensor.numpy())

    atomic_write(output, write_array)
    text = json.dumps(metadata, indent=1)
    atomic_write(index_path(output), lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_features(path: str | Path) -> FeatureSet:
    """Read a file `write_features` wrote (`.safetensors`, or `.npy` with its `.json` index)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                strings = handle.metadata() or {}
                features = handle.get_tensor("features")
            metadata = {key: json.loads(value) for key, value in strings.items()}
        else:
            features = torch.from_numpy(np.load(path, allow_pickle=False))
            metadata = json.loads(index_path(path).read_text(encoding="utf-8"))
        if metadata.get("format") != FORMAT_TAG:
            raise ValueError("no features metadata")
        videos = list(metadata.pop("videos"))
        labels = metadata.pop("labels", None)
        failures = [FeatureFailure(item["video"], item["error"]) for item in metadata.pop("failures")]
        metadata.pop("format")
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise UniformerError(f"{path} is not a features file written by `uniformer features` ({error})") from None
    if len(videos) != len(features):
        raise UniformerError(f"{path} lists {len(videos)} videos for {len(features)} rows of features")
    return FeatureSet(features, videos, labels, failures, metadata)


@dataclass
class _Plan:
    """The videos to process and what names and labels their rows get."""

    samples: list[Sample]
    keys: list[str]
    labels: list[int] | None
    failures: list[FeatureFailure]  # patterns that named no video
    classes: list[str] | None


def _check_output(request: FeaturesRequest) -> None:
    if request.output.suffix not in FORMATS:
        raise UniformerError(f"-o {request.output}: name a .safetensors or .npy file (the format follows the suffix)")
    if request.output.is_dir():
        raise UniformerError(f"-o {request.output} is a folder: name a .safetensors or .npy file")
    ensure_writable(request.output, "features")  # before any video is decoded
    if request.layer not in (1, 2, 3, 4):
        raise UniformerError(f"--layer must be 1, 2, 3 or 4 (a stage of the network), got {request.layer}")
    if bool(request.paths) == (request.dataset is not None):
        both = "give either video paths or --dataset with --root, not both"
        raise UniformerError(both if request.paths else "no videos given: pass video paths, or --dataset with --root")


def _previous(request: FeaturesRequest, meta: dict[str, object]) -> FeatureSet | None:
    """The readable rows of an earlier run's output with the same model, protocol, layer and views."""
    if not request.resume:
        return None
    if not request.output.is_file():
        logger.info("nothing to resume: %s does not exist yet", request.output)
        return None
    previous = read_features(request.output)
    differ = [key for key in ("model", "protocol", "layer", "per_view") if previous.meta.get(key) != meta.get(key)]
    if differ:
        raise UniformerError(f"cannot resume from {request.output}: it was written with another {', '.join(differ)}")
    return previous


def extract_features(request: FeaturesRequest) -> FeaturesResult | None:
    """Compute and write the features of the requested videos; None on torchrun ranks other than 0."""
    _check_output(request)
    started = time.perf_counter()
    # The inputs are checked before a model is downloaded.
    location = search = None
    if request.dataset is not None:
        location = locate_split(request.dataset, request.root, split=request.split, list_file=request.list_file)
    else:
        search = find_videos(request.paths)
    with session(request.device) as current:
        if location is not None:
            source = model_source(location.spec, request.model, request.weights)
        else:
            source = request.weights if request.weights is not None else request.model or DEFAULT_MODEL
        loaded = resolve_model(
            source,
            device=current.device,
            revision=request.revision,
            head_dim=request.head_dim,
            zoo_name=request.model if request.weights else None,
        )
        if location is not None:
            split = read_split(location, classes=loaded.labels, num_classes=loaded.config.num_classes)
            samples = split.samples[: request.limit] if request.limit else split.samples
            protocol, _ = build_protocol(loaded.protocol, location.spec, request.protocol, str(loaded.path))
            plan = _Plan(
                samples,
                [sample_key(sample, split.root) for sample in samples],
                [sample.label for sample in samples],
                [],
                split.classes,
            )
        else:
            assert search is not None
            paths = search.paths[: request.limit] if request.limit else search.paths
            protocol = resolve_protocol(loaded.protocol, request.protocol, str(loaded.path))
            plan = _Plan(
                [Sample(path, -1) for path in paths],
                [str(path) for path in paths],
                None,
                [FeatureFailure(f.file, f.error) for f in search.failures],
                loaded.labels,
            )
        model_name = loaded.entry.name if loaded.entry is not None else str(source)
        meta: dict[str, object] = {
            "model": model_name,
            "protocol": protocol.as_dict(),
            "layer": request.layer,
            "per_view": request.per_view,
        }
        if plan.classes is not None:
            meta["classes"] = plan.classes
        # Every rank reads the file to resume (the output lies on storage they share) to skip the same videos.
        previous = _previous(request, meta)
        done = set(previous.videos) if previous is not None else set()
        todo = [position for position, key in enumerate(plan.keys) if key not in done]
        shard = todo[current.rank :: current.world_size]
        model = optimize_for_inference(cast(StagedModel, loaded.model), inplace=True, compile=request.compile)
        computed = _compute(model, plan.samples, shard, protocol, current, request)
        run = _Output(request, plan, meta, previous)
        rows = current.gather(run.collect(computed, len(shard), current))
        if not current.main:
            return None
        final = run.assemble(rows)
        write_features(request.output, final)
    return FeaturesResult(
        output=request.output,
        index=index_path(request.output) if request.output.suffix == ".npy" else None,
        shape=tuple(final.features.shape),
        videos=len(final.videos),
        failures=final.failures,
        computed=sum(isinstance(row, torch.Tensor) for row in rows.values()),
        model=model_name,
        protocol=protocol.describe(),
        layer=request.layer,
        seconds=time.perf_counter() - started,
    )


Row = torch.Tensor | str  # a video's features, or why it failed


def _compute(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    positions: Sequence[int],
    protocol: ViewProtocol,
    current: Session,
    request: FeaturesRequest,
) -> Iterator[tuple[int, Row]]:
    """(position, features `[D]` or `[V, D]`, or the error) for each video, as they finish."""
    forward = functools.partial(cast(StagedModel, model).forward_features, stage=request.layer)
    batches = decoded_batches(
        samples, positions, protocol, batch_size=request.batch_size, workers=request.workers, decoder=request.decoder
    )
    for batch in batches:
        views = [item for _, item, _ in batch if item is not None]
        outputs: Iterator[torch.Tensor] = iter([])
        if views:
            features = batched_logits(model, torch.cat(views), current.device, request.batch_size, forward=forward)
            outputs = iter(features.split([len(v) for v in views]))
        for position, item, error in batch:
            if item is None:
                yield position, error or "unreadable"
            else:
                per_view = next(outputs)
                yield position, per_view.clone() if request.per_view else per_view.mean(dim=0)


@dataclass
class _Output:
    """One run's fixed context: how rows become a `FeatureSet`, checkpointed while running."""

    request: FeaturesRequest
    plan: _Plan
    meta: dict[str, object]
    previous: FeatureSet | None

    def assemble(self, rows: dict[int, Row]) -> FeatureSet:
        """Rows in input order: this run's, else the resumed file's; failures after the patterns' ones."""
        earlier = {}
        if self.previous is not None:
            earlier = {video: self.previous.features[i] for i, video in enumerate(self.previous.videos)}
        features, videos, labels = [], [], []
        failures = list(self.plan.failures)
        for position, key in enumerate(self.plan.keys):
            row = rows.get(position)
            if isinstance(row, str):
                failures.append(FeatureFailure(key, row))
                continue
            if row is None:
                row = earlier.get(key)
            if row is None:
                continue
            features.append(row)
            videos.append(key)
            if self.plan.labels is not None:
                labels.append(self.plan.labels[position])
        stacked = torch.stack(features) if features else torch.zeros(0)
        return FeatureSet(stacked, videos, labels if self.plan.labels is not None else None, failures, self.meta)

    def save(self, rows: dict[int, Row], current: Session) -> bool:
        """Checkpoint a single-process run (torchrun jobs gather only at the end); whether it wrote."""
        if current.world_size > 1 or not any(isinstance(row, torch.Tensor) for row in rows.values()):
            return False
        write_features(self.request.output, self.assemble(rows))
        return True

    def collect(self, computed: Iterator[tuple[int, Row]], total: int, current: Session) -> dict[int, Row]:
        rows: dict[int, Row] = {}
        last_save = time.perf_counter()
        with raise_on_sigterm(), progress_bar(disable=not current.main) as bar:
            task = bar.add_task("features", total=total)
            try:
                for position, row in computed:
                    rows[position] = row
                    bar.advance(task)
                    if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                        self.save(rows, current)
                        last_save = time.perf_counter()
            except (KeyboardInterrupt, Terminated):
                if self.save(rows, current):
                    logger.warning(
                        "%d videos saved in %s: continue with the same command and --resume",
                        sum(isinstance(row, torch.Tensor) for row in rows.values())
                        + (len(self.previous.videos) if self.previous else 0),
                        self.request.output,
                    )
                raise
        return rows
