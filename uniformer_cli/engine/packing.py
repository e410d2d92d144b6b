"""`uniformer data pack`: a dataset in any layout the readers know -> WebDataset-style tar shards plus an
index (`data/shards.py` describes the format).

Videos are copied byte for byte, unless `resize` asks for the short side to be scaled (H.264, every
frame kept at its rate: the common Kinetics preprocessing to short side 256 or 320). The training split
is shuffled once, seeded, so that each shard mixes the classes; the other splits keep their list order.
Shards are written under temporary names and renamed when complete; the index is written last.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from uniformer_cli.data import shards, storage
from uniformer_cli.data.datasets import DatasetSplit, Sample, read_dataset
from uniformer_cli.data.loading import decoding_workers
from uniformer_cli.data.video import EncodedVideo, FrameFolderVideo, open_video
from uniformer_cli.errors import DatasetError, UniformerError, VideoError, WriteError
from uniformer_cli.files import write_reason
from uniformer_cli.jsonio import dump_json

logger = logging.getLogger(__name__)

# ASCII digits, few enough that the size stays a finite number (`\d` also takes other scripts' digits).
_SIZE = re.compile(
    r"^\s*(?P<number>[0-9]{1,15}(?:\.[0-9]{1,15})?)\s*(?P<unit>(?:[KMGT](?:iB|B)?|B)?)\s*$", re.IGNORECASE
)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
SHARD_BYTES_RANGE = (10**3, 10**12)  # 1KB to 1TB per shard (a shard holds one sample at least)
RESIZE_RANGE = (16, 4096)
DEFAULT_SHARD_BYTES = 10**9
_BLOCK = 512


def parse_size(text: str) -> int:
    """`1GB`, `500MB`, `2GiB`, `123456` -> bytes (decimal units; `iB` units are powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise UniformerError(f"cannot read the size {text!r}: use e.g. 1GB, 500MB or 2GiB")
    unit = match["unit"].lower()
    base = 1024 ** "kmgt".index(unit[0]) * 1024 if unit.endswith("ib") else _UNITS[unit[:1]]
    value = int(float(match["number"]) * base)
    low, high = SHARD_BYTES_RANGE
    if not low <= value <= high:
        raise UniformerError(f"--shard-size {text} is out of range: 1KB to 1TB")
    return value


@dataclass(frozen=True)
class PackRequest:
    source: Path
    destination: str | Path
    dataset: str | None = None  # None: the `folder` layout (SRC/train/<class>/<video>, SRC/val/...)
    splits: tuple[str, ...] = ("train", "val")
    list_file: Path | None = None  # the list of the one split packed (needed by the csv layout)
    shard_bytes: int = DEFAULT_SHARD_BYTES
    resize: int | None = None
    seed: int = 0
    workers: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.resize is not None and not RESIZE_RANGE[0] <= self.resize <= RESIZE_RANGE[1]:
            raise UniformerError(f"--resize {self.resize} is out of range: {RESIZE_RANGE[0]} to {RESIZE_RANGE[1]}")
        if not self.splits or len(set(self.splits)) != len(self.splits):
            raise UniformerError("name each split to pack once")
        if self.list_file is not None and len(self.splits) != 1:
            raise UniformerError("--list names the list of one split: pack one --split at a time with it")


@dataclass
class PackedVideo:
    """One video's outcome: where it went, or why it was left out."""

    video: str
    split: str
    label: int
    shard: str | None = None
    key: str | None = None
    bytes: int | None = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PackReport:
    destination: str
    dataset: str
    classes: int
    resize: int | None
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # samples, shards, bytes, failures
    videos: list[PackedVideo] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "dataset": self.dataset,
            "classes": self.classes,
            "resize": self.resize,
            "splits": self.splits,
            "videos": sum(split["samples"] for split in self.splits.values()),
            "failures": sum(split["failures"] for split in self.splits.values()),
        }


def _tar_bytes(size: int) -> int:
    """What one member takes in a tar: its header block and its data padded to whole blocks."""
    return _BLOCK + -(-size // _BLOCK) * _BLOCK


@dataclass(frozen=True)
class _Encoded:
    """A video ready to be written: its members (extension -> bytes) and metadata, or an error."""

    members: dict[str, bytes]
    meta: dict[str, Any]
    error: str | None = None


def resized_video(path: Path, short_side: int) -> bytes:
    """The video re-encoded (H.264 in MP4, yuv420p) with its short side scaled to `short_side` (even
    sizes, aspect kept), every frame kept at the source's rate."""
    import av

    output = io.BytesIO()
    try:
        with av.open(str(path)) as source, av.open(output, "w", format="mp4") as target:
            stream = source.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or 30
            width, height = stream.codec_context.width, stream.codec_context.height
            scale = short_side / min(width, height)
            size = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
            encoded = target.add_stream("libx264", rate=rate)
            encoded.width, encoded.height, encoded.pix_fmt = size[0], size[1], "yuv420p"
            encoded.options = {"crf": "18", "preset": "fast"}
            step = Fraction(1, 1) / Fraction(rate)
            for number, frame in enumerate(source.decode(stream)):
                frame = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="BILINEAR")
                frame.pts, frame.time_base = number, step  # every frame kept, evenly at the source's rate
                target.mux(encoded.encode(frame))
            target.mux(encoded.encode(None))
    except (av.FFmpegError, OSError, ValueError, IndexError) as error:
        raise VideoError(f"cannot re-encode {path}: {error}") from None
    return output.getvalue()


def _frame_members(folder: Path) -> dict[str, bytes]:
    """A frame folder's files as members `frame000001.jpg`..., in frame order."""
    files = [file for file in FrameFolderVideo(folder).frame_files if isinstance(file, Path)]
    return {f"frame{number:06d}{file.suffix.lower()}": file.read_bytes() for number, file in enumerate(files, start=1)}


def encode_sample(sample: Sample, root: Path, label_name: str, resize: int | None) -> _Encoded:
    """Read (or re-encode) one video and describe it; failures become an error, never an exception."""
    relative = sample.path.relative_to(root) if sample.path.is_relative_to(root) else sample.path
    meta: dict[str, Any] = {
        "label": sample.label,
        "label_name": label_name,
        "video_id": sample.path.stem if sample.path.is_file() else sample.path.name,
        "path": str(PurePosixPath(*relative.parts)),
    }
    if sample.num_frames is not None:
        meta["num_frames"] = sample.num_frames  # a frame folder's count from the list (PROTOCOLS.md 2.2)
    try:
        if sample.path.is_dir():
            if resize is not None:
                raise VideoError(f"{sample.path}: --resize applies to video files, not frame folders")
            members = _frame_members(sample.path)
        else:
            data = resized_video(sample.path, resize) if resize else sample.path.read_bytes()
            extension = ".mp4" if resize else sample.path.suffix.lower()
            members = {extension.lstrip("."): data}
        source = EncodedVideo(str(sample.path), members["mp4"]) if resize else sample.path
        with open_video(source, "pyav") as video:
            meta.update(frames=video.num_frames, fps=round(video.fps, 6), duration=round(video.duration, 6))
            meta.update(width=video.width, height=video.height)
    except (UniformerError, OSError) as error:
        reason = write_reason(error) if isinstance(error, OSError) else str(error)
        return _Encoded({}, meta, reason if isinstance(error, UniformerError) else f"{sample.path}: {reason}")
    return _Encoded(members, meta)


class _ShardWriter:
    """Writes one split's samples into shards of at most `limit` bytes, recording the index entries."""

    def __init__(self, destination: str | Path, split: str, limit: int) -> None:
        self.destination = destination
        self.split = split
        self.limit = limit
        self.shards: list[shards.Shard] = []
        self.count = 0  # samples written so far (their keys)
        self._file: IO[bytes] | None = None
        self._tar: Any = None
        self._temporary: Path | None = None
        self._entry: dict[str, list[Any]] = {}
        self._first = 0

    @property
    def current(self) -> str:
        return shards.shard_file(self.split, len(self.shards))

    def _open(self) -> None:
        from webdataset import TarWriter

        name = self.current
        if storage.is_url(self.destination):
            self._file = storage.open_output(str(storage.join(self.destination, name))).__enter__()
        else:
            folder = Path(self.destination)
            self._temporary = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            self._file = open(self._temporary, "wb")  # noqa: SIM115  (closed in _close)
        # Fixed owner and time: packing the same data twice gives identical shards.
        self._tar = TarWriter(self._file, user="uniformer", group="uniformer", mtime=0, compress=False)
        self._entry = {"offsets": [], "sizes": [], "labels": [], "videos": [], "num_frames": []}
        self._first = self.count

    def _bytes_so_far(self) -> int:
        return int(self._tar.tarstream.offset) if self._tar is not None else 0

    def add(self, encoded: _Encoded) -> tuple[str, str, int]:
        """Write one sample; returns (shard name, key, bytes it takes)."""
        meta_bytes = dump_json(encoded.meta, ensure_ascii=False, sort_keys=True).encode()
        size = _tar_bytes(len(meta_bytes)) + sum(_tar_bytes(len(data)) for data in encoded.members.values())
        if self._tar is not None and self._entry["offsets"] and self._bytes_so_far() + size > self.limit:
            self._close()
        if self._tar is None:
            self._open()
        key = shards.key_of(self.count)
        start = self._bytes_so_far()
        self._tar.write({"__key__": key, "json": meta_bytes, **encoded.members})
        written = self._bytes_so_far() - start
        assert written == size, (written, size)
        self._entry["offsets"].append(start)
        self._entry["sizes"].append(written)
        self._entry["labels"].append(int(encoded.meta["label"]))
        self._entry["videos"].append(encoded.meta["path"])
        self._entry["num_frames"].append(encoded.meta.get("num_frames"))
        self.count += 1
        return self.current, key, written

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        assert self._file is not None
        if storage.is_url(self.destination):
            self._file.__exit__(None, None, None)
        else:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            assert self._temporary is not None
            os.replace(self._temporary, Path(self.destination) / self.current)
            self._temporary = None
        entry = {name: tuple(values) for name, values in self._entry.items()}
        self.shards.append(shards.Shard(name=self.current, first=self._first, **entry))
        self._tar = self._file = None

    def finish(self) -> list[shards.Shard]:
        self._close()
        return self.shards

    def abandon(self) -> None:
        """Drop the shard being written (an interrupted or failed pack)."""
        with contextlib.suppress(Exception):
            if self._tar is not None:
                self._tar.close()
            if self._file is not None:
                self._file.close()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)


def _encode_all(samples: Sequence[Sample], split: DatasetSplit, resize: int | None, workers: int) -> Iterator[_Encoded]:
    """`encode_sample` of each sample, in order; re-encoding runs in `workers` processes."""
    names = split.classes
    if workers <= 0 or resize is None:
        for sample in samples:
            yield encode_sample(sample, split.root, names[sample.label], resize)
        return
    with ProcessPoolExecutor(workers) as pool:
        arguments = ((sample, split.root, names[sample.label], resize) for sample in samples)
        yield from pool.map(_encode_star, arguments, chunksize=1)


def _encode_star(arguments: tuple[Sample, Path, str, int | None]) -> _Encoded:
    return encode_sample(*arguments)


def _check_destination(destination: str | Path, overwrite: bool) -> None:
    index = storage.join(destination, shards.INDEX)
    if storage.exists(index) and not overwrite:
        raise UniformerError(f"{destination} already holds a packed dataset: pass --force to replace it")
    if not storage.is_url(destination):
        folder = Path(destination)
        if folder.exists() and not folder.is_dir():
            raise UniformerError(f"{destination} is a file: give a folder for the shards")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WriteError(f"cannot create {destination}: {write_reason(error)}") from None


def pack(request: PackRequest, on_video: Callable[[PackedVideo], None] | None = None) -> PackReport:
    """Pack every requested split of `request.source` into shards under `request.destination`."""
    _check_destination(request.destination, request.overwrite)
    dataset = request.dataset or "folder"
    splits: dict[str, DatasetSplit] = {}
    classes: list[str] | None = None
    for name in request.splits:
        split = read_dataset(dataset, request.source, split=name, list_file=request.list_file, classes=classes)
        classes = split.classes
        splits[name] = split
    assert classes is not None
    report = PackReport(str(request.destination), dataset, len(classes), request.resize)
    workers = decoding_workers(request.workers)
    index_splits: dict[str, Any] = {}
    for name, split in splits.items():
        samples = list(split.samples)
        if name == "train":  # every shard a mix of classes; the others keep their list order
            order = np.random.default_rng(request.seed).permutation(len(samples))
            samples = [samples[i] for i in order]
        writer = _ShardWriter(request.destination, name, request.shard_bytes)
        failures = 0
        try:
            for sample, encoded in zip(samples, _encode_all(samples, split, request.resize, workers), strict=True):
                video = PackedVideo(encoded.meta["path"], name, sample.label)
                if encoded.error is not None:
                    video.error, failures = encoded.error, failures + 1
                else:
                    video.shard, video.key, video.bytes = writer.add(encoded)
                report.videos.append(video)
                if on_video is not None:
                    on_video(video)
            written = writer.finish()
        except OSError as error:
            writer.abandon()
            where = storage.join(request.destination, writer.current)
            raise WriteError(f"cannot write shard {where}: {write_reason(error)}") from None
        except BaseException:
            writer.abandon()
            raise
        if not written:
            raise DatasetError(f"no video of the {name} split could be read: nothing packed")
        counts = [0] * len(classes)
        for shard in written:
            for label in shard.labels:
                counts[label] += 1
        index_splits[name] = {
            "samples": sum(len(shard) for shard in written),
            "counts": counts,
            "source": str(split.source),
            "layout": split.layout,
            "shards": [shard.as_dict() for shard in written],
        }
        report.splits[name] = {
            "samples": index_splits[name]["samples"],
            "shards": len(written),
            "bytes": sum(shard.bytes for shard in written),
            "failures": failures,
        }
    index = {
        "format": shards.FORMAT,
        "version": shards.VERSION,
        "dataset": dataset,
        "classes": classes,
        "resize": request.resize,
        "seed": request.seed,
        "splits": index_splits,
    }
    _write_index(request.destination, dump_json(index, ensure_ascii=False).encode())
    return report


def _write_index(destination: str | Path, data: bytes) -> None:
    location = storage.join(destination, shards.INDEX)
    if storage.is_url(destination):
        storage.write_bytes(str(location), data)
        return
    from uniformer_cli.files import write_or_fail

    write_or_fail(Path(location), lambda temporary: temporary.write_bytes(data), "shard index")
