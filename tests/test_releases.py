"""The public dataset releases, laid out on disk as they are downloaded, read back with every video's
label checked against its official index.

The ids, time ranges, class names and indices below are real: the Sth-V2 entries are videos of the
published `validation.json` with their labels in the official `somesomev2_rgb_validation_split.txt`,
the Sth-V1 and Kinetics rows are taken from the published split files with the index the official
UniFormer lists give the same video, and the UCF101 lines are those of `ucfTrainTestlist` (CRLF, as
released). Media files are empty placeholders: the readers never decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniformer_cli.cli.app import main
from uniformer_cli.data.datasets import DATASETS, read_dataset
from uniformer_cli.errors import DatasetError
from uniformer_cli.zoo import load_labels

ROOT = Path(__file__).resolve().parents[1]
STHV2 = load_labels("sthv2")
STHV1 = load_labels("sthv1")
UCF101 = load_labels("ucf101")

# Sth-V2 validation videos: (id, template as in validation.json, official label).
STHV2_VALIDATION = [
    ("74225", "Spinning [something] that quickly stops spinning", 140),
    ("116154", "Showing [something] on top of [something]", 127),
    ("117478", "Moving [something] up", 45),
    ("36585", "[Something] falling like a feather or paper", 134),
]
# Entries of the published Sth-V2 labels.json: template without brackets -> index.
STHV2_LABELS_JSON = {
    "Approaching something with your camera": 0,
    "Closing something": 5,
    "Moving something away from the camera": 41,
    "Moving something up": 45,
    "Pushing something from left to right": 93,
    "Showing something on top of something": 127,
    "Something falling like a feather or paper": 134,
    "Spinning something that quickly stops spinning": 140,
    "Wiping something off of something": 173,
}
# Sth-V1 validation videos: (id, class as in something-something-v1-validation.csv, official label).
STHV1_VALIDATION = [
    ("1753", "Poking something so lightly that it doesn't or almost doesn't move", 56),
    ("99274", "Tipping something with something in it over, so something in it falls out", 159),
    ("5942", "Removing something, revealing something behind", 121),
]
# Kinetics-400 validation rows: (label, youtube_id, time_start, time_end, official label).
K400_VALIDATION = [
    ("javelin throw", "--07WQ2iBlw", 1, 11, 294),
    ("passing American football (in game)", "-HxBTALkZT4", 0, 10, 175),
    ("petting animal (not cat)", "-Aw1GOyNtlI", 13, 23, 11),
    ("skiing (not slalom or crosscountry)", "-HoiPytlLC4", 52, 62, 87),
    ("massaging person's head", "-WfbA1hJ-fM", 3, 13, 263),
]
# Kinetics-600 validation rows (class names as the K600 CSVs spell them).
K600_VALIDATION = [
    ("massaging person's head", "GhhjqW9vBZk", 322, 332, 240),
    ("hurling (sport)", "a6av8XInSvs", 679, 689, 147),
]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def unbracketed(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def labels_json(names: list[str]) -> str:
    """A labels.json as published: unbracketed template -> index string, one entry a line."""
    return json.dumps({unbracketed(name): str(index) for index, name in enumerate(names)}, indent=1)


def write_sthv2_release(root: Path, *, labels_dir: str = "labels", old_names: bool = False) -> list[Path]:
    prefix = "something-something-v2-" if old_names else ""
    folder = root / labels_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}labels.json").write_text(labels_json(STHV2))
    items = [
        {"id": video, "label": unbracketed(template).lower(), "template": template, "placeholders": ["a cup"]}
        for video, template, _ in STHV2_VALIDATION
    ]
    (folder / f"{prefix}validation.json").write_text(json.dumps(items))
    return [touch(root / "20bn-something-something-v2" / f"{video}.webm") for video, _, _ in STHV2_VALIDATION]


def test_sthv2_class_order_is_the_published_labels_json_order() -> None:
    for template, index in STHV2_LABELS_JSON.items():
        assert unbracketed(STHV2[index]) == template
    # Display names keep the brackets; the order is the templates sorted once the brackets are gone.
    assert STHV2[134] == "[Something] falling like a feather or paper"
    assert sorted(STHV2, key=unbracketed) == STHV2


@pytest.mark.parametrize(("labels_dir", "old_names"), [("labels", False), ("", True), ("labels", True)])
def test_sthv2_webm_release_as_downloaded(tmp_path: Path, labels_dir: str, old_names: bool) -> None:
    videos = write_sthv2_release(tmp_path, labels_dir=labels_dir, old_names=old_names)
    split = read_dataset("sthv2", tmp_path, split="val")
    assert [(s.path, s.label) for s in split.samples] == list(
        zip(videos, [i for *_, i in STHV2_VALIDATION], strict=True)
    )
    assert split.layout.startswith("release: webm") and split.label_map is not None
    assert split.label_map.name.endswith("labels.json")


def test_sthv2_official_frame_list_and_a_model_with_another_class_order(tmp_path: Path) -> None:
    # The official validation list gives the labels.json indices; a model whose classes come in another
    # order (here reversed) is scored through the names, not the raw index.
    (tmp_path / "somesomev2_rgb_validation_split.txt").write_text("74225 156 140\n116154 129 127\n117478 106 45\n")
    (tmp_path / "labels.json").write_text(labels_json(STHV2))
    official = [s.label for s in read_dataset("sthv2", tmp_path).samples]
    assert official == [140, 127, 45]
    reversed_model = STHV2[::-1]
    split = read_dataset("sthv2", tmp_path, classes=reversed_model)
    assert [reversed_model[s.label] for s in split.samples] == [STHV2[140], STHV2[127], STHV2[45]]


def test_sthv2_test_split_reads_the_published_answers(tmp_path: Path) -> None:
    write_sthv2_release(tmp_path)
    (tmp_path / "labels" / "test.json").write_text(json.dumps([{"id": "74225"}, {"id": "36585"}]))
    with pytest.raises(DatasetError, match=r"test.json has no labels .*test-answers.csv"):
        read_dataset("sthv2", tmp_path, split="test")
    answers = (
        "74225;Spinning something that quickly stops spinning\r\n36585;Something falling like a feather or paper\r\n"
    )
    (tmp_path / "labels" / "test-answers.csv").write_bytes(answers.encode())
    assert [s.label for s in read_dataset("sthv2", tmp_path, split="test").samples] == [140, 134]


def test_sthv2_labels_json_that_disagrees_with_the_model_is_refused(tmp_path: Path) -> None:
    write_sthv2_release(tmp_path)
    renamed = json.loads(labels_json(STHV2))
    renamed["Moving something upwards"] = renamed.pop("Moving something up")
    (tmp_path / "labels" / "labels.json").write_text(json.dumps(renamed))
    with pytest.raises(
        DatasetError, match=r"labels.json does not match the model: its class 'Moving something upwards'"
    ):
        read_dataset("sthv2", tmp_path)
    (tmp_path / "labels" / "labels.json").write_text(json.dumps({"Moving something up": "1"}))
    with pytest.raises(DatasetError, match=r"class indices are not 0..0"):
        read_dataset("sthv2", tmp_path)


def test_sthv1_release_csv_splits_and_jpeg_frames(tmp_path: Path) -> None:
    (tmp_path / "something-something-v1-labels.csv").write_text("\n".join(STHV1) + "\n")
    lines = "".join(f"{video};{name}\n" for video, name, _ in STHV1_VALIDATION)
    (tmp_path / "something-something-v1-validation.csv").write_text(lines)
    frames = tmp_path / "20bn-something-something-v1"
    for video, _, _ in STHV1_VALIDATION:
        touch(frames / video / "00001.jpg")
    split = read_dataset("sthv1", tmp_path, split="val")
    assert [(s.path, s.label, s.num_frames) for s in split.samples] == [
        (frames / video, index, None) for video, _, index in STHV1_VALIDATION
    ]
    assert split.layout.startswith("release: JPEG") and split.label_map is not None

    (tmp_path / "something-something-v1-test.csv").write_text("1420\n")
    with pytest.raises(DatasetError, match="no label"):
        read_dataset("sthv1", tmp_path, split="test")
    # A labels file that names another class set is refused, naming the first class that differs.
    (tmp_path / "something-something-v1-labels.csv").write_text("\n".join([*STHV1[:-1], "Wiping something"]))
    with pytest.raises(DatasetError, match=r"v1-labels.csv does not match the model: its class 'Wiping something'"):
        read_dataset("sthv1", tmp_path)


@pytest.mark.parametrize("per_class", [True, False])
def test_kinetics400_deepmind_archive(tmp_path: Path, per_class: bool) -> None:
    header = "label,youtube_id,time_start,time_end,split,is_cc"
    rows = [f'"{label}",{video},{start},{end},val,0' for label, video, start, end, _ in K400_VALIDATION]
    (tmp_path / "kinetics400").mkdir()
    (tmp_path / "kinetics400" / "validate.csv").write_text("\n".join([header, *rows]) + "\n")
    paths = [
        touch(tmp_path / "val" / (label if per_class else "") / f"{video}_{start:06d}_{end:06d}.mp4")
        for label, video, start, end, _ in K400_VALIDATION
    ]
    split = read_dataset("k400", tmp_path, split="val")
    assert [(s.path, s.label) for s in split.samples] == list(zip(paths, [i for *_, i in K400_VALIDATION], strict=True))
    assert split.source == tmp_path / "kinetics400" / "validate.csv"

    (tmp_path / "kinetics400" / "test.csv").write_text("youtube_id,time_start,time_end,split\n--07WQ2iBlw,1,11,test\n")
    with pytest.raises(DatasetError, match="has no labels"):
        read_dataset("k400", tmp_path, split="test")


def test_kinetics600_csv_names_keep_their_punctuation(tmp_path: Path) -> None:
    header = "label,youtube_id,time_start,time_end,split"
    rows = [f'"{label}",{video},{start},{end},val' for label, video, start, end, _ in K600_VALIDATION]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.csv").write_text("\r\n".join([header, *rows]) + "\r\n")
    split = read_dataset("k600", tmp_path)
    assert [s.label for s in split.samples] == [index for *_, index in K600_VALIDATION]


def test_ucf101_release_with_class_ind(tmp_path: Path) -> None:
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    class_ind = "".join(f"{number} {name}\r\n" for number, name in enumerate(UCF101, start=1))
    (lists / "classInd.txt").write_bytes(class_ind.encode())
    (lists / "testlist01.txt").write_bytes(
        b"HandstandPushups/v_HandStandPushups_g01_c01.avi\r\nYoYo/v_YoYo_g07_c04.avi\r\n"
    )
    (lists / "trainlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nYoYo/v_YoYo_g25_c05.avi 101\r\n"
    )
    media = tmp_path / "UCF-101"
    handstand = touch(media / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    split = read_dataset("ucf101", tmp_path, split="val")
    assert [(s.path, s.label) for s in split.samples] == [(handstand, 36), (media / "YoYo/v_YoYo_g07_c04.avi", 100)]
    assert [s.label for s in read_dataset("ucf101", tmp_path, split="train").samples] == [0, 100]

    (lists / "trainlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\r\n")
    with pytest.raises(DatasetError, match=r"class 2 is 'ApplyLipstick' in classInd.txt, but .* 'ApplyEyeMakeup'"):
        read_dataset("ucf101", tmp_path, split="train")


def test_csv_reader_parses_real_csv(tmp_path: Path) -> None:
    # As pandas writes it (an index column, a header) and with quoted fields holding commas.
    listing = tmp_path / "mine.csv"
    listing.write_text(',path,label\n0,"clips/a, b.mp4","Putting something, something and something on the table"\n')
    split = read_dataset("csv", tmp_path, list_file=listing, classes=["x", STHV2[120]])
    assert [(s.path, s.label) for s in split.samples] == [(tmp_path / "clips/a, b.mp4", 1)]
    listing.write_text('path,label\r\n"x.mp4",0\r\n')
    assert read_dataset("csv", tmp_path, list_file=listing, num_classes=2).samples[0].label == 0
    listing.write_text("a.mp4,1,extra\n")
    with pytest.raises(DatasetError, match=r"mine.csv:1: expected path,label"):
        read_dataset("csv", tmp_path, list_file=listing, num_classes=2)


def test_every_layout_is_listed_by_eval_help_and_shown_in_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    docs = " ".join((ROOT / "docs" / "DATASETS.md").read_text().split())
    for spec in DATASETS.values():
        assert spec.layouts
        for layout in spec.layouts:
            assert f"`{layout.name}`" in docs, layout.name
            assert layout.name in shown, layout.name
    assert "docs/DATASETS.md" in (ROOT / "README.md").read_text()
