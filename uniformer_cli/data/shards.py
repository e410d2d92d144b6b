"""Datasets packed into WebDataset-style tar shards (`uniformer data pack`), and reading them back.

A packed dataset is a folder (local, or a storage URL, `storage.py`) holding

- `{split}-{NNNNNN}.tar`: WebDataset shards. Each sample is a run of tar members sharing a key: the
  video as stored (`KEY.mp4`, `.webm`...) and `KEY.json` (label index and name, video id, the path it was
  packed from, duration, frames, fps). Keys are the sample's number in its split.
- `index.json` (`INDEX`): the classes, and per split and shard the samples' byte offsets, sizes and labels.

The index makes every sample addressable: a reader fetches one sample, or a run of them, with ranged
reads of its shard (one request per run on object stores), so evaluation reads shards front to back and
training reads each step's samples from a few shards. The tar members are parsed with `webdataset`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from uniformer_cli.data import storage
from uniformer_cli.data.video import (
    VIDEO_EXTENSIONS,
    EncodedVideo,
    FrameFolderVideo,
    Video,
    Workload,
    open_video,
)
from uniformer_cli.errors import DatasetError, first_line
from uniformer_cli.jsonio import load_json

INDEX = "index.json"
FORMAT = "uniformer-shards"
VERSION = 1
SHARD_NAME = "{split}-{number:06d}.tar"
_SHARD_FILE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<number>\d{6})\.tar$")
# A brace range of shard numbers, as WebDataset writes them: `train-{000000..000099}.tar`.
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
# Index files above this size are refused before they are read (240,000 Kinetics samples take ~10 MB).
MAX_INDEX_BYTES = 512 * 2**20
MAX_SAMPLE_BYTES = 4 * 2**30  # one packed video
# Training order within a shard: its samples are shuffled in runs of this many (see `epoch_order`).
SHUFFLE_BLOCK = 64


@dataclass(frozen=True)
class Shard:
    """One tar file of a split: where each of its samples starts, how many bytes it spans, its label,
    the path it was packed from (relative to the dataset root) and, for frame folders whose list gives
    one, its frame count."""

    name: str
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    labels: tuple[int, ...]
    first: int  # the split-wide number of its first sample (its key)
    videos: tuple[str, ...] = ()
    num_frames: tuple[int | None, ...] = ()

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def bytes(self) -> int:
        return self.offsets[-1] + self.sizes[-1] if self.offsets else 0

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "first": self.first,
            "offsets": list(self.offsets),
            "sizes": list(self.sizes),
            "labels": list(self.labels),
            "videos": list(self.videos),
        }
        if any(count is not None for count in self.num_frames):
            entry["num_frames"] = list(self.num_frames)
        return entry


@dataclass(frozen=True)
class ShardMember:
    """Where one packed sample lies: its shard file (path or URL), byte range and key."""

    shard: str | Path
    offset: int
    size: int
    key: str

    @property
    def name(self) -> str:
        """How messages name it: `train-000003.tar:00001234`."""
        return f"{storage.name_of(self.shard)}:{self.key}"


@dataclass(frozen=True)
class PackedSample:
    """A sample read back: its video bytes (or None for a frame folder, whose frames are in `frames`),
    the file extension, and its JSON metadata."""

    key: str
    video: bytes | None
    extension: str
    meta: dict[str, Any]
    frames: tuple[bytes, ...] = ()


def key_of(number: int) -> str:
    return f"{number:08d}"


@dataclass(frozen=True)
class PackedSplit:
    """One split of a packed dataset, as its index describes it."""

    root: str | Path  # the folder of the shards
    split: str
    classes: list[str]
    shards: list[Shard]
    dataset: str | None = None

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def location(self, shard: Shard) -> str | Path:
        return storage.join(self.root, shard.name)

    def members(self) -> Iterator[tuple[ShardMember, int]]:
        """Every sample's member and label, shard by shard, in packed order."""
        for shard in self.shards:
            where = self.location(shard)
            for position in range(len(shard)):
                member = ShardMember(
                    where, shard.offsets[position], shard.sizes[position], key_of(shard.first + position)
                )
                yield member, shard.labels[position]


def _checked_shard(raw: Any, where: str) -> Shard:
    try:
        name, first = str(raw["name"]), int(raw["first"])
        offsets, sizes, labels = (tuple(int(value) for value in raw[field]) for field in ("offsets", "sizes", "labels"))
        videos = tuple(str(video) for video in raw["videos"])
        counts = raw.get("num_frames") or [None] * len(offsets)
        num_frames = tuple(None if count is None else int(count) for count in counts)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DatasetError(f"{where}: malformed shard entry (name, first, offsets, sizes, labels, videos)") from None
    if not _SHARD_FILE.match(name):
        raise DatasetError(f"{where}: shard name {name!r} is not SPLIT-NNNNNN.tar")
    if not len(offsets) == len(sizes) == len(labels) == len(videos) == len(num_frames) or first < 0:
        raise DatasetError(f"{where}: shard {name} has per-sample lists of different lengths")
    end = 0
    for offset, size in zip(offsets, sizes, strict=True):
        if offset < end or not 0 < size <= MAX_SAMPLE_BYTES or offset % 512:
            raise DatasetError(f"{where}: shard {name} has a sample at an impossible offset or size")
        end = offset + size
    return Shard(name, offsets, sizes, labels, first, videos, num_frames)


def read_index(root: str | Path) -> dict[str, Any]:
    """The parsed `index.json` of a packed dataset folder, checked for its format and version."""
    location = storage.join(root, INDEX)
    if not storage.exists(location):
        raise DatasetError(f"{root} holds no {INDEX}: not a dataset packed by `uniformer data pack`")
    if storage.size_of(location) > MAX_INDEX_BYTES:
        raise DatasetError(f"{location} is larger than {MAX_INDEX_BYTES // 2**20} MiB: not a shard index")
    try:
        index = load_json(storage.read_bytes(location), max_bytes=MAX_INDEX_BYTES)
    except ValueError as error:  # malformed, too deep or not UTF-8 (UnicodeDecodeError is one)
        raise DatasetError(f"{location} is not valid JSON ({first_line(error)})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DatasetError(f"{location} is not a uniformer shard index")
    if index.get("version") != VERSION:
        raise DatasetError(f"{location} has index version {index.get('version')!r}; this release reads {VERSION}")
    classes = index.get("classes")
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes) or not classes:
        raise DatasetError(f"{location}: `classes` must be a non-empty list of names")
    if not isinstance(index.get("splits"), dict):
        raise DatasetError(f"{location}: `splits` must map split names to their shards")
    return index


def is_packed(location: str | Path) -> bool:
    """Whether `location` names a packed dataset: its folder, its index, or shard files of one."""
    text = str(location)
    if text.endswith(".tar") or text.endswith(INDEX):
        return True
    return storage.exists(storage.join(location, INDEX))


def _shard_names(pattern: str) -> list[str]:
    """The file names a shard pattern names: one file, or a brace range `train-{000000..000009}.tar`."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    low, high = int(match[1]), int(match[2])
    if high < low or high - low > 1_000_000:
        raise DatasetError(f"shard range {match[0]} is empty or too large")
    width = len(match[1])
    return [
        pattern[: match.start()] + f"{number:0{width}d}" + pattern[match.end() :] for number in range(low, high + 1)
    ]


def open_packed(location: str | Path, split: str | None = None) -> PackedSplit:
    """A split of a packed dataset, from its folder (`split` names it), its `index.json`, or its shard
    files (`DST/train-000003.tar`, `DST/train-{000000..000099}.tar`: those shards only, the split named
    by them)."""
    text = str(location)
    wanted: set[str] | None = None
    if text.endswith(".tar"):
        folder, pattern = storage.parent(location), storage.name_of(location)
        wanted = set(_shard_names(pattern))
        splits = {match["split"] for name in wanted if (match := _SHARD_FILE.match(name))}
        if len(splits) != 1 or len(splits) != 1 or any(not _SHARD_FILE.match(name) for name in wanted):
            raise DatasetError(f"{location}: shard files are named SPLIT-NNNNNN.tar, all of one split")
        named = splits.pop()
        if split is not None and split != named:
            raise DatasetError(f"{location} are {named} shards, not {split}")
        split = named
    elif text.endswith(INDEX):
        folder = storage.parent(location)
    else:
        folder = location
    index = read_index(folder)
    splits_found = index["splits"]
    if split is None:
        raise DatasetError(f"{folder}: name the split (packed: {', '.join(splits_found)})")
    if split not in splits_found:
        raise DatasetError(f"{folder} has no {split} split (packed: {', '.join(splits_found) or 'none'})")
    entries = splits_found[split].get("shards") if isinstance(splits_found[split], dict) else None
    if not isinstance(entries, list):
        raise DatasetError(f"{storage.join(folder, INDEX)}: split {split} lists no shards")
    where = str(storage.join(folder, INDEX))
    shards = [_checked_shard(entry, where) for entry in entries]
    if wanted is not None:
        known = {shard.name for shard in shards}
        missing = sorted(wanted - known)
        if missing:
            raise DatasetError(f"{missing[0]} is not a shard of {folder} (see its {INDEX})")
        shards = [shard for shard in shards if shard.name in wanted]
    classes = list(index["classes"])
    for shard in shards:
        bad = next((label for label in shard.labels if not 0 <= label < len(classes)), None)
        if bad is not None:
            raise DatasetError(f"{where}: shard {shard.name} has label {bad}, not one of {len(classes)} classes")
    dataset = index.get("dataset") if isinstance(index.get("dataset"), str) else None
    return PackedSplit(folder, split, classes, shards, dataset)


def epoch_order(shard_sizes: Sequence[int], seed: int, epoch: int, block: int = SHUFFLE_BLOCK) -> np.ndarray:
    """The order in which training visits the samples of shards holding `shard_sizes` samples (sample
    numbers count shard after shard, in index order): the shards in a seeded random order, and inside
    each shard its runs of `block` consecutive samples in order, each run shuffled. Every sample comes
    once; the order depends only on (seed, epoch), so a resumed run takes the same batches. A micro-batch
    is a slice of this order: its samples lie close together in one shard (or two), read with a few
    ranged requests instead of one per video file. The pack shuffled the training split once, so each run
    mixes the classes."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    starts = np.concatenate([[0], np.cumsum(shard_sizes, dtype=np.int64)])
    parts: list[np.ndarray] = []
    for shard in rng.permutation(len(shard_sizes)):
        numbers = np.arange(starts[shard], starts[shard + 1])
        parts.extend(rng.permutation(numbers[first : first + block]) for first in range(0, len(numbers), block))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def parse_sample(data: bytes, where: str) -> PackedSample:
    """A sample from the bytes of its tar members (`ShardMember`'s range), parsed by webdataset."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    try:
        files = tar_file_expander([{"url": where, "stream": io.BytesIO(data)}])
        grouped = list(group_by_keys(files))
    except Exception as error:  # tarfile's and webdataset's own exception types
        raise DatasetError(f"{where}: not a packed sample ({first_line(error)})") from None
    if len(grouped) != 1:
        raise DatasetError(f"{where}: expected one sample, found {len(grouped)}")
    fields = grouped[0]
    try:
        meta = load_json(fields["json"])
    except (KeyError, ValueError):
        raise DatasetError(f"{where}: the sample has no valid JSON member") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: the sample's JSON is not an object")
    videos = [name for name in fields if f".{name}" in VIDEO_EXTENSIONS]
    frames = sorted(name for name in fields if re.fullmatch(r"frame\d+\.(jpg|jpeg|png)", name))
    if len(videos) == 1:
        return PackedSample(str(fields["__key__"]), fields[videos[0]], f".{videos[0]}", meta)
    if frames and not videos:
        return PackedSample(str(fields["__key__"]), None, "", meta, tuple(fields[name] for name in frames))
    raise DatasetError(f"{where}: the sample holds no single video (members: {', '.join(sorted(fields))})")


def read_member(member: ShardMember) -> PackedSample:
    return parse_sample(storage.read_bytes(member.shard, member.offset, member.size), member.name)


def read_members(members: Sequence[ShardMember]) -> list[PackedSample]:
    """Several samples, each shard's ranges fetched together (concurrently from an object store)."""
    by_shard: dict[str, list[int]] = {}
    for position, member in enumerate(members):
        by_shard.setdefault(str(member.shard), []).append(position)
    out: list[PackedSample | None] = [None] * len(members)
    for positions in by_shard.values():
        shard = members[positions[0]].shard
        parts = storage.read_ranges(shard, [(members[p].offset, members[p].size) for p in positions])
        for position, data in zip(positions, parts, strict=True):
            out[position] = parse_sample(data, members[position].name)
    return [sample for sample in out if sample is not None]


def open_packed_video(sample: PackedSample, name: str, decoder: str = "auto", workload: Workload = "views") -> Video:
    """The video of a packed sample, decoded from memory; `name` is how messages call it."""
    if sample.video is None:
        return FrameFolderVideo.from_frames(name, sample.frames)
    return open_video(EncodedVideo(name, sample.video), decoder, workload)


def packed_video_name(meta: dict[str, Any], member: ShardMember) -> str:
    """The path a sample was packed from (as records name it), else its shard member."""
    path = meta.get("path")
    return str(PurePosixPath(path)) if isinstance(path, str) and path else member.name


def shard_file(split: str, number: int) -> str:
    return SHARD_NAME.format(split=split, number=number)
