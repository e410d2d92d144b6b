"""Pooled video representations for downstream models: `uniformer features`.

Each video goes through the network under its test protocol (the same views `eval` scores) and
`model.forward_features` gives one vector per view: by default what the classifier reads (the network's
last layer: a UniFormer's stage 4 after the final norm, a UniFormerV2's fused video token after the
head's LayerNorm), or the pooled output of an earlier layer (`models.network.VideoNetwork`). A video's
vector is the mean over its views, or every view's with `per_view`.

Output files
- `OUT.safetensors`: tensor `features`, float32 `[N, D]` (`[N, V, D]` per view), and metadata whose
  values are JSON texts: `format`, `videos` (the N names, row order), `labels` (dataset label per row,
  or absent), `classes`, `failures` (`[{"video", "error"}]`: never dropped silently), `model`,
  `protocol`, `layer`, `per_view`, and what the rows were computed from: `weights_sha256` and
  `videos_sha256` (the input list, `evaluate.inputs_sha256`), which `--resume` must find unchanged.
- `OUT.npy` with the same array and `OUT.json` holding the metadata as one JSON object.
Both are written atomically, every minute while running and on Ctrl-C / SIGTERM, so `resume` can skip
the videos already done. Two files cannot be replaced together: while an `.npy` run is running, its
checkpoints go to one file, `OUT.partial.safetensors`, which `--resume` reads first and the final write
removes, so a run killed between writing the `.npy` and its index still resumes. Under `torchrun` each
rank computes a shard, as `eval` does, and rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from uniformer_cli.data import storage
from uniformer_cli.data.datasets import Sample, locate_split, read_split
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.data.paths import find_videos
from uniformer_cli.engine.arrays import FORMATS, checkpoint_path, index_path, write_arrays
from uniformer_cli.engine.distributed import Session, session
from uniformer_cli.engine.evaluate import CHECKPOINT_SECONDS, inputs_sha256, open_for_dataset, sample_key
from uniformer_cli.engine.evaluate import RESUME_KEYS as EVAL_RESUME_KEYS
from uniformer_cli.engine.inference import LAST_LAYER, InferenceModel, open_model
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.engine.scoring import all_finite, decoded_batches, non_finite
from uniformer_cli.engine.signals import raise_on_sigterm
from uniformer_cli.errors import Terminated, UniformerError, WriteError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import ensure_writable, refuse_to_replace
from uniformer_cli.jsonio import load_json, read_json
from uniformer_cli.weights.cache import weights_sha256

logger = logging.getLogger(__name__)

FORMAT_TAG = "uniformer-features/1"


@dataclass(frozen=True)
class FeaturesRequest:
    """Everything `uniformer features` was asked to do: `paths` (files, folders, globs) or a dataset split."""

    output: Path | str  # a local file, or a storage URL (written locally, then uploaded whole)
    paths: Sequence[str] = ()
    dataset: str | None = None
    root: str | Path | None = None  # a local folder or a storage URL
    split: str = "val"
    list_file: str | Path | None = None
    data: str | None = None  # a packed dataset (`uniformer data pack`) instead of dataset + root
    inference: InferenceRequest = field(default_factory=InferenceRequest)  # the model and how it runs
    layer: int | None = None  # None: the network's last layer, what its classifier reads
    per_view: bool = False
    decoder: str = "auto"
    batch_size: int = 8
    workers: int = DEFAULT_WORKERS
    limit: int | None = None
    resume: bool = False
    force: bool = False  # replace an existing OUT (without it, only --resume may reuse it)


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

    output: Path | str
    index: Path | str | None  # the .json next to a .npy
    shape: tuple[int, ...]
    videos: int
    failures: list[FeatureFailure]
    computed: int  # videos this run computed (the rest came from --resume)
    model: str
    protocol: str
    layer: int
    seconds: float


def write_features(output: Path, data: FeatureSet, *, final: bool = True) -> list[Path]:
    """Atomically write `data` as `.safetensors` or `.npy` + `.json` (`engine.arrays`; the index last: it
    names the rows); returns the files, in that order. A `final` write that `output` cannot take goes to the
    temporary folder instead, and the `WriteError` names the file(s); a checkpoint's failure is a
    `WriteError`."""
    return write_arrays(output, {"features": data.features}, data.metadata(), "features", final=final)


def read_features(path: str | Path) -> FeatureSet:
    """Read a file `write_features` wrote (`.safetensors`, or `.npy` with its `.json` index)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                strings = handle.metadata() or {}
                features = handle.get_tensor("features")
            metadata = {key: load_json(value) for key, value in strings.items()}
        else:
            # Mapped, not read: a header that claims more rows than the file holds fails here, unallocated.
            features = torch.from_numpy(np.array(np.load(path, mmap_mode="r", allow_pickle=False)))
            metadata = read_json(index_path(path))
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_TAG:
            raise ValueError("no features metadata")
        videos = _strings(metadata.pop("videos"), "videos")
        labels = metadata.pop("labels", None)
        if labels is not None and not (isinstance(labels, list) and all(type(label) is int for label in labels)):
            raise ValueError("'labels' is not a list of class indices")
        failures = [
            FeatureFailure(*_strings([item["video"], item["error"]], "failures")) for item in metadata.pop("failures")
        ]
        metadata.pop("format")
        if features.dtype != torch.float32 or features.ndim not in (1, 2, 3):
            raise ValueError(f"'features' is {str(features.dtype).removeprefix('torch.')} [{features.ndim} dims]")
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise UniformerError(f"{path} is not a features file written by `uniformer features` ({error})") from None
    if len(videos) != len(features):
        raise UniformerError(f"{path} lists {len(videos)} videos for {len(features)} rows of features")
    return FeatureSet(features, videos, labels, failures, metadata)


def _strings(values: object, what: str) -> list[str]:
    if not (isinstance(values, list) and all(isinstance(value, str) for value in values)):
        raise ValueError(f"'{what}' is not a list of names")
    return values


@dataclass
class _Plan:
    """The videos to process and what names and labels their rows get."""

    samples: list[Sample]
    keys: list[str]
    labels: list[int] | None
    failures: list[FeatureFailure]  # patterns that named no video
    classes: list[str] | None


def _check_output(request: FeaturesRequest) -> None:
    output = Path(request.output)
    if output.suffix not in FORMATS:
        raise UniformerError(f"-o {output}: name a .safetensors or .npy file (the format follows the suffix)")
    if output.is_dir():
        raise UniformerError(f"-o {output} is a folder: name a .safetensors or .npy file")
    outputs = [output, index_path(output)] if output.suffix == ".npy" else [output]
    if request.resume and request.force:
        raise UniformerError("--resume continues OUT and --force replaces it: give one of them")
    for path, what in zip(outputs, ("features", "features index"), strict=False):  # before any decoding
        ensure_writable(path, what)
    if not request.resume:
        refuse_to_replace(outputs, request.force, "features", ", or --resume to continue it")
    if output.suffix == ".npy":
        ensure_writable(checkpoint_path(output), "features checkpoint")
    if bool(request.paths) == (request.dataset is not None or request.data is not None):
        both = "give either video paths or a dataset (--dataset with --root, or --data), not both"
        none = "no videos given: pass video paths, --dataset with --root, or a packed dataset with --data"
        raise UniformerError(both if request.paths else none)


# What a file must share with the run that continues it (`evaluate.RESUME_KEYS`, and the features' own).
RESUME_KEYS = {
    "model": "model",
    "weights_sha256": EVAL_RESUME_KEYS["weights_sha256"],
    "protocol": "protocol",
    "videos_sha256": EVAL_RESUME_KEYS["videos_sha256"],
    "layer": "layer",
    "per_view": "per_view",
}


def _previous(request: FeaturesRequest, meta: dict[str, object]) -> FeatureSet | None:
    """The readable rows of an earlier run's output with the same model, protocol, layer and views."""
    if not request.resume:
        return None
    # A checkpoint is newer than the output it will replace: the final write removes it.
    output = Path(request.output)
    resumed = next((path for path in (checkpoint_path(output), output) if path.is_file()), None)
    if resumed is None:
        logger.info("nothing to resume: %s does not exist yet", request.output)
        return None
    previous = read_features(resumed)
    differ = [words for key, words in RESUME_KEYS.items() if previous.meta.get(key) != meta.get(key)]
    if differ:
        raise UniformerError(f"cannot resume from {resumed}: it was computed with another {', '.join(differ)}")
    return previous


def extract_features(request: FeaturesRequest, progress: ProgressCallback | None = None) -> FeaturesResult | None:
    """Compute and write the features of the requested videos; None on torchrun ranks other than 0.
    Rank 0 reports each finished video to `progress`.

    An output at a storage URL is written in a local working folder (`storage.Mirror`) and each finished
    file is uploaded whole, checkpoints too; `resume` first fetches what an earlier run uploaded, and the
    final upload removes its checkpoint."""
    if not storage.is_url(request.output):
        return _extract(replace(request, output=Path(request.output)), progress, None)
    url = str(request.output)
    mirror = storage.Mirror(str(storage.parent(url)))
    try:
        local = mirror.folder / storage.name_of(url)
        if local.suffix not in FORMATS:
            raise UniformerError(f"-o {url}: name a .safetensors or .npy file (the format follows the suffix)")
        outputs = [local, index_path(local)] if local.suffix == ".npy" else [local]
        if request.resume:  # an earlier run's checkpoint, else its output
            for path in dict.fromkeys([checkpoint_path(local), *outputs]):
                mirror.pull(path.name)
        elif not request.force:
            remote = [mirror.remote(path) for path in outputs]
            refuse_to_replace(remote, request.force, "features", ", or --resume to continue it", storage.exists)
        result = _extract(replace(request, output=local), progress, mirror)
        if result is None:
            return None
        index = mirror.remote(result.index) if isinstance(result.index, Path) else None
        return replace(result, output=url, index=index)
    finally:
        mirror.close()


def _extract(
    request: FeaturesRequest, progress: ProgressCallback | None, mirror: storage.Mirror | None
) -> FeaturesResult | None:
    """`extract_features` into a local file; with `mirror`, rank 0 uploads each file it finished."""
    assert isinstance(request.output, Path)
    _check_output(request)
    started = time.perf_counter()
    # The inputs are checked before a model is downloaded.
    location = search = None
    if not request.paths:
        location = locate_split(
            request.dataset, request.root, split=request.split, list_file=request.list_file, data=request.data
        )
    else:
        search = find_videos(request.paths)
    asked = request.layer or LAST_LAYER
    with session(request.inference.device) as current:
        if location is not None:
            opened = open_for_dataset(
                request.inference, location.spec, current.device, features=asked, progress=progress
            )
            split = read_split(location, classes=opened.labels, num_classes=opened.config.num_classes)
            samples = split.samples[: request.limit] if request.limit else split.samples
            inputs = inputs_sha256([sample_key(s, split.root) for s in split.samples], [s.label for s in split.samples])
            plan = _Plan(
                samples,
                [sample_key(sample, split.root) for sample in samples],
                [sample.label for sample in samples],
                [],
                split.classes,
            )
        else:
            assert search is not None
            opened = open_model(request.inference, device=current.device, features=asked, progress=progress)
            paths = search.paths[: request.limit] if request.limit else search.paths
            inputs = inputs_sha256([str(path) for path in search.paths], None)
            plan = _Plan(
                [Sample.of(path, -1) for path in paths],
                [str(path) for path in paths],
                None,
                [FeatureFailure(f.file, f.error) for f in search.failures],
                opened.labels,
            )
        protocol, layer = opened.protocol, opened.features
        assert layer is not None
        meta: dict[str, object] = {
            "model": opened.name,
            "protocol": protocol.as_dict(),
            "layer": layer,
            "per_view": request.per_view,
            "weights_sha256": weights_sha256(opened.loaded.path),
            "videos_sha256": inputs,
        }
        if plan.classes is not None:
            meta["classes"] = plan.classes
        # Every rank reads the file to resume (the output lies on storage they share) to skip the same videos.
        previous = _previous(request, meta)
        done = set(previous.videos) if previous is not None else set()
        todo = [position for position, key in enumerate(plan.keys) if key not in done]
        shard = current.share(todo)
        computed = _compute(opened, plan.samples, shard, request)
        run = _Output(request, plan, meta, previous, mirror)
        rows = current.gather(run.collect(computed, len(shard), current, progress if current.main else None))
        if not current.main:
            return None
        final = run.assemble(rows)
        written = write_features(request.output, final)
        if mirror is not None:
            mirror.push(written)
            if checkpoint_path(request.output) != request.output:  # the checkpoint the output replaces
                storage.remove(mirror.remote(checkpoint_path(request.output)))
    return FeaturesResult(
        output=request.output,
        index=index_path(request.output) if request.output.suffix == ".npy" else None,
        shape=tuple(final.features.shape),
        videos=len(final.videos),
        failures=final.failures,
        computed=sum(isinstance(row, torch.Tensor) for row in rows.values()),
        model=opened.name,
        protocol=protocol.describe(),
        layer=layer,
        seconds=time.perf_counter() - started,
    )


Row = torch.Tensor | str  # a video's features, or why it failed


def _compute(
    opened: InferenceModel, samples: Sequence[Sample], positions: Sequence[int], request: FeaturesRequest
) -> Iterator[tuple[int, Row]]:
    """(position, features `[D]` or `[V, D]`, or the error) for each video, as they finish; features that
    are not finite are the video's error, naming the weights file."""
    batches = decoded_batches(
        samples,
        positions,
        opened.protocol,
        batch_size=request.batch_size,
        workers=request.workers,
        decoder=request.decoder,
    )
    for batch in batches:
        views = [item for _, item, _ in batch if item is not None]
        outputs: Iterator[torch.Tensor] = iter([])
        if views:
            features = opened.outputs(torch.cat(views), request.batch_size)
            outputs = iter(features.split([len(v) for v in views]))
        for position, item, error in batch:
            if item is None:
                yield position, error or "unreadable"
            else:
                per_view = next(outputs)
                if not all_finite(per_view):
                    yield position, non_finite(opened.weights)
                else:
                    yield position, per_view.clone() if request.per_view else per_view.mean(dim=0)


@dataclass
class _Output:
    """One run's fixed context: how rows become a `FeatureSet`, checkpointed while running."""

    request: FeaturesRequest
    plan: _Plan
    meta: dict[str, object]
    previous: FeatureSet | None
    mirror: storage.Mirror | None = None  # where checkpoints are uploaded, for an output at a URL

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
        try:
            written = write_features(Path(self.request.output), self.assemble(rows), final=False)
            if self.mirror is not None:
                self.mirror.push(written)
        except WriteError as error:  # the run goes on; the final write tries again, then elsewhere
            logger.warning("%s (the extraction continues)", error)
            return False
        return True

    def collect(
        self,
        computed: Iterator[tuple[int, Row]],
        total: int,
        current: Session,
        progress: ProgressCallback | None,
    ) -> dict[int, Row]:
        rows: dict[int, Row] = {}
        last_save = time.perf_counter()
        with raise_on_sigterm():
            notify(progress, Progress("features", 0, total))
            try:
                for position, row in computed:
                    rows[position] = row
                    notify(progress, Progress("features", len(rows), total))
                    if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                        self.save(rows, current)
                        last_save = time.perf_counter()
            except (KeyboardInterrupt, Terminated):
                if self.save(rows, current):
                    logger.warning(
                        "%d videos saved in %s: continue with the same command and --resume",
                        sum(isinstance(row, torch.Tensor) for row in rows.values())
                        + (len(self.previous.videos) if self.previous else 0),
                        checkpoint_path(Path(self.request.output)),
                    )
                raise
        return rows
