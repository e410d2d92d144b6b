"""Dataset readers for `uniformer eval` and `uniformer train`: the official UniFormer lists and the public
releases laid out as they are downloaded (docs/DATASETS.md shows every layout with an example tree).

Every reader returns a `DatasetSplit` whose sample labels index the model's classes. Lists that carry
class names are matched by name; lists that carry indices are read in the order of their release (the
zoo label files of PROTOCOLS.md 6.2, or the class map the release ships: Sth-V2 `labels.json`, UCF101
`classInd.txt`) and mapped by name onto the model's classes, so a model whose classes come in another
order is still scored against the right ones. Names are compared after `class_key` (case, spaces,
underscores, brackets and punctuation ignored), which is exactly how the releases differ from one
another: Sth-V2 split files bracket the placeholders that `labels.json` does not, the K600 CSVs keep
apostrophes and parentheses that the official K600 category files drop, and class folders often use
underscores for spaces.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from uniformer_cli.data import storage
from uniformer_cli.data.shards import (
    INDEX,
    PackedSplit,
    ShardMember,
    open_packed,
    open_packed_video,
    parse_sample,
    read_member,
)
from uniformer_cli.data.storage import join
from uniformer_cli.data.video import VIDEO_EXTENSIONS, Video, Workload, open_video
from uniformer_cli.errors import DatasetError, VideoError
from uniformer_cli.jsonio import load_json
from uniformer_cli.zoo import AnyEntry, dataset_model, load_labels

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Lists and label files are read whole: the largest release list (Kinetics-700's train CSV) is ~50 MB.
MAX_LIST_BYTES = 512 * 2**20
# Folders where list files are commonly kept, relative to --root ({label_set} is filled in).
LIST_DIRS = ("", "annotations", "lists", "splits", "labels", "{label_set}", "data_list/{label_set}")
# Kinetics clips downloaded from the published CSVs: {youtube_id}_{start:06d}_{end:06d}.mp4 (PROTOCOLS.md 6.4).
_KINETICS_CLIP = re.compile(r"^(?P<youtube_id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")
# Numbers in lists and label files: ASCII digits only. `str.isdigit` also takes superscripts and other
# digits that `int` refuses, and `int` takes `1_000`, spaces and non-ASCII digits that no list means.
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]*)?")  # a clip's start or end in a Kinetics CSV


def parse_integer(text: str) -> int | None:
    """The integer that `text` spells in ASCII digits (a leading minus allowed), else None."""
    return int(text) if _INTEGER.fullmatch(text) else None


# Label sets whose classes name a direction ("from left to right"): a mirrored clip has another label.
SOMETHING_SETS = ("sthv1", "sthv2")


Location = Path | str  # a local path, or a storage URL (`storage.is_url`)


@dataclass(frozen=True)
class Sample:
    """One video: a file, or a frame folder whose frame count comes from the list, else the folder
    (PROTOCOLS.md 2.2). A packed sample (`member`) lives in a shard; its `path` is the one it was packed
    from, relative to the dataset root. A sample of a dataset at a storage URL has its `url`, and its path
    relative to that root."""

    path: Path
    label: int
    num_frames: int | None = None
    member: ShardMember | None = None
    url: str | None = None

    @classmethod
    def of(cls, location: Location, label: int) -> Sample:
        """The sample of a local path or of a video at a URL (named by it)."""
        if storage.is_url(location):
            return cls(Path(str(location).split("://", 1)[1]), label, url=str(location))
        return cls(Path(location), label)

    def frame_count(self, video: Video) -> int:
        """Frames to sample over: a frame folder's comes from the list when it gives one."""
        if self.num_frames is None:
            return video.num_frames
        if self.num_frames < 1:
            raise VideoError(f"{self.path}: the list gives it {self.num_frames} frames")
        return self.num_frames


@dataclass
class DatasetSplit:
    """What a reader found: samples in list order, class names in checkpoint order, where they came from."""

    dataset: str
    split: str
    samples: list[Sample]
    classes: list[str]
    source: Location
    layout: str
    root: Path  # what sample paths are relative to: `.` for packed data and data at a URL
    label_map: Location | None = None  # the release's own class map, when one was found and checked
    # Packed splits: how many samples each shard holds, in sample order (training visits them shard by
    # shard, `shards.epoch_order`); None for loose files.
    shard_sizes: tuple[int, ...] | None = None


def class_key(name: str) -> str:
    """Comparable form of a class name: lower case, apostrophes dropped (K600 lists drop them), every other
    run of non-alphanumerics one underscore (brackets, parentheses, spaces)."""
    return re.sub(r"[^0-9a-z]+", "_", re.sub(r"['’]", "", name.lower())).strip("_")


def class_mismatch(names: Sequence[str], reference: Sequence[str]) -> tuple[str | None, str | None]:
    """(first of `names` not in `reference`, first of `reference` not in `names`), compared by
    `class_key`; (None, None) when both name the same classes, in any order."""
    reference_keys, own_keys = {class_key(name) for name in reference}, {class_key(name) for name in names}
    extra = next((name for name in names if class_key(name) not in reference_keys), None)
    absent = next((name for name in reference if class_key(name) not in own_keys), None)
    return extra, absent


class _ClassIndex:
    """Maps class names, or label indices in the release's order, to the model's label indices; collects
    every unknown name so that the error names them all at once."""

    def __init__(self, classes: list[str], source: Location, order: list[str] | None = None) -> None:
        self.classes = classes
        self.source = source
        self.by_key: dict[str, int] = {}
        for index, name in enumerate(classes):
            key = class_key(name)
            if key in self.by_key:
                raise DatasetError(f"class names {classes[self.by_key[key]]!r} and {name!r} cannot be told apart")
            self.by_key[key] = index
        # The release's index order when it is not the model's (same classes, another order).
        same = order is None or [class_key(name) for name in order] == [class_key(name) for name in classes]
        self.order = None if same else order
        self.unknown: dict[str, None] = {}

    def by_name(self, name: str) -> int:
        index = self.by_key.get(class_key(name))
        if index is None:
            self.unknown[name] = None
            return -1
        return index

    def by_index(self, text: str, line: int) -> int:
        index = parse_integer(text)
        if index is None:
            raise DatasetError(f"{self.source}:{line}: label {text!r} is not an integer")
        count = len(self.order or self.classes)
        if not 0 <= index < count:
            raise DatasetError(f"{self.source}:{line}: label {index} is out of range for a model with {count} classes")
        return index if self.order is None else self.by_name(self.order[index])

    def check(self) -> None:
        if self.unknown:
            names = list(self.unknown)
            shown = ", ".join(repr(name) for name in names[:3]) + (" ..." if len(names) > 3 else "")
            raise DatasetError(
                f"{len(names)} class name(s) in {self.source} are not classes of the model "
                f"({len(self.classes)} classes): {shown}"
            )


def _walk(root: Path) -> Iterator[str]:
    """The files under a local folder, relative to it, folder by folder in name order."""
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        relative = Path(folder).relative_to(root)
        for name in sorted(files):
            yield (relative / name).as_posix()


class _Files:
    """The files under a dataset root, asked about by the readers: the local file system, or for a root
    at a storage URL one listing of everything below it (a request per thousand objects on S3), so that
    checking a list of 240,000 videos costs no request per video. A web server (`http(s)://`) lists no
    folders: there the lists' paths are taken as they are, and a missing video is found when decoded."""

    def __init__(self, root: Location) -> None:
        self.root = root
        self.listable = storage.listable(root)

    @cached_property
    def _listing(self) -> dict[str, int]:
        return storage.find_files(self.root)

    @cached_property
    def _folders(self) -> set[str]:
        folders = {""}
        for name in self._listing:
            parts = name.split("/")[:-1]
            folders.update("/".join(parts[:end]) for end in range(1, len(parts) + 1))
        return folders

    def relative(self, location: Location) -> str | None:
        """`location` relative to a URL root ("" for the root itself), None when it is not under it."""
        text, root = str(location).rstrip("/"), str(self.root).rstrip("/")
        if text == root:
            return ""
        return text[len(root) + 1 :] if text.startswith(root + "/") else None

    def _listed(self, location: Location) -> str | None:
        """`location` relative to the root when the root's listing answers for it."""
        return self.relative(location) if storage.is_url(location) and self.listable else None

    def is_file(self, location: Location) -> bool:
        relative = self._listed(location)
        return storage.is_file(location) if relative is None else relative in self._listing

    def is_dir(self, location: Location) -> bool:
        relative = self._listed(location)
        return storage.is_dir(location) if relative is None else relative in self._folders

    def exists(self, location: Location) -> bool:
        return self.is_file(location) or self.is_dir(location)

    def list_dir(self, location: Location) -> list[tuple[str, bool]]:
        """(name, is a folder) of each entry, sorted by name."""
        relative = self._listed(location)
        if relative is None:
            return storage.list_dir(location)
        prefix = f"{relative}/" if relative else ""
        entries: dict[str, bool] = {}
        for name in self._listing:
            if name.startswith(prefix):
                head, slash, _ = name[len(prefix) :].partition("/")
                entries[head] = entries.get(head, False) or bool(slash)
        return sorted(entries.items())

    @cached_property
    def _by_stem(self) -> dict[str, Location]:
        """Every video file under the root by file stem (and by YouTube id for Kinetics clips), so that
        lists naming clips can find them in per-class or flat folders alike."""
        found: dict[str, Location] = {}
        if not self.listable:
            return found
        names = self._listing if storage.is_url(self.root) else _walk(Path(self.root))
        for name in names:
            stem, suffix = os.path.splitext(name.rsplit("/", 1)[-1])
            if suffix.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, join(self.root, name))
                clip = _KINETICS_CLIP.match(stem)
                if clip:
                    found.setdefault(clip["youtube_id"], join(self.root, name))
        return found

    def find(self, *stems: str) -> Location | None:
        for stem in stems:
            if stem in self._by_stem:
                return self._by_stem[stem]
        return None


@dataclass(frozen=True)
class Layout:
    """One way a dataset is laid out on disk: its name (as reports show it) and a small example tree."""

    name: str
    tree: str


@dataclass(frozen=True)
class LabelMap:
    """A release's own class map: names in its index order (`indexed`: its lists give these indices)."""

    path: Location
    names: list[str]
    indexed: bool


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset: its label set, list file names per split, where its media live."""

    name: str
    label_set: str | None
    read: Callable[[ReadContext], list[Sample]]
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    media_dirs: tuple[str, ...] = ("",)
    folds: bool = False
    layouts: tuple[Layout, ...] = ()
    list_dirs: tuple[str, ...] = ()  # more folders for the lists, after LIST_DIRS
    label_maps: tuple[str, ...] = ()  # file names of the class map the release ships

    @property
    def default_model(self) -> AnyEntry | None:
        """The matching zoo checkpoint (`zoo.dataset_model`)."""
        return dataset_model(self.label_set) if self.label_set is not None else None

    @property
    def folders(self) -> list[str]:
        return list(
            dict.fromkeys(folder.format(label_set=self.label_set or "") for folder in LIST_DIRS + self.list_dirs)
        )

    def list_candidates(self, split: str, fold: int) -> list[str]:
        names = self.lists.get(split, ())
        return [Path(folder, name.format(fold=fold)).as_posix() for name in names for folder in self.folders]


@dataclass
class ReadContext:
    """Everything a reader needs: the list to read, the media root, the class map and the split."""

    spec: DatasetSpec
    root: Location
    list_path: Location
    classes: _ClassIndex
    split: str
    fold: int
    files: _Files  # the root's files
    layout: str = ""
    label_map: LabelMap | None = None

    @cached_property
    def media_root(self) -> Location:
        """The root, or the known sub-folder (e.g. `20bn-something-something-v1`) that holds the media."""
        for folder in self.spec.media_dirs:
            if folder and self.files.is_dir(join(self.root, folder)):
                return join(self.root, folder)
        return self.root

    def media_path(self, relative: str) -> Location:
        """A listed path under the media root or the root, else a video with the same stem anywhere under
        the root; a missing video keeps its listed path, so it is reported instead of dropped."""
        if not self.files.listable:
            return join(self.media_root, relative)
        for base in dict.fromkeys((self.media_root, self.root)):
            if self.files.exists(join(base, relative)):
                return join(base, relative)
        return self.files.find(storage.stem_of(relative)) or join(self.media_root, relative)

    def video_by_id(self, video_id: str, suffix: str) -> Location:
        """`<media root>/<id><suffix>` when it is there, else a video named `<id>.*` anywhere under the root."""
        direct = join(self.media_root, f"{video_id}{suffix}")
        if not self.files.listable or self.files.is_file(direct):
            return direct
        return self.files.find(video_id) or direct

    def sample(self, where: Location, label: int, num_frames: int | None = None) -> Sample:
        """The sample of a video (or frame folder) the list names; at a URL root, its path relative to it."""
        if not storage.is_url(where):
            return Sample(Path(where), label, num_frames)
        relative = self.files.relative(where)
        return Sample(Path(relative or str(where).split("://", 1)[1]), label, num_frames, url=str(where))


def _read_text(path: Location) -> str:
    return storage.read_text(path, MAX_LIST_BYTES)


def _lines(path: Location) -> Iterable[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and a UTF-8 BOM are accepted."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _csv_rows(path: Location) -> Iterator[tuple[int, list[str]]]:
    """Rows of a real CSV file (quoted fields, commas inside quotes, CRLF) with their line numbers."""
    reader = csv.reader(_read_text(path).splitlines())
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as error:
        raise DatasetError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None


def _fields(path: Location, line: int, text: str, separator: str | None, count: int) -> list[str]:
    parts = text.rsplit(separator, count - 1) if separator else text.split()
    if len(parts) != count:
        raise DatasetError(f"{path}:{line}: expected {count} fields, got {text!r}")
    return [part.strip() for part in parts]


def _read_json(path: Location) -> object:
    try:
        return load_json(_read_text(path))
    except ValueError as error:
        raise DatasetError(f"cannot read {path}: {error}") from None


# -- the releases' own class maps -------------------------------------------------------------------


def _label_map_json(path: Location) -> LabelMap:
    """Sth-V2 `labels.json`: {"Approaching something with your camera": "0", ...}."""
    table = _read_json(path)
    if not isinstance(table, dict) or not table:
        raise DatasetError(f"{path} is not a class map (a JSON object of class name -> index)")
    by_index: dict[int, str] = {}
    for name, value in table.items():
        index = value if type(value) is int else parse_integer(value) if isinstance(value, str) else None
        if index is None:
            raise DatasetError(f"{path}: class {name!r} has index {str(value)[:40]!r}, not an integer")
        if index in by_index:
            raise DatasetError(f"{path}: classes {by_index[index]!r} and {name!r} both have index {index}")
        by_index[index] = str(name)
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"{path}: the class indices are not 0..{len(by_index) - 1}")
    return LabelMap(path, [by_index[index] for index in range(len(by_index))], indexed=True)


def _label_map_class_ind(path: Location) -> LabelMap:
    """UCF101 `classInd.txt`: `1 ApplyEyeMakeup` ... `101 YoYo` (1-based, CRLF)."""
    by_index: dict[int, str] = {}
    for line, text in _lines(path):
        number, name = _fields(path, line, text, None, 2)
        index = parse_integer(number)
        if index is None or index < 1 or index in by_index:
            raise DatasetError(f"{path}:{line}: expected a new 1-based class number, got {number!r}")
        by_index[index] = name
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DatasetError(f"{path}: the class numbers are not 1..{len(by_index)}")
    return LabelMap(path, [by_index[number] for number in sorted(by_index)], indexed=True)


def _label_map_lines(path: Location) -> LabelMap:
    """Sth-V1 `something-something-v1-labels.csv`: one class a line. Its lists name the classes, and the
    official index order is these names sorted, so the file's own line order is never used as indices."""
    return LabelMap(path, [text for _, text in _lines(path)], indexed=False)


_LABEL_MAP_READERS: dict[str, Callable[[Location], LabelMap]] = {
    ".json": _label_map_json,
    ".txt": _label_map_class_ind,
    ".csv": _label_map_lines,
}


def find_label_map(
    spec: DatasetSpec, root: Location, list_path: Location, files: _Files | None = None
) -> LabelMap | None:
    """The release's class map beside the list (or its parent), else in the usual list folders."""
    files = files or _Files(root)
    places = [storage.parent(list_path) if files.is_file(list_path) else list_path, storage.parent(list_path)]
    places += [join(root, folder) for folder in spec.folders]
    for folder in dict.fromkeys(places):
        for name in spec.label_maps:
            if files.is_file(join(folder, name)):
                return _LABEL_MAP_READERS[Path(name).suffix.lower()](join(folder, name))
    return None


# -- readers -----------------------------------------------------------------------------------------

KINETICS_ANNOTATIONS = "DeepMind annotation CSV (label,youtube_id,time_start,time_end,split[,is_cc])"
OFFICIAL_PATH_LABEL = "official list (path,label)"
FRAME_LIST = "frame folders + official list (folder num_frames label)"
STH_V2_RELEASE = "release: webm videos + labels/*.json"
STH_V1_RELEASE = "release: JPEG frame folders + something-something-v1-*.csv (id;label)"
UCF_OFFICIAL = "official list (path label)"
UCF_RELEASE = "release: ucfTrainTestlist (class folder gives the label)"
HMDB_RELEASE = "release: videos + testTrainMulti_7030_splits"
CLASS_FOLDERS = "class folders"
CSV_LIST = "CSV (path,label)"


def _read_kinetics(ctx: ReadContext) -> list[Sample]:
    """The official `path,label` list, or a published annotation CSV (`label,youtube_id,time_start,...`)."""
    first = next(iter(_lines(ctx.list_path)), (0, ""))[1]
    if "youtube_id" not in first:
        ctx.layout = OFFICIAL_PATH_LABEL
        return _read_path_label(ctx, separator=",")
    ctx.layout = KINETICS_ANNOTATIONS
    rows = _csv_rows(ctx.list_path)
    _, header = next(rows)
    columns = {name: position for position, name in enumerate(header)}
    if "label" not in columns:
        raise DatasetError(f"{ctx.list_path} has no labels (the Kinetics test CSV is unlabelled)")
    missing = [name for name in ("youtube_id", "time_start", "time_end") if name not in columns]
    if missing:
        raise DatasetError(f"{ctx.list_path}: the header has no {', '.join(missing)} column")
    samples = []
    for line, row in rows:
        try:
            label, youtube_id = row[columns["label"]], row[columns["youtube_id"]]
            start, end = _clip_second(row[columns["time_start"]]), _clip_second(row[columns["time_end"]])
        except (IndexError, ValueError):
            raise DatasetError(f"{ctx.list_path}:{line}: expected {','.join(header)}, got {','.join(row)!r}") from None
        if not label:
            raise DatasetError(f"{ctx.list_path}:{line} has no labels (the Kinetics test CSV is unlabelled)")
        clip = f"{youtube_id}_{start:06d}_{end:06d}"
        path = ctx.files.find(clip, youtube_id) or join(ctx.root, f"{clip}.mp4")
        samples.append(ctx.sample(path, ctx.classes.by_name(label)))
    return samples


def _clip_second(text: str) -> int:
    """A Kinetics CSV's `time_start` / `time_end`: whole seconds as they name the clip file (`15` or `15.0`;
    `ValueError` for anything else: no sign, exponent, `inf` or `nan`)."""
    if not _SECONDS.fullmatch(text):
        raise ValueError(text)
    return int(float(text))


def _label(ctx: ReadContext, text: str, line: int) -> int:
    """A list's label: an index in the release's order, or a class name."""
    return ctx.classes.by_index(text, line) if parse_integer(text) is not None else ctx.classes.by_name(text)


def _read_path_label(ctx: ReadContext, separator: str | None) -> list[Sample]:
    """`path<sep>label` lines (the official lists); the label is an index or a class name."""
    samples = []
    for line, text in _lines(ctx.list_path):
        relative, label = _fields(ctx.list_path, line, text, separator, 2)
        if line == 1 and (relative.lower(), label.lower()) == ("path", "label"):
            continue
        samples.append(ctx.sample(ctx.media_path(relative), _label(ctx, label, line)))
    return samples


def _read_frame_list(ctx: ReadContext) -> list[Sample]:
    """`folder num_frames label` lines over frame folders (Sth V1/V2, HMDB51)."""
    ctx.layout = FRAME_LIST
    samples = []
    for line, text in _lines(ctx.list_path):
        name, frames, label = _fields(ctx.list_path, line, text, None, 3)
        count = parse_integer(frames)
        if count is None or count < 0:
            raise DatasetError(f"{ctx.list_path}:{line}: frame count {frames!r} is not an integer")
        samples.append(ctx.sample(join(ctx.media_root, name), ctx.classes.by_index(label, line), count))
    return samples


def _read_mit(ctx: ReadContext) -> list[Sample]:
    """Moments in Time as UniFormerV2's data lists give it (OpenGVLab/UniFormerV2, `slowfast/datasets/mit.py`
    with the `,` separator of its `exp/mit/*/run.sh`): `path,label` lines."""
    ctx.layout = OFFICIAL_PATH_LABEL
    return _read_path_label(ctx, separator=",")


def _read_something(ctx: ReadContext) -> list[Sample]:
    """Sth frame folders + lists, the V2 `.webm` release with its JSON split files, or the V1 release with
    its `id;label` CSV split files."""
    suffix = storage.suffix_of(ctx.list_path)
    if suffix == ".json":
        return _read_sthv2_json(ctx)
    if suffix == ".csv":
        return _read_sthv1_csv(ctx)
    return _read_frame_list(ctx)


def _test_answers(ctx: ReadContext) -> dict[str, str]:
    """Sth-V2 `test-answers.csv` beside `test.json` (`id;template`, templates as in labels.json)."""
    path = join(storage.parent(ctx.list_path), "test-answers.csv")
    if not storage.is_file(path):
        raise DatasetError(
            f"{ctx.list_path} has no labels (the Something-Something test split is unlabelled; its answers "
            f"are read from test-answers.csv beside it)"
        )
    answers = {}
    for line, text in _lines(path):
        video_id, _, template = text.partition(";")
        if not template:
            raise DatasetError(f"{path}:{line}: expected id;label, got {text!r}")
        answers[video_id.strip()] = template.strip()
    return answers


def _read_sthv2_json(ctx: ReadContext) -> list[Sample]:
    """`[{"id": "74225", "label": ..., "template": "Spinning [something] that ...", "placeholders": [...]}]`;
    videos `<id>.webm` in `20bn-something-something-v2/`."""
    ctx.layout = STH_V2_RELEASE
    items = _read_json(ctx.list_path)
    if not isinstance(items, list) or not all(isinstance(item, dict) and "id" in item for item in items):
        raise DatasetError(f"{ctx.list_path} is not a Something-Something split file (a list of objects with 'id')")
    answers = _test_answers(ctx) if items and "template" not in items[0] else {}
    samples = []
    for item in items:
        video_id = str(item["id"])
        template = item.get("template") or answers.get(video_id)
        if not isinstance(template, str):
            raise DatasetError(f"{ctx.list_path}: video {video_id} has no template (class)")
        samples.append(ctx.sample(ctx.video_by_id(video_id, ".webm"), ctx.classes.by_name(template)))
    return samples


def _read_sthv1_csv(ctx: ReadContext) -> list[Sample]:
    """`something-something-v1-{train,validation}.csv`: `id;label` lines; frames `<id>/00001.jpg` in
    `20bn-something-something-v1/`, all of a folder's frames sampled."""
    ctx.layout = STH_V1_RELEASE
    samples = []
    for line, text in _lines(ctx.list_path):
        video_id, _, label = (part.strip() for part in text.partition(";"))
        if not label:
            raise DatasetError(f"{ctx.list_path}:{line}: no label (the Something-Something test split is unlabelled)")
        samples.append(ctx.sample(join(ctx.media_root, video_id), ctx.classes.by_name(label)))
    return samples


def _read_ucf101(ctx: ReadContext) -> list[Sample]:
    """The official `Class/v_Class_gNN_cNN.avi label` lists, or the original `trainlist0N.txt` (with
    1-based `classInd.txt` numbers) / `testlist0N.txt` (none): there the class folder gives the label,
    and a listed number must name the same class in `classInd.txt`."""
    if storage.suffix_of(ctx.list_path) == ".csv":
        ctx.layout = UCF_OFFICIAL
        return _read_path_label(ctx, separator=None)
    ctx.layout = UCF_RELEASE
    numbered = ctx.label_map.names if ctx.label_map is not None else None
    samples = []
    for line, text in _lines(ctx.list_path):
        relative, *number = text.split()
        folder = relative.replace("\\", "/").split("/")[0]
        if numbered is not None and number:
            index = parse_integer(number[0])
            if index is None or not 1 <= index <= len(numbered):
                raise DatasetError(f"{ctx.list_path}:{line}: class number {number[0]!r} is not in classInd.txt")
            if class_key(numbered[index - 1]) != class_key(folder):
                raise DatasetError(
                    f"{ctx.list_path}:{line}: class {index} is {numbered[index - 1]!r} in "
                    f"classInd.txt, but the video is in folder {folder!r}"
                )
        samples.append(ctx.sample(ctx.media_path(relative), ctx.classes.by_name(folder)))
    return samples


def _read_hmdb51(ctx: ReadContext) -> list[Sample]:
    """The official frame-folder lists, or the original `testTrainMulti_7030_splits` folder
    (`<class>_test_split<fold>.txt`, lines `video.avi 1|2`: 1 = train, 2 = test)."""
    if not ctx.files.is_dir(ctx.list_path):
        return _read_frame_list(ctx)
    ctx.layout = HMDB_RELEASE
    wanted = "1" if ctx.split == "train" else "2"
    ending = f"_test_split{ctx.fold}.txt"
    names = [name for name, folder in ctx.files.list_dir(ctx.list_path) if not folder and name.endswith(ending)]
    if not names:
        raise DatasetError(f"no *{ending} files in {ctx.list_path}")
    samples = []
    for file_name in names:
        split_file = join(ctx.list_path, file_name)
        class_name = file_name.rsplit("_test_split", 1)[0]
        label = ctx.classes.by_name(class_name)
        for line, text in _lines(split_file):
            name, which = _fields(split_file, line, text, None, 2)
            if which == wanted:
                samples.append(ctx.sample(ctx.media_path(f"{class_name}/{name}"), label))
    return samples


def _read_folder(ctx: ReadContext) -> list[Sample]:
    """`root/<split>/<class>/<video file or frame folder>`; classes matched by name."""
    ctx.layout = CLASS_FOLDERS
    samples = []
    for class_name in (name for name, folder in ctx.files.list_dir(ctx.list_path) if folder):
        label = ctx.classes.by_name(class_name)
        class_dir = join(ctx.list_path, class_name)
        for name, folder in ctx.files.list_dir(class_dir):
            if folder or storage.suffix_of(name) in VIDEO_EXTENSIONS:
                samples.append(ctx.sample(join(class_dir, name), label))
    return samples


def _csv_columns(path: Location) -> tuple[list[tuple[int, str, str]], bool]:
    """(line, path, label) rows of a `path,label` CSV and whether it had a header. A header names the
    columns (`path` and `label`, others ignored, e.g. the index column pandas writes); without one,
    every row is exactly `path,label`."""
    rows = list(_csv_rows(path))
    if not rows:
        return [], False
    header = [cell.lower() for cell in rows[0][1]]
    if "path" in header and "label" in header:
        where = (header.index("path"), header.index("label"))
        body, has_header = rows[1:], True
    else:
        where, body, has_header = (0, 1), rows, False
    result = []
    for line, row in body:
        if (not has_header and len(row) != 2) or len(row) <= max(where):
            raise DatasetError(f"{path}:{line}: expected path,label, got {','.join(row)!r}")
        result.append((line, row[where[0]], row[where[1]]))
    return result, has_header


def _read_csv(ctx: ReadContext) -> list[Sample]:
    ctx.layout = CSV_LIST
    rows, _ = _csv_columns(ctx.list_path)
    return [ctx.sample(ctx.media_path(relative), _label(ctx, label, line)) for line, relative, label in rows]


# The official data_list ships val.csv and test.csv as the same file (PROTOCOLS.md 6.1); the DeepMind archive names its
# validation CSV validate.csv (kinetics400/, kinetics600/), the CVDF mirror val.csv (annotations/).
KINETICS_LISTS = {"val": ("val.csv", "validate.csv", "test.csv"), "train": ("train.csv",), "test": ("test.csv",)}
KINETICS_LAYOUTS = (
    Layout(
        OFFICIAL_PATH_LABEL,
        "ROOT/val.csv                     lines <youtube_id>.mp4,<label index> (CRLF)\n"
        "ROOT/<youtube_id>.mp4            (or any folder below ROOT, also with the time range in the name)",
    ),
    Layout(
        KINETICS_ANNOTATIONS,
        "ROOT/kinetics400/validate.csv    label,youtube_id,time_start,time_end,split,is_cc (quoted labels)\n"
        "ROOT/val/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4   (or flat, in any folder below ROOT)",
    ),
)
SOMETHING_FRAME_LAYOUT = Layout(
    FRAME_LIST,
    "ROOT/somesomev{1,2}_rgb_validation_split.txt   lines <id> <num_frames> <label index>\n"
    "ROOT/<id>/00001.jpg (V1) or ROOT/<id>/img_00001.jpg (V2) ...",
)
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "k400", "k400", _read_kinetics, KINETICS_LISTS, layouts=KINETICS_LAYOUTS, list_dirs=("kinetics400",)
        ),
        DatasetSpec(
            "k600", "k600", _read_kinetics, KINETICS_LISTS, layouts=KINETICS_LAYOUTS, list_dirs=("kinetics600",)
        ),
        DatasetSpec(
            "k700", "k700", _read_kinetics, KINETICS_LISTS, layouts=KINETICS_LAYOUTS, list_dirs=("kinetics700",)
        ),
        DatasetSpec(
            "mit",
            "mit",
            _read_mit,
            {"val": ("val.csv",), "train": ("train.csv",)},
            layouts=(
                Layout(
                    OFFICIAL_PATH_LABEL,
                    "ROOT/val.csv                     lines <path below ROOT>,<label index>\n"
                    "ROOT/validation/<class>/<video>.mp4   (the release's tree, or any folder below ROOT)",
                ),
            ),
            list_dirs=("mit",),
        ),
        DatasetSpec(
            "sthv1",
            "sthv1",
            _read_something,
            {
                "val": ("somesomev1_rgb_validation_split.txt", "something-something-v1-validation.csv"),
                "train": ("somesomev1_rgb_train_split.txt", "something-something-v1-train.csv"),
                "test": ("something-something-v1-test.csv",),
            },
            media_dirs=("20bn-something-something-v1",),
            layouts=(
                SOMETHING_FRAME_LAYOUT,
                Layout(
                    STH_V1_RELEASE,
                    "ROOT/something-something-v1-labels.csv       one class a line\n"
                    "ROOT/something-something-v1-validation.csv   lines <id>;<class>\n"
                    "ROOT/20bn-something-something-v1/<id>/00001.jpg ...",
                ),
            ),
            label_maps=("something-something-v1-labels.csv",),
        ),
        DatasetSpec(
            "sthv2",
            "sthv2",
            _read_something,
            {
                "val": (
                    "somesomev2_rgb_validation_split.txt",
                    "validation.json",
                    "something-something-v2-validation.json",
                ),
                "train": ("somesomev2_rgb_train_split.txt", "train.json", "something-something-v2-train.json"),
                "test": ("test.json", "something-something-v2-test.json"),
            },
            media_dirs=("20bn-something-something-v2",),
            layouts=(
                SOMETHING_FRAME_LAYOUT,
                Layout(
                    STH_V2_RELEASE,
                    'ROOT/labels/labels.json           {"<class>": "<index>", ...}\n'
                    'ROOT/labels/validation.json       [{"id": ..., "template": ...}, ...] (also train.json;\n'
                    "                                  test.json with test-answers.csv beside it)\n"
                    "ROOT/20bn-something-something-v2/<id>.webm\n"
                    "(older names: something-something-v2-{labels,train,validation,test}.json)",
                ),
            ),
            label_maps=("labels.json", "something-something-v2-labels.json"),
        ),
        DatasetSpec(
            "ucf101",
            "ucf101",
            _read_ucf101,
            {
                "val": ("split{fold}/val.csv", "testlist0{fold}.txt"),
                "test": ("split{fold}/test.csv", "testlist0{fold}.txt"),
                "train": ("split{fold}/train.csv", "trainlist0{fold}.txt"),
            },
            media_dirs=("UCF-101", "UCF101"),
            folds=True,
            layouts=(
                Layout(
                    UCF_OFFICIAL,
                    "ROOT/split1/val.csv      lines <Class>/v_<Class>_gNN_cNN.avi <label index>\n"
                    "ROOT/UCF-101/<Class>/v_<Class>_gNN_cNN.avi",
                ),
                Layout(
                    UCF_RELEASE,
                    "ROOT/ucfTrainTestlist/classInd.txt     lines <1-based number> <Class> (CRLF)\n"
                    "ROOT/ucfTrainTestlist/testlist01.txt   lines <Class>/v_<Class>_gNN_cNN.avi\n"
                    "ROOT/ucfTrainTestlist/trainlist01.txt  lines <Class>/v_<Class>_gNN_cNN.avi <number>\n"
                    "ROOT/UCF-101/<Class>/v_<Class>_gNN_cNN.avi",
                ),
            ),
            list_dirs=("ucfTrainTestlist",),
            label_maps=("classInd.txt",),
        ),
        DatasetSpec(
            "hmdb51",
            "hmdb51",
            _read_hmdb51,
            {
                "val": ("split{fold}/val.txt", "testTrainMulti_7030_splits"),
                "test": ("split{fold}/val.txt", "testTrainMulti_7030_splits"),
                "train": ("split{fold}/train.txt", "testTrainMulti_7030_splits"),
            },
            folds=True,
            layouts=(
                Layout(
                    FRAME_LIST,
                    "ROOT/split1/val.txt      lines <folder> <num_frames> <label index>\n"
                    "ROOT/<folder>/img_00001.jpg ...",
                ),
                Layout(
                    HMDB_RELEASE,
                    "ROOT/testTrainMulti_7030_splits/<class>_test_split1.txt   lines <video>.avi 0|1|2\n"
                    "ROOT/<class>/<video>.avi",
                ),
            ),
        ),
        DatasetSpec(
            "folder",
            None,
            _read_folder,
            layouts=(Layout(CLASS_FOLDERS, "ROOT/<split>/<class>/<video file or frame folder>"),),
        ),
        DatasetSpec(
            "csv",
            None,
            _read_csv,
            layouts=(
                Layout(
                    CSV_LIST,
                    "--list FILE.csv          rows path,label (optional header naming path and label;\n"
                    "                         quoted fields); paths relative to --root, else the CSV's folder",
                ),
            ),
        ),
    )
}


def parse_split(spec: DatasetSpec, split: str) -> tuple[str, int]:
    """`val`, `train` or `test`; UCF101 and HMDB51 take a fold number too (`val2`, default fold 1)."""
    match = re.fullmatch(rf"({'|'.join(SPLITS)})([1-3])?", split.strip().lower())
    if not match:
        raise DatasetError(f"unknown split {split!r} (use train, val or test{'; folds: val2, val3' * spec.folds})")
    if match[2] and not spec.folds:
        raise DatasetError(f"{spec.name} has no numbered folds: use --split {match[1]}")
    return match[1], int(match[2] or 1)


def get_dataset(name: str) -> DatasetSpec:
    spec = DATASETS.get(name.strip().lower())
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return spec


def find_list(spec: DatasetSpec, root: Location, split: str, fold: int, files: _Files | None = None) -> Location:
    """The list file (or folder) of a split under the root; the error names every place looked at."""
    files = files or _Files(root)
    if spec.name == "folder":
        path = join(root, split)
        if not files.is_dir(path):
            raise DatasetError(f"no {split}/ folder in {root} (expected {root}/{split}/<class>/<video>)")
        return path
    candidates = spec.list_candidates(split, fold)
    for candidate in candidates:
        if files.exists(join(root, candidate)):
            return join(root, candidate)
    if not candidates:
        raise DatasetError(f"{spec.name} needs --list FILE")
    shown = ", ".join(candidates[:4]) + (f" (+{len(candidates) - 4} more places)" if len(candidates) > 4 else "")
    raise DatasetError(f"no {spec.name} {split} list under {root} (looked for {shown}); pass --list FILE")


def check_label_set(spec: DatasetSpec, classes: list[str]) -> None:
    """A model whose classes are not the dataset's (in any order) would be scored against the wrong names."""
    if spec.label_set is None:
        return
    extra, absent = class_mismatch(classes, load_labels(spec.label_set))
    if extra is not None or absent is not None:
        detail = f"its class {extra!r} is not one of them" if extra is not None else f"it has no class {absent!r}"
        default = spec.default_model.name if spec.default_model else "none"
        raise DatasetError(
            f"the model's classes are not the {spec.name} classes ({detail}): use a {spec.name} model, e.g. {default}"
        )


def check_label_map(label_map: LabelMap, classes: list[str]) -> None:
    """The release's class map must name the model's classes (any order): one line naming the first
    class that differs, never a silent score against another class list."""
    extra, absent = class_mismatch(label_map.names, classes)
    if extra is not None:
        raise DatasetError(f"{label_map.path} does not match the model: its class {extra!r} is not a model class")
    if absent is not None:
        raise DatasetError(f"{label_map.path} does not match the model: it has no class {absent!r}")


@dataclass(frozen=True)
class SplitLocation:
    """Where a split's list (or class-folder tree) and media are, found before anything is read."""

    spec: DatasetSpec
    root: Location
    list_path: Location
    split: str  # as asked, e.g. "val2"
    split_name: str  # train, val or test
    fold: int
    files: _Files  # the root's files (listed once at a URL)


@dataclass(frozen=True)
class PackedLocation:
    """A split of a packed dataset, its index read and checked before anything else is."""

    spec: DatasetSpec  # the reader it was packed from (its label set and default model)
    packed: PackedSplit


def locate_split(
    name: str | None,
    root: Location | None,
    *,
    split: str = "val",
    list_file: Location | None = None,
    data: Location | None = None,
) -> SplitLocation | PackedLocation:
    """Check the dataset name, split, root and list; `root` defaults to the list's folder. The root and
    the list may be storage URLs (`s3://bucket/k400`): the root is then listed once, and its videos read
    one at a time. `data` names a packed dataset instead (`uniformer data pack`: its folder, index or
    shards, local or a URL); `name` then defaults to the dataset it was packed from."""
    if data is not None:
        return locate_packed(name, data, split, root=root, list_file=list_file)
    if name is None:
        raise DatasetError("name the dataset (--dataset) and its folder (--root), or a packed dataset (--data)")
    spec = get_dataset(name)
    split_name, fold = parse_split(spec, split)
    list_path = storage.local_or_url(list_file) if list_file is not None else None
    if list_path is not None and not storage.exists(list_path):
        raise DatasetError(f"list file {list_path} does not exist")
    if root is None:
        if list_path is None:
            raise DatasetError("--root is required (the folder that holds the dataset)")
        root = storage.parent(list_path)
    root = storage.local_or_url(root)
    files = _Files(root)
    if files.listable and not files.is_dir(root):
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    list_path = list_path or find_list(spec, root, split_name, fold, files)
    return SplitLocation(spec, root, list_path, split, split_name, fold, files)


def locate_packed(
    name: str | None,
    data: str | Path,
    split: str,
    *,
    root: Location | None = None,
    list_file: Location | None = None,
) -> PackedLocation:
    """A split of the packed dataset `data`: its folder or index (`split` names the split), or some of
    its shards (`DST/val-{000000..000009}.tar`, which must be shards of `split`)."""
    if root is not None or list_file is not None:
        raise DatasetError("--data names a packed dataset, whose index lists its videos: drop --root and --list")
    packed = open_packed(data, split)
    if name is not None:
        spec = get_dataset(name)
        if packed.dataset is not None and packed.dataset != spec.name:
            raise DatasetError(f"{data} holds a packed {packed.dataset} dataset, not {spec.name}")
    else:
        spec = DATASETS.get(packed.dataset or "", DATASETS["folder"])
    return PackedLocation(spec, packed)


def read_split(
    location: SplitLocation | PackedLocation, *, classes: list[str] | None = None, num_classes: int | None = None
) -> DatasetSplit:
    """Read a located split. `classes` are the model's class names (its output order); a model without
    names gives its `num_classes`, and the dataset's label set (or, for `folder`/`csv`, the sorted class
    names found in the data) names them. A class map shipped with the release is checked against them
    and gives the order of the release's label indices. A packed split's classes are matched by name."""
    if isinstance(location, PackedLocation):
        if classes is None and num_classes is not None and len(location.packed.classes) > num_classes:
            raise DatasetError(
                f"the data has {len(location.packed.classes)} classes but the model predicts only {num_classes}"
            )
        return packed_split(location.packed, classes)
    spec, list_path = location.spec, location.list_path
    if classes is not None:
        check_label_set(spec, classes)
    classes = _resolve_classes(spec, list_path, classes, num_classes, location.files)
    label_map = find_label_map(spec, location.root, list_path, location.files) if spec.label_maps else None
    if label_map is not None:
        check_label_map(label_map, classes)
    order = label_map.names if label_map is not None and label_map.indexed else None
    if order is None and spec.label_set is not None:
        order = load_labels(spec.label_set)
    index = _ClassIndex(classes, list_path, order)
    ctx = ReadContext(
        spec, location.root, list_path, index, location.split_name, location.fold, location.files, label_map=label_map
    )
    samples = spec.read(ctx)
    ctx.classes.check()
    if not samples:
        raise DatasetError(f"{list_path} lists no videos")
    if index.order is not None:
        logger.info("%s: label indices follow the release's class order, mapped by name to the model's", list_path)
    map_path = label_map.path if label_map is not None else None
    root = Path(".") if storage.is_url(location.root) else Path(location.root)  # URL samples: paths relative to it
    return DatasetSplit(spec.name, location.split, samples, classes, list_path, ctx.layout, root, map_path)


def read_dataset(
    name: str,
    root: Location | None,
    *,
    split: str = "val",
    list_file: Location | None = None,
    classes: list[str] | None = None,
    num_classes: int | None = None,
) -> DatasetSplit:
    """`locate_split` then `read_split`, in one call."""
    location = locate_split(name, root, split=split, list_file=list_file)
    return read_split(location, classes=classes, num_classes=num_classes)


def _resolve_classes(
    spec: DatasetSpec, list_path: Location, classes: list[str] | None, num_classes: int | None, files: _Files
) -> list[str]:
    """The model's class names, else the dataset's, else the names the data itself provides."""
    if classes is not None:
        return classes
    if spec.label_set is not None:
        names = load_labels(spec.label_set)
    elif spec.name == "folder":
        names = [name for name, folder in files.list_dir(list_path) if folder]
    else:
        labels = {label for _, _, label in _csv_columns(list_path)[0]}
        numeric = all(parse_integer(label) is not None for label in labels)
        if numeric and num_classes is None:
            raise DatasetError(f"{list_path} has label indices but the model's class count is unknown")
        names = [str(index) for index in range(num_classes or 0)] if numeric else sorted(labels)
    if num_classes is not None and len(names) > num_classes:
        raise DatasetError(f"the data has {len(names)} classes but the model predicts only {num_classes}")
    return names


PACKED_LAYOUT = "packed shards (uniformer data pack)"


def packed_split(packed: PackedSplit, classes: list[str] | None = None) -> DatasetSplit:
    """A packed split as the readers' `DatasetSplit`: samples in packed order, labels indexing `classes`
    (the model's, matched by name like every reader's) or, without them, the packed class list."""
    where = join(packed.root, INDEX)
    names = classes if classes is not None else packed.classes
    if classes is not None and packed.dataset in DATASETS:
        check_label_set(DATASETS[packed.dataset], classes)
    index = _ClassIndex(names, Path(str(where)))
    mapping = [index.by_name(name) for name in packed.classes]
    index.check()
    samples = []
    for shard in packed.shards:
        members = zip(shard.offsets, shard.sizes, shard.labels, shard.videos, shard.num_frames, strict=True)
        for position, (offset, size, label, video, count) in enumerate(members):
            member = ShardMember(packed.location(shard), offset, size, f"{shard.first + position:08d}")
            samples.append(Sample(Path(video), mapping[label], count, member))
    if not samples:
        raise DatasetError(f"{where}: the {packed.split} split holds no samples")
    sizes = tuple(len(shard) for shard in packed.shards)
    dataset = packed.dataset or "folder"  # an index that does not say: class names, no label set
    return DatasetSplit(dataset, packed.split, samples, names, str(where), PACKED_LAYOUT, Path("."), None, sizes)


def read_packed(location: str | Path, split: str | None = None, classes: list[str] | None = None) -> DatasetSplit:
    """`open_packed` then `packed_split`, in one call."""
    return packed_split(open_packed(location, split), classes)


def open_sample(
    sample: Sample, decoder: str = "auto", workload: Workload = "views", data: bytes | None = None
) -> Video:
    """The video of a sample: its file or frame folder, or its shard member read into memory (`data`:
    the member's bytes when `fetch_members` already read them)."""
    if sample.url is not None:
        return open_video(sample.url, decoder, workload)
    if sample.member is None:
        return open_video(sample.path, decoder, workload)
    member = read_member(sample.member) if data is None else parse_sample(data, sample.member.name)
    return open_packed_video(member, str(sample.path), decoder, workload)


def fetch_members(samples: Sequence[Sample]) -> list[bytes | None]:
    """The bytes of the packed samples among `samples` (None for the others), each shard's ranges read
    together: one round trip per shard from an object store, for a batch of neighbouring samples. A
    shard that cannot be read gives None for its samples, which `open_sample` then reads one by one, so
    each sample gets its own error."""
    out: list[bytes | None] = [None] * len(samples)
    by_shard: dict[str, list[int]] = {}
    for position, sample in enumerate(samples):
        if sample.member is not None:
            by_shard.setdefault(str(sample.member.shard), []).append(position)
    for positions in by_shard.values():
        members = [samples[position].member for position in positions]
        ranges = [(member.offset, member.size) for member in members if member is not None]
        try:
            parts = storage.read_ranges(members[0].shard, ranges)  # type: ignore[union-attr]
        except DatasetError:
            continue
        for position, data in zip(positions, parts, strict=True):
            out[position] = data
    return out


def mirroring_changes_labels(split: DatasetSplit) -> bool:
    """Whether a horizontal flip turns a clip of one class into another: Something-Something ("Pushing
    something from left to right"), read with its reader or as any list or tree of its class names."""
    spec = DATASETS.get(split.dataset)
    if spec is not None and spec.label_set in SOMETHING_SETS:
        return True
    keys = {class_key(name) for name in split.classes}
    return bool(keys) and any(
        keys <= {class_key(name) for name in load_labels(label_set)} for label_set in SOMETHING_SETS
    )


def _unavailable_reason(sample: Sample) -> str | None:
    """Why a listed video cannot be read, from the file system alone (no decoding): None when it can.
    Packed samples are known to the index: their shards are read, not checked. Videos at URLs are
    checked against one listing (`_remote_reasons`)."""
    if sample.member is not None or sample.url is not None:
        return None
    path = sample.path
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                return None if any(entry.is_file() for entry in entries) else "empty frame folder"
        if path.stat().st_size == 0:
            return "empty file"
        with path.open("rb") as file:
            file.read(1)
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    return None


def _remote_reasons(samples: Sequence[Sample]) -> dict[str, str]:
    """Why videos at URLs cannot be read (missing, empty), by URL: one listing of the folder that holds
    them all, not a request per video."""
    urls = [sample.url for sample in samples if sample.url is not None]
    if not urls:
        return {}
    common: list[str] = []
    for parts in zip(*(url.split("/")[:-1] for url in urls), strict=False):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    folder = "/".join(common)
    # `s3:`, ``, `bucket`: videos in several buckets, or on a web server, are checked when decoded.
    if len(common) < 3 or not storage.listable(folder):
        return {}
    listing = storage.find_files(folder)
    reasons = {}
    for url in urls:
        size = listing.get(url[len(folder) + 1 :])
        if size is None:
            reasons[url] = "missing"
        elif size == 0:
            reasons[url] = "empty file"
    return reasons


def unavailable_videos(samples: Sequence[Sample], workers: int = 8) -> list[tuple[Path, str]]:
    """(path, reason) of every listed video that is missing or cannot be opened, in list order."""
    with ThreadPoolExecutor(workers) as pool:  # file systems on the network answer in parallel
        reasons = list(pool.map(_unavailable_reason, samples))
    remote = _remote_reasons(samples)
    reasons = [remote.get(sample.url or "", reason) for sample, reason in zip(samples, reasons, strict=True)]
    return [(sample.path, reason) for sample, reason in zip(samples, reasons, strict=True) if reason is not None]


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetSplit",
    "LabelMap",
    "Layout",
    "PackedLocation",
    "Sample",
    "SplitLocation",
    "class_key",
    "fetch_members",
    "get_dataset",
    "locate_split",
    "mirroring_changes_labels",
    "open_sample",
    "packed_split",
    "read_dataset",
    "read_packed",
    "read_split",
    "unavailable_videos",
]
