"""Dataset readers for `uniformer eval`: the official UniFormer lists and the layouts users really have.

Every reader returns a `DatasetSplit` whose sample labels index the checkpoint's classes (the zoo label
files, PROTOCOLS.md 6.2): lists that carry label indices are checked against the class count, lists and trees
that carry class names are matched by name. Names are compared after `class_key` (case, spaces,
underscores, brackets and punctuation ignored), so `massaging person's head` (K600 CSV) matches
`massaging persons head` (K600 label file), and SSv2 JSON templates match the category file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from uniformer_cli.data.video import VIDEO_EXTENSIONS, Video
from uniformer_cli.errors import DatasetError, VideoError
from uniformer_cli.zoo import ZOO, ZooEntry, load_labels

SPLITS = ("train", "val", "test")
# Folders where list files are commonly kept, relative to --root ({label_set} is filled in).
LIST_DIRS = ("", "annotations", "lists", "splits", "labels", "{label_set}", "data_list/{label_set}")
# Kinetics clips downloaded from the published CSVs: {youtube_id}_{start:06d}_{end:06d}.mp4 (PROTOCOLS.md 6.4).
_KINETICS_CLIP = re.compile(r"^(?P<youtube_id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")


@dataclass(frozen=True)
class Sample:
    """One video: a file, or a frame folder whose frame count comes from the list (PROTOCOLS.md 2.2)."""

    path: Path
    label: int
    num_frames: int | None = None

    def frame_count(self, video: Video) -> int:
        """Frames to sample over: a frame folder's comes from the list, not the folder (PROTOCOLS.md 2.2)."""
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
    source: Path
    layout: str
    root: Path


def class_key(name: str) -> str:
    """Comparable form of a class name: lower case, apostrophes dropped (K600 lists drop them), every other
    run of non-alphanumerics one underscore."""
    return re.sub(r"[^0-9a-z]+", "_", re.sub(r"['’]", "", name.lower())).strip("_")


class _ClassIndex:
    """Maps class names or label indices from a list to the checkpoint's label indices, collecting every
    unknown name so that the error names them all at once."""

    def __init__(self, classes: list[str], source: Path) -> None:
        self.classes = classes
        self.source = source
        self.by_key: dict[str, int] = {}
        for index, name in enumerate(classes):
            key = class_key(name)
            if key in self.by_key:
                raise DatasetError(f"class names {classes[self.by_key[key]]!r} and {name!r} cannot be told apart")
            self.by_key[key] = index
        self.unknown: dict[str, None] = {}

    def by_name(self, name: str) -> int:
        index = self.by_key.get(class_key(name))
        if index is None:
            self.unknown[name] = None
            return -1
        return index

    def by_index(self, text: str, line: int) -> int:
        try:
            index = int(text)
        except ValueError:
            raise DatasetError(f"{self.source}:{line}: label {text!r} is not an integer") from None
        if not 0 <= index < len(self.classes):
            raise DatasetError(
                f"{self.source}:{line}: label {index} is out of range for a model with {len(self.classes)} classes"
            )
        return index

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
class DatasetSpec:
    """How to read one dataset: its label set, list file names per split, where its media live."""

    name: str
    label_set: str | None
    read: Callable[[ReadContext], list[Sample]]
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    media_dirs: tuple[str, ...] = ("",)
    folds: bool = False

    @property
    def default_model(self) -> ZooEntry | None:
        """The matching zoo checkpoint: downloadable first, then the best paper top-1."""
        entries = [entry for entry in ZOO.values() if entry.dataset == self.label_set]
        return max(entries, key=lambda entry: (entry.on_hub, entry.top1)) if entries else None

    def list_candidates(self, split: str, fold: int) -> list[str]:
        names = self.lists.get(split, ())
        folders = [folder.format(label_set=self.label_set or "") for folder in LIST_DIRS]
        return [str(Path(folder, name.format(fold=fold))) for name in names for folder in dict.fromkeys(folders)]


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
        the root; a missing video keeps its listed path, so evaluation reports it instead of dropping it."""
        for base in dict.fromkeys((self.media_root, self.root)):
            if (base / relative).exists():
                return base / relative
        return self.videos.find(Path(relative).stem) or self.media_root / relative


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and a UTF-8 BOM are accepted."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read list {path}: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _fields(path: Path, line: int, text: str, separator: str | None, count: int) -> list[str]:
    parts = text.rsplit(separator, count - 1) if separator else text.split()
    if len(parts) != count:
        raise DatasetError(f"{path}:{line}: expected {count} fields, got {text!r}")
    return [part.strip() for part in parts]


def _read_kinetics(ctx: ReadContext) -> list[Sample]:
    """The official `path,label` list, or a published annotation CSV (`label,youtube_id,time_start,...`)."""
    first = next(iter(_lines(ctx.list_path)), (0, ""))[1]
    if "youtube_id" not in first:
        ctx.layout = "official list (path,label)"
        return _read_path_label(ctx, separator=",")
    ctx.layout = "annotation CSV (label,youtube_id,time_start,time_end,split)"
    text = "\n".join(line for _, line in _lines(ctx.list_path))
    samples = []
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("label"):
            raise DatasetError(f"{ctx.list_path} has no labels (the Kinetics test CSV is unlabelled)")
        youtube_id = row["youtube_id"]
        clip = f"{youtube_id}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
        path = ctx.videos.find(clip, youtube_id) or ctx.root / f"{clip}.mp4"
        samples.append(Sample(path, ctx.classes.by_name(row["label"])))
    return samples


def _read_path_label(ctx: ReadContext, separator: str | None) -> list[Sample]:
    """`path<sep>label` lines; the label is an index into the model's classes, or a class name."""
    samples = []
    for line, text in _lines(ctx.list_path):
        relative, label = _fields(ctx.list_path, line, text, separator, 2)
        if line == 1 and (relative.lower(), label.lower()) == ("path", "label"):
            continue
        index = ctx.classes.by_index(label, line) if label.lstrip("-").isdigit() else ctx.classes.by_name(label)
        samples.append(Sample(ctx.media_path(relative), index))
    return samples


def _read_frame_list(ctx: ReadContext) -> list[Sample]:
    """`folder num_frames label` lines over frame folders (Sth V1/V2, HMDB51)."""
    samples = []
    for line, text in _lines(ctx.list_path):
        name, frames, label = _fields(ctx.list_path, line, text, None, 3)
        if not frames.isdigit():
            raise DatasetError(f"{ctx.list_path}:{line}: frame count {frames!r} is not an integer")
        samples.append(Sample(ctx.media_root / name, ctx.classes.by_index(label, line), int(frames)))
    return samples


def _read_something(ctx: ReadContext) -> list[Sample]:
    """Sth lists over frame folders, or (V2) the published `.webm` release with its JSON split files."""
    if ctx.list_path.suffix.lower() != ".json":
        ctx.layout = "frame folders + list (folder num_frames label)"
        return _read_frame_list(ctx)
    ctx.layout = "webm videos + JSON split"
    try:
        items = json.loads(ctx.list_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {ctx.list_path}: {error}") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) and "id" in item for item in items):
        raise DatasetError(f"{ctx.list_path} is not a Something-Something split file (a list of objects with 'id')")
    if items and "template" not in items[0]:
        raise DatasetError(f"{ctx.list_path} has no labels (the Something-Something test split is unlabelled)")
    return [
        Sample(
            ctx.videos.find(str(item["id"])) or ctx.media_root / f"{item['id']}.webm",
            ctx.classes.by_name(item["template"]),
        )
        for item in items
    ]


def _read_ucf101(ctx: ReadContext) -> list[Sample]:
    """The official `Class/v_Class_gNN_cNN.avi label` lists, or the original `trainlist0N.txt` /
    `testlist0N.txt` (1-based or no labels): for those the class comes from the folder name."""
    if ctx.list_path.suffix.lower() == ".csv":
        ctx.layout = "official list (path label)"
        return _read_path_label(ctx, separator=None)
    ctx.layout = "UCF101 split list (class folder gives the label)"
    samples = []
    for _, text in _lines(ctx.list_path):
        relative = text.split()[0]
        samples.append(Sample(ctx.media_path(relative), ctx.classes.by_name(relative.split("/")[0])))
    return samples


def _read_hmdb51(ctx: ReadContext) -> list[Sample]:
    """The official frame-folder lists, or the original `testTrainMulti_7030_splits` folder
    (`<class>_test_split<fold>.txt`, lines `video.avi 1|2`: 1 = train, 2 = test)."""
    if not ctx.list_path.is_dir():
        ctx.layout = "frame folders + list (folder num_frames label)"
        return _read_frame_list(ctx)
    ctx.layout = "videos + original split files"
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
    ctx.layout = "class folders"
    samples = []
    for class_dir in sorted(path for path in ctx.list_path.iterdir() if path.is_dir()):
        label = ctx.classes.by_name(class_dir.name)
        for item in sorted(class_dir.iterdir()):
            if item.is_dir() or item.suffix.lower() in VIDEO_EXTENSIONS:
                samples.append(Sample(item, label))
    return samples


def _read_csv(ctx: ReadContext) -> list[Sample]:
    ctx.layout = "CSV (path,label)"
    return _read_path_label(ctx, separator=",")


# The official data_list ships val.csv and test.csv as the same file (PROTOCOLS.md 6.1), the published
# annotations name their validation CSV validate.csv.
KINETICS_LISTS = {"val": ("val.csv", "validate.csv", "test.csv"), "train": ("train.csv",), "test": ("test.csv",)}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        # Kinetics-400 videos: official list or the published annotation CSVs
        DatasetSpec(
            "k400",
            "k400",
            _read_kinetics,
            KINETICS_LISTS,
        ),
        # Kinetics-600 videos: official list or the published annotation CSVs
        DatasetSpec(
            "k600",
            "k600",
            _read_kinetics,
            KINETICS_LISTS,
        ),
        # Something-Something V1 frame folders (00001.jpg) + somesomev1_rgb_*_split.txt
        DatasetSpec(
            "sthv1",
            "sthv1",
            _read_something,
            {"val": ("somesomev1_rgb_validation_split.txt",), "train": ("somesomev1_rgb_train_split.txt",)},
            media_dirs=("20bn-something-something-v1",),
        ),
        # Something-Something V2 frame folders (img_00001.jpg) + lists, or .webm + JSON split files
        DatasetSpec(
            "sthv2",
            "sthv2",
            _read_something,
            {
                "val": ("somesomev2_rgb_validation_split.txt", "something-something-v2-validation.json"),
                "train": ("somesomev2_rgb_train_split.txt", "something-something-v2-train.json"),
            },
            media_dirs=("20bn-something-something-v2",),
        ),
        # UCF101 videos + official split{N}/*.csv or the original trainlist0N/testlist0N.txt
        DatasetSpec(
            "ucf101",
            "ucf101",
            _read_ucf101,
            {
                "val": ("split{fold}/val.csv", "testlist0{fold}.txt", "ucfTrainTestlist/testlist0{fold}.txt"),
                "test": ("split{fold}/test.csv", "testlist0{fold}.txt", "ucfTrainTestlist/testlist0{fold}.txt"),
                "train": ("split{fold}/train.csv", "trainlist0{fold}.txt", "ucfTrainTestlist/trainlist0{fold}.txt"),
            },
            media_dirs=("UCF-101", "UCF101"),
            folds=True,
        ),
        # HMDB51 frame folders + official split{N}/*.txt, or videos + testTrainMulti_7030_splits
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
        ),
        # any root/<split>/<class>/<video file or frame folder> tree
        DatasetSpec("folder", None, _read_folder),
        # a CSV of path,label (--list FILE; paths relative to --root)
        DatasetSpec("csv", None, _read_csv),
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
    """A model whose classes are not the dataset's would be scored against the wrong names."""
    if spec.label_set is None:
        return
    expected = load_labels(spec.label_set)
    differ = next(
        (i for i, (a, b) in enumerate(zip(classes, expected, strict=False)) if class_key(a) != class_key(b)), None
    )
    if len(classes) != len(expected) or differ is not None:
        detail = (
            f"class {differ} is {classes[differ]!r}, not {expected[differ]!r}"
            if differ is not None
            else f"{len(classes)} classes, not {len(expected)}"
        )
        default = spec.default_model.name if spec.default_model else "none"
        raise DatasetError(
            f"the model's classes are not the {spec.name} classes ({detail}): use a {spec.name} model, e.g. {default}"
        )


@dataclass(frozen=True)
class SplitLocation:
    """Where a split's list (or class-folder tree) and media are, found before anything is read."""

    spec: DatasetSpec
    root: Path
    list_path: Path
    split: str  # as asked, e.g. "val2"
    split_name: str  # train, val or test
    fold: int


def locate_split(name: str, root: Path | None, *, split: str = "val", list_file: Path | None = None) -> SplitLocation:
    """Check the dataset name, split, root and list; `root` defaults to the list's folder."""
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


def read_split(
    location: SplitLocation, *, classes: list[str] | None = None, num_classes: int | None = None
) -> DatasetSplit:
    """Read a located split. `classes` are the model's class names (its output order); a model without
    names gives its `num_classes`, and the dataset's label set (or, for `folder`/`csv`, the sorted class
    names found in the data) names them."""
    spec, list_path = location.spec, location.list_path
    if classes is not None:
        check_label_set(spec, classes)
    classes = _resolve_classes(spec, list_path, classes, num_classes)
    ctx = ReadContext(
        spec, location.root, list_path, _ClassIndex(classes, list_path), location.split_name, location.fold
    )
    samples = spec.read(ctx)
    ctx.classes.check()
    if not samples:
        raise DatasetError(f"{list_path} lists no videos")
    return DatasetSplit(spec.name, location.split, samples, classes, list_path, ctx.layout, location.root)


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
        labels = {_fields(list_path, line, text, ",", 2)[1] for line, text in _lines(list_path)} - {"label"}
        numeric = all(label.isdigit() for label in labels)
        if numeric and num_classes is None:
            raise DatasetError(f"{list_path} has label indices but the model's class count is unknown")
        names = [str(index) for index in range(num_classes or 0)] if numeric else sorted(labels)
    if num_classes is not None and len(names) > num_classes:
        raise DatasetError(f"the data has {len(names)} classes but the model predicts only {num_classes}")
    return names


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetSplit",
    "Sample",
    "SplitLocation",
    "class_key",
    "get_dataset",
    "locate_split",
    "read_dataset",
    "read_split",
]
