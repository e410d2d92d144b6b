"""`uniformer data check`: what is wrong with a dataset, before a long run finds out.

Every listed video is probed (its container header and packet list read, nothing decoded unless
`deep`): unreadable, empty and too-short videos (fewer frames than the model's clip spans), and videos
whose content is the same file as another's (found by size and a hash of their first and last 64 KiB,
confirmed by a hash of the whole file). The split's class names are compared with the model's, the
decoding time of the whole dataset is estimated from a few videos, and `fix_list` writes the readable
videos as a `csv` layout list. Packed datasets (`data pack`) are checked through their index.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uniformer_cli.data import shards, storage
from uniformer_cli.data.datasets import (
    DatasetSplit,
    Sample,
    class_mismatch,
    get_dataset,
    open_sample,
    read_dataset,
    read_packed,
)
from uniformer_cli.data.sampling import train_indices
from uniformer_cli.data.video import Video
from uniformer_cli.errors import DatasetError, UniformerError
from uniformer_cli.files import write_or_fail
from uniformer_cli.zoo import V2ZooEntry, ZooEntry, entry_labels, find_entry

logger = logging.getLogger(__name__)

EDGE_BYTES = 64 * 2**10  # the part of each end of a file that the duplicate fingerprint hashes
ESTIMATE_VIDEOS = 8  # videos decoded to estimate the decoding time of the whole dataset
PROBLEMS = ("unreadable", "empty", "too short", "duplicate")


@dataclass(frozen=True)
class CheckRequest:
    root: str | Path
    dataset: str | None = None  # None: a packed dataset if ROOT holds an index, else class folders
    splits: tuple[str, ...] = ("train", "val")
    list_file: str | Path | None = None
    model: str | None = None  # a zoo name: the classes and clip length to check against
    min_frames: int | None = None  # overrides the model's clip length
    deep: bool = False
    decoder: str = "auto"
    workers: int = 8
    fix_list: Path | None = None


@dataclass
class VideoCheck:
    video: str
    split: str
    label: int
    label_name: str
    frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    problem: str | None = None
    error: str | None = None
    fingerprint: str | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if name != "fingerprint"}


@dataclass
class CheckReport:
    root: str
    dataset: str
    model: str | None
    min_frames: int | None
    videos: list[VideoCheck] = field(default_factory=list)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_mismatch: str | None = None
    decode_seconds_per_video: float | None = None
    decoded_videos: int = 0
    fix_list: str | None = None

    @property
    def problems(self) -> int:
        return sum(video.problem is not None for video in self.videos) + (self.class_mismatch is not None)

    def summary(self) -> dict[str, Any]:
        per_video = self.decode_seconds_per_video
        return {
            "root": self.root,
            "dataset": self.dataset,
            "model": self.model,
            "min_frames": self.min_frames,
            "splits": self.splits,
            "videos": len(self.videos),
            "problems": self.problems,
            "class_mismatch": self.class_mismatch,
            "decode_seconds_per_video": per_video,
            "decode_hours_estimate": None if per_video is None else per_video * len(self.videos) / 3600,
            "decoded_videos": self.decoded_videos,
            "fix_list": self.fix_list,
        }


def _model_needs(request: CheckRequest) -> tuple[str | None, list[str] | None, int | None]:
    """(model name, its classes, the frames its clip spans) from `--model` or the dataset's default model."""
    entry: ZooEntry | V2ZooEntry | None = find_entry(request.model) if request.model else None
    if entry is None and request.dataset is not None and request.dataset in ("k400", "k600", "sthv1", "sthv2"):
        entry = get_dataset(request.dataset).default_model
    if entry is None:
        return None, None, request.min_frames
    protocol = entry.protocol
    span = protocol.frames * (protocol.stride or 1) if protocol.sampling == "dense" else protocol.frames
    return entry.name, entry_labels(entry), request.min_frames or span


def _fingerprint(sample: Sample) -> str | None:
    """A file's size and a hash of both its ends: equal for copies of one file, rarely for two videos."""
    try:
        size = sample.path.stat().st_size
        with sample.path.open("rb") as file:
            head = file.read(EDGE_BYTES)
            file.seek(max(0, size - EDGE_BYTES))
            tail = file.read(EDGE_BYTES)
    except OSError:
        return None
    return f"{size}:{hashlib.sha256(head + tail).hexdigest()}"


def _content_hash(parts: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _full_hash(sample: Sample) -> str:
    if sample.path.is_dir():
        return _content_hash([file.read_bytes() for file in sorted(sample.path.iterdir()) if file.is_file()])
    digest = hashlib.sha256()
    with sample.path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _open(sample: Sample, check: VideoCheck, decoder: str) -> Video:
    """The sample's video; a packed one's content hash is taken from the bytes read for it."""
    if sample.member is None:
        return open_sample(sample, decoder)
    packed = shards.read_member(sample.member)
    check.fingerprint = "sha256:" + _content_hash([packed.video] if packed.video is not None else packed.frames)
    return shards.open_packed_video(packed, check.video, decoder)


def _probe(sample: Sample, check: VideoCheck, request: CheckRequest, min_frames: int | None) -> VideoCheck:
    """Open (and with `deep`, decode) one video and fill in what was found."""
    try:
        if sample.member is None and sample.path.is_file():
            check.bytes = sample.path.stat().st_size
            if check.bytes == 0:
                check.problem, check.error = "empty", f"{check.video} is empty (0 bytes)"
                return check
        elif sample.member is not None:
            check.bytes = sample.member.size
        with _open(sample, check, "pyav" if not request.deep else request.decoder) as video:
            check.frames = sample.frame_count(video)
            check.fps, check.width, check.height = round(video.fps, 3), video.width, video.height
            if request.deep:
                for start in range(0, video.num_frames, 64):
                    video.read(list(range(start, min(start + 64, video.num_frames))))
    except (UniformerError, OSError) as error:
        check.problem, check.error = "unreadable", str(error).splitlines()[0]
        return check
    if min_frames is not None and check.frames is not None and check.frames < min_frames:
        check.problem = "too short"
        check.error = f"{check.video} has {check.frames} frames; the model's clip spans {min_frames}"
    if sample.member is None and sample.path.is_file():
        check.fingerprint = _fingerprint(sample)
    elif sample.member is None:
        check.fingerprint = "frames:" + _full_hash(sample)
    return check


def _mark_duplicates(pairs: Sequence[tuple[Sample, VideoCheck]]) -> None:
    """Videos whose whole content equals an earlier one's become `duplicate` problems (over `too short`:
    a copy is left out of a fixed list whatever its length). Files that share a fingerprint are hashed
    whole; frame folders and packed samples were hashed whole when probed."""
    groups: dict[str, list[tuple[Sample, VideoCheck]]] = {}
    for sample, check in pairs:
        if check.problem in (None, "too short") and check.fingerprint is not None:
            groups.setdefault(check.fingerprint, []).append((sample, check))
    for fingerprint, group in groups.items():
        if len(group) < 2:
            continue
        whole = not fingerprint.startswith(("sha256:", "frames:"))
        first_of: dict[str, VideoCheck] = {}
        for sample, check in group:
            digest = _full_hash(sample) if whole else fingerprint
            if digest in first_of:
                original = first_of[digest]
                check.problem = "duplicate"
                check.error = f"{check.video} ({check.split}) is the same file as {original.video} ({original.split})"
            else:
                first_of[digest] = check


def _estimate(samples: Sequence[Sample], request: CheckRequest, span: int | None) -> tuple[float | None, int]:
    """Seconds to decode one training clip per video, from a few videos spread over the list."""
    if not samples:
        return None, 0
    chosen = np.linspace(0, len(samples) - 1, min(ESTIMATE_VIDEOS, len(samples))).round().astype(int)
    rng = np.random.default_rng(0)
    spent, decoded = 0.0, 0
    for position in sorted(set(chosen.tolist())):
        started = time.perf_counter()
        try:
            with open_sample(samples[position], request.decoder, "train") as video:
                frames = span or 16
                indices = train_indices("dense", video.num_frames, min(16, frames), max(1, frames // 16), rng)
                video.read(indices)
        except UniformerError:
            continue
        spent += time.perf_counter() - started
        decoded += 1
    return (spent / decoded if decoded else None), decoded


def _read_split(request: CheckRequest, name: str) -> DatasetSplit:
    if request.dataset is None and shards.is_packed(request.root):
        return read_packed(request.root, name if not str(request.root).endswith(".tar") else None)
    if storage.is_url(request.root):
        raise DatasetError(
            f"{request.root}: data check reads only packed datasets (`uniformer data pack`) from URLs; check a"
            " local copy of loose videos"
        )
    return read_dataset(request.dataset or "folder", Path(request.root), split=name, list_file=request.list_file)


def check(request: CheckRequest, on_video: Callable[[VideoCheck], None] | None = None) -> CheckReport:
    """Check every requested split of the dataset (splits that do not exist are skipped, not all)."""
    model, classes, min_frames = _model_needs(request)
    splits: dict[str, DatasetSplit] = {}
    missing: list[str] = []
    for name in request.splits:
        try:
            splits[name] = _read_split(request, name)
        except DatasetError as error:
            if len(request.splits) == 1:
                raise
            missing.append(f"{name}: {error}")
    if not splits:
        raise DatasetError(f"no split of {request.root} could be read ({'; '.join(missing)})")
    for note in missing:
        logger.warning("skipped %s", note)
    first = next(iter(splits.values()))
    report = CheckReport(str(request.root), first.dataset, model, min_frames)
    if classes is not None:
        extra, absent = class_mismatch(first.classes, classes)
        if extra is not None or absent is not None:
            detail = (
                f"class {extra!r} is not one of the model's" if extra else f"the model's class {absent!r} is absent"
            )
            report.class_mismatch = f"the labels of {first.source} do not match {model}: {detail}"
    pairs: list[tuple[Sample, VideoCheck]] = []
    for name, split in splits.items():
        root = split.root
        for sample in split.samples:
            shown = sample.path.relative_to(root) if sample.path.is_relative_to(root) else sample.path
            label_name = split.classes[sample.label] if 0 <= sample.label < len(split.classes) else str(sample.label)
            pairs.append((sample, VideoCheck(shown.as_posix(), name, sample.label, label_name)))
    with ThreadPoolExecutor(max(1, request.workers)) as pool:
        futures = [pool.submit(_probe, sample, check, request, min_frames) for sample, check in pairs]
        for future in futures:
            done = future.result()
            if on_video is not None:
                on_video(done)
    _mark_duplicates(pairs)
    report.videos = [check for _, check in pairs]
    for name, split in splits.items():
        checks = [check for check in report.videos if check.split == name]
        counts = Counter(check.label_name for check in checks)
        report.splits[name] = {
            "videos": len(checks),
            "classes": {label: counts.get(label, 0) for label in split.classes},
            "problems": {kind: sum(check.problem == kind for check in checks) for kind in PROBLEMS},
            "source": str(split.source),
            "layout": split.layout,
        }
    readable = [sample for sample, check in pairs if check.problem is None]
    report.decode_seconds_per_video, report.decoded_videos = _estimate(readable, request, min_frames)
    if request.fix_list is not None:
        _write_fix_list(request.fix_list, pairs)
        report.fix_list = str(request.fix_list)
    return report


def _write_fix_list(path: Path, pairs: Sequence[tuple[Sample, VideoCheck]]) -> None:
    """The videos without problems as a `csv` layout list (`path,label` with a header; paths relative to
    the dataset root, labels by name): `--dataset csv --list FILE --root ROOT` reads it."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for _, check in pairs:
        if check.problem is None:
            writer.writerow([check.video, check.label_name, check.split])
    text = buffer.getvalue()
    write_or_fail(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), "fixed list")
