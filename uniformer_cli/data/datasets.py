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
from uniformer_cli.files import read_text_file
from uniformer_cli.jsonio import load_json
from uniformer_cli.zoo import ZooEntry, best_entry, load_labels

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


@dataclass(frozen=True)
class Sample:
    """One video: a file, or a frame folder whose frame count comes from the list, else the folder
    (PROTOCOLS.md 2.2). A packed sample (`member`) lives in a shard; its `path` is the one it was packed
    from, relative to the dataset root."""

    path: Path
    label: int
    num_frames: int | None = None
    member: ShardMember | None = None

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
    source: Path | str
    layout: str
    root: Path
    label_map: Path | None = None  # the release's own class map, when one was found and checked
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

    def __init__(self, classes: list[str], source: Path, order: list[str] | None = None) -> None:
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


class _VideoIndex:
    """Every video file under a root, found once by file stem (and by YouTube id for Kinetics clips), so
    that lists naming clips can find them in per-class or flat folders alike."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @cached_property
    def _by_stem(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder, subfolders, files in os.walk(self.root):
            subfolders.sort()
            for name in sorted(files):
                stem, suffix = os.path.splitext(name)
                if suffix.lower() in VIDEO_EXTENSIONS:
                    found.setdefault(stem, Path(folder, name))
                    clip = _KINETICS_CLIP.match(stem)
                    if clip:
                        found.setdefault(clip["youtube_id"], Path(folder, name))
        return found

    def find(self, *stems: str) -> Path | None:
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

    path: Path
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
    def default_model(self) -> ZooEntry | None:
        """The matching zoo checkpoint: downloadable first, then the best paper top-1."""
        return best_entry(self.label_set) if self.label_set is not None else None

    @property
    def folders(self) -> list[str]:
        return list(
            dict.fromkeys(folder.format(label_set=self.label_set or "") for folder in LIST_DIRS + self.list_dirs)
        )

    def list_candidates(self, split: str, fold: int) -> list[str]:
        names = self.lists.get(split, ())
        return [str(Path(folder, name.format(fold=fold))) for name in names for folder in self.folders]


@dataclass
class ReadContext:
    """Everything a reader needs: the list to read, the media root, the class map and the split."""

    spec: DatasetSpec
    root: Path
    list_path: Path
    classes: _ClassIndex
    split: str
    fold: int
    layout: str = ""
    label_map: LabelMap | None = None

    @cached_property
    def videos(self) -> _VideoIndex:
        return _VideoIndex(self.root)

    @cached_property
    def media_root(self) -> Path:
        """The root, or the known sub-folder (e.g. `20bn-something-something-v1`) that holds the media."""
        for folder in self.spec.media_dirs:
            if folder and (self.root / folder).is_dir():
                return self.root / folder
        return self.root

    def media_path(self, relative: str) -> Path:
        """A listed path under the media root or the root, else a video with the same stem anywhere under
        the root; a missing video keeps its listed path, so it is reported instead of dropped."""
        for base in dict.fromkeys((self.media_root, self.root)):
            if (base / relative).exists():
                return base / relative
        return self.videos.find(Path(relative).stem) or self.media_root / relative

    def video_by_id(self, video_id: str, suffix: str) -> Path:
        """`<media root>/<id><suffix>` when it is there, else a video named `<id>.*` anywhere under the root."""
        direct = self.media_root / f"{video_id}{suffix}"
        if direct.exists():
            return direct
        return self.videos.find(video_id) or direct


def _read_text(path: Path) -> str:
    try:
        return read_text_file(path, max_bytes=MAX_LIST_BYTES)
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise DatasetError(f"cannot read {path}: {error}") from None


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and a UTF-8 BOM are accepted."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Rows of a real CSV file (quoted fields, commas inside quotes, CRLF) with their line numbers."""
    reader = csv.reader(_read_text(path).splitlines())
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as error:
        raise DatasetError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None


def _fields(path: Path, line: int, text: str, separator: str | None, count: int) -> list[str]:
    parts = text.rsplit(separator, count - 1) if separator else text.split()
    if len(parts) != count:
        raise DatasetError(f"{path}:{line}: expected {count} fields, got {text!r}")
    return [part.strip() for part in parts]


def _read_json(path: Path) -> object:
    try:
        return load_json(_read_text(path))
    except ValueError as error:
        raise DatasetError(f"cannot read {path}: {error}") from None


# -- the releases' own class maps -------------------------------------------------------------------


def _label_map_json(path: Path) -> LabelMap:
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


def _label_map_class_ind(path: Path) -> LabelMap:
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


def _label_map_lines(path: Path) -> LabelMap:
    """Sth-V1 `something-something-v1-labels.csv`: one class a line. Its lists name the classes, and the
    official index order is these names sorted, so the file's own line order is never used as indices."""
    return LabelMap(path, [text for _, text in _lines(path)], indexed=False)


_LABEL_MAP_READERS: dict[str, Callable[[Path], LabelMap]] = {
    ".json": _label_map_json,
    ".txt": _label_map_class_ind,
    ".csv": _label_map_lines,
}


def find_label_map(spec: DatasetSpec, root: Path, list_path: Path) -> LabelMap | None:
    """The release's class map beside the list (or its parent), else in the usual list folders."""
    places = [list_path.parent if list_path.is_file() else list_path, list_path.parent]
    places += [root / folder for folder in spec.folders]
    for folder in dict.fromkeys(places):
        for name in spec.label_maps:
            if (folder / name).is_file():
                return _LABEL_MAP_READERS[Path(name).suffix.lower()](folder / name)
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
        path = ctx.videos.find(clip, youtube_id) or ctx.root / f"{clip}.mp4"
        samples.append(Sample(path, ctx.classes.by_name(label)))
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
        samples.append(Sample(ctx.media_path(relative), _label(ctx, label, line)))
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
        samples.append(Sample(ctx.media_root / name, ctx.classes.by_index(label, line), count))
    return samples


def _read_something(ctx: ReadContext) -> list[Sample]:
    """Sth frame folders + lists, the V2 `.webm` release with its JSON split files, or the V1 release with
    its `id;label` CSV split files."""
    suffix = ctx.list_path.suffix.lower()
    if suffix == ".json":
        return _read_sthv2_json(ctx)
    if suffix == ".csv":
        return _read_sthv1_csv(ctx)
    return _read_frame_list(ctx)


def _test_answers(ctx: ReadContext) -> dict[str, str]:
    """Sth-V2 `test-answers.csv` beside `test.json` (`id;template`, templates as in labels.json)."""
    path = ctx.list_path.parent / "test-answers.csv"
    if not path.is_file():
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
        samples.append(Sample(ctx.video_by_id(video_id, ".webm"), ctx.classes.by_name(template)))
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
        samples.append(Sample(ctx.media_root / video_id, ctx.classes.by_name(label)))
    return samples


def _read_ucf101(ctx: ReadContext) -> list[Sample]:
    """The official `Class/v_Class_gNN_cNN.avi label` lists, or the original `trainlist0N.txt` (with
    1-based `classInd.txt` numbers) / `testlist0N.txt` (none): there the class folder gives the label,
    and a listed number must name the same class in `classInd.txt`."""
    if ctx.list_path.suffix.lower() == ".csv":
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
        samples.append(Sample(ctx.media_path(relative), ctx.classes.by_name(folder)))
    return samples


def _read_hmdb51(ctx: ReadContext) -> list[Sample]:
    """The official frame-folder lists, or the original `testTrainMulti_7030_splits` folder
    (`<class>_test_split<fold>.txt`, lines `video.avi 1|2`: 1 = train, 2 = test)."""
    if not ctx.list_path.is_dir():
        return _read_frame_list(ctx)
    ctx.layout = HMDB_RELEASE
    wanted = "1" if ctx.split == "train" else "2"
    split_files = sorted(ctx.list_path.glob(f"*_test_split{ctx.fold}.txt"))
    if not split_files:
        raise DatasetError(f"no *_test_split{ctx.fold}.txt files in {ctx.list_path}")
    samples = []
    for split_file in split_files:
        class_name = split_file.name.rsplit("_test_split", 1)[0]
        label = ctx.classes.by_name(class_name)
        for line, text in _lines(split_file):
            name, which = _fields(split_file, line, text, None, 2)
            if which == wanted:
                samples.append(Sample(ctx.media_path(f"{class_name}/{name}"), label))
    return samples


def _read_folder(ctx: ReadContext) -> list[Sample]:
    """`root/<split>/<class>/<video file or frame folder>`; classes matched by name."""
    ctx.layout = CLASS_FOLDERS
    samples = []
    for class_dir in sorted(path for path in ctx.list_path.iterdir() if path.is_dir()):
        label = ctx.classes.by_name(class_dir.name)
        for item in sorted(class_dir.iterdir()):
            if item.is_dir() or item.suffix.lower() in VIDEO_EXTENSIONS:
                samples.append(Sample(item, label))
    return samples


def _csv_columns(path: Path) -> tuple[list[tuple[int, str, str]], bool]:
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
    return [Sample(ctx.media_path(relative), _label(ctx, label, line)) for line, relative, label in rows]


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


def find_list(spec: DatasetSpec, root: Path, split: str, fold: int) -> Path:
    """The list file (or folder) of a split under the root; the error names every place looked at."""
    if spec.name == "folder":
        path = root / split
        if not path.is_dir():
            raise DatasetError(f"no {split}/ folder in {root} (expected {root}/{split}/<class>/<video>)")
        return path
    candidates = spec.list_candidates(split, fold)
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
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
    root: Path
    list_path: Path
    split: str  # as asked, e.g. "val2"
    split_name: str  # train, val or test
    fold: int


@dataclass(frozen=True)
class PackedLocation:
    """A split of a packed dataset, its index read and checked before anything else is."""

    spec: DatasetSpec  # the reader it was packed from (its label set and default model)
    packed: PackedSplit


def locate_split(
    name: str | None,
    root: Path | None,
    *,
    split: str = "val",
    list_file: Path | None = None,
    data: str | Path | None = None,
) -> SplitLocation | PackedLocation:
    """Check the dataset name, split, root and list; `root` defaults to the list's folder. `data` names
    a packed dataset instead (`uniformer data pack`: its folder, index or shards, local or a URL); `name`
    then defaults to the dataset it was packed from."""
    if data is not None:
        return locate_packed(name, data, split, root=root, list_file=list_file)
    if name is None:
        raise DatasetError("name the dataset (--dataset) and its folder (--root), or a packed dataset (--data)")
    spec = get_dataset(name)
    split_name, fold = parse_split(spec, split)
    list_path = Path(list_file).expanduser() if list_file is not None else None
    if list_path is not None and not list_path.exists():
        raise DatasetError(f"list file {list_path} does not exist")
    if root is None:
        if list_path is None:
            raise DatasetError("--root is required (the folder that holds the dataset)")
        root = list_path.parent
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    list_path = list_path or find_list(spec, root, split_name, fold)
    return SplitLocation(spec, root, list_path, split, split_name, fold)


def locate_packed(
    name: str | None,
    data: str | Path,
    split: str,
    *,
    root: Path | None = None,
    list_file: Path | None = None,
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
    classes = _resolve_classes(spec, list_path, classes, num_classes)
    label_map = find_label_map(spec, location.root, list_path) if spec.label_maps else None
    if label_map is not None:
        check_label_map(label_map, classes)
    order = label_map.names if label_map is not None and label_map.indexed else None
    if order is None and spec.label_set is not None:
        order = load_labels(spec.label_set)
    index = _ClassIndex(classes, list_path, order)
    ctx = ReadContext(spec, location.root, list_path, index, location.split_name, location.fold, label_map=label_map)
    samples = spec.read(ctx)
    ctx.classes.check()
    if not samples:
        raise DatasetError(f"{list_path} lists no videos")
    if index.order is not None:
        logger.info("%s: label indices follow the release's class order, mapped by name to the model's", list_path)
    map_path = label_map.path if label_map is not None else None
    return DatasetSplit(spec.name, location.split, samples, classes, list_path, ctx.layout, location.root, map_path)


def read_dataset(
    name: str,
    root: Path | None,
    *,
    split: str = "val",
    list_file: Path | None = None,
    classes: list[str] | None = None,
    num_classes: int | None = None,
) -> DatasetSplit:
    """`locate_split` then `read_split`, in one call."""
    location = locate_split(name, root, split=split, list_file=list_file)
    return read_split(location, classes=classes, num_classes=num_classes)


def _resolve_classes(
    spec: DatasetSpec, list_path: Path, classes: list[str] | None, num_classes: int | None
) -> list[str]:
    """The model's class names, else the dataset's, else the names the data itself provides."""
    if classes is not None:
        return classes
    if spec.label_set is not None:
        names = load_labels(spec.label_set)
    elif spec.name == "folder":
        names = sorted(path.name for path in list_path.iterdir() if path.is_dir())
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
    Packed samples are known to the index: their shards are read, not checked."""
    if sample.member is not None:
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


def unavailable_videos(samples: Sequence[Sample], workers: int = 8) -> list[tuple[Path, str]]:
    """(path, reason) of every listed video that is missing or cannot be opened, in list order."""
    with ThreadPoolExecutor(workers) as pool:  # file systems on the network answer in parallel
        reasons = list(pool.map(_unavailable_reason, samples))
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
