"""Dataset readers: every layout of issue 4, written to disk as empty placeholder files (the readers never
decode), read back with the labels in checkpoint order; and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniformer_cli.data.datasets import DATASETS, class_key, read_dataset
from uniformer_cli.errors import DatasetError
from uniformer_cli.zoo import load_labels

K400 = load_labels("k400")
K600 = load_labels("k600")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def frame_folder(path: Path, count: int, template: str) -> Path:
    for number in range(1, count + 1):
        touch(path / template.format(number))
    return path


def test_class_key_matches_the_spellings_of_one_class() -> None:
    assert class_key("massaging person's head") == class_key("massaging persons head")
    assert class_key("hurling (sport)") == class_key("hurling_sport")
    assert class_key("Putting [something] on [something]") == class_key("putting something on something")
    assert class_key("Hammering") != class_key("HammerThrow")


def test_every_zoo_label_set_has_distinct_class_keys() -> None:
    for spec in DATASETS.values():
        if spec.label_set:
            names = load_labels(spec.label_set)
            assert len({class_key(name) for name in names}) == len(names)


def test_k400_official_list_with_crlf_finds_renamed_clips(tmp_path: Path) -> None:
    # The official list names flat `<youtube_id>.mp4` files; this user stored the clips per class with
    # their time range, as downloaded from the annotation CSVs.
    flat = touch(tmp_path / "aaaaaaaaaaa.mp4")
    renamed = touch(tmp_path / "val" / "abseiling" / "bbbbbbbbbbb_000010_000020.mp4")
    (tmp_path / "val.csv").write_bytes(b"aaaaaaaaaaa.mp4,3\r\nbbbbbbbbbbb.mp4,341\r\nccccccccccc.mp4,0\r\n")
    split = read_dataset("k400", tmp_path)
    assert [(s.path, s.label) for s in split.samples] == [
        (flat, 3),
        (renamed, 341),
        (tmp_path / "ccccccccccc.mp4", 0),  # missing: kept, so evaluation reports it
    ]
    assert split.classes == K400 and split.layout.startswith("official list")


@pytest.mark.parametrize("per_class", [True, False])
def test_k400_annotation_csv_per_class_or_flat(tmp_path: Path, per_class: bool) -> None:
    rows = [("abseiling", "x1_abc-defg", 10, 20), ("riding a bike", "x2_abc-defg", 0, 10), ("marching", "gone", 5, 15)]
    lines = ["label,youtube_id,time_start,time_end,split"]
    paths = []
    for label, youtube_id, start, end in rows:
        lines.append(f"{label},{youtube_id},{start},{end},val")
        name = f"{youtube_id}_{start:06d}_{end:06d}.mp4"
        paths.append(tmp_path / "videos" / (label if per_class else "") / name)
    for path in paths[:2]:
        touch(path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "validate.csv").write_text("\n".join(lines) + "\n")
    split = read_dataset("k400", tmp_path, split="val")
    assert [s.label for s in split.samples] == [K400.index(label) for label, *_ in rows]
    assert [s.path for s in split.samples[:2]] == paths[:2]
    assert split.samples[2].path == tmp_path / "gone_000005_000015.mp4"
    assert split.source == tmp_path / "annotations" / "validate.csv"


def test_k600_annotation_csv_names_with_punctuation(tmp_path: Path) -> None:
    (tmp_path / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "massaging person's head,id1,0,10,val\n"
        "passing American football (in game),id2,0,10,val\n"
    )
    split = read_dataset("k600", tmp_path)
    expected = [K600.index("massaging persons head"), K600.index("passing American football in game")]
    assert [s.label for s in split.samples] == expected


def test_kinetics_test_csv_without_labels_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_text("label,youtube_id,time_start,time_end,split\n,id1,0,10,test\n")
    with pytest.raises(DatasetError, match="no labels"):
        read_dataset("k400", tmp_path, split="test")


def test_sthv1_frame_folders_take_the_frame_count_from_the_list(tmp_path: Path) -> None:
    frames = tmp_path / "20bn-something-something-v1"
    frame_folder(frames / "1001", 5, "{:05d}.jpg")
    (tmp_path / "somesomev1_rgb_validation_split.txt").write_text("1001 4 17\n1002 30 0\n")
    split = read_dataset("sthv1", tmp_path, split="val")
    assert [(s.path, s.num_frames, s.label) for s in split.samples] == [
        (frames / "1001", 4, 17),
        (frames / "1002", 30, 0),
    ]
    assert split.classes == load_labels("sthv1")


def test_sthv2_frame_list(tmp_path: Path) -> None:
    frame_folder(tmp_path / "7", 3, "img_{:05d}.jpg")
    (tmp_path / "somesomev2_rgb_validation_split.txt").write_text("7 3 173\n")
    (sample,) = read_dataset("sthv2", tmp_path).samples
    assert (sample.path, sample.num_frames, sample.label) == (tmp_path / "7", 3, 173)


def test_sthv2_webm_release_with_json_labels(tmp_path: Path) -> None:
    names = load_labels("sthv2")
    videos = tmp_path / "20bn-something-something-v2"
    touch(videos / "74225.webm")
    items = [
        {"id": "74225", "label": "spinning cube", "template": "Spinning [something] that quickly stops spinning"},
        {"id": "116154", "label": "putting pen on table", "template": "Putting [something] on a surface"},
    ]
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps(items))
    split = read_dataset("sthv2", tmp_path)
    assert [s.label for s in split.samples] == [
        names.index("Spinning [something] that quickly stops spinning"),
        names.index("Putting [something] on a surface"),
    ]
    assert split.samples[0].path == videos / "74225.webm"
    assert split.samples[1].path == videos / "116154.webm"  # missing, reported at evaluation
    assert split.samples[0].num_frames is None

    (tmp_path / "test.json").write_text(json.dumps([{"id": "1"}]))
    with pytest.raises(DatasetError, match="no labels"):
        read_dataset("sthv2", tmp_path, list_file=tmp_path / "test.json")


def test_ucf101_official_list_and_original_testlist(tmp_path: Path) -> None:
    names = load_labels("ucf101")
    media = tmp_path / "UCF-101"
    first = touch(media / "Hammering" / "v_Hammering_g01_c01.avi")
    second = touch(media / "HammerThrow" / "v_HammerThrow_g01_c01.avi")
    official = tmp_path / "split2" / "val.csv"
    official.parent.mkdir()
    official.write_text("Hammering/v_Hammering_g01_c01.avi 34\nHammerThrow/v_HammerThrow_g01_c01.avi 35\n")
    split = read_dataset("ucf101", tmp_path, split="val2")
    assert [(s.path, s.label) for s in split.samples] == [(first, 34), (second, 35)]

    # The original lists: testlist without labels, trainlist with 1-based labels; the folder decides.
    (tmp_path / "ucfTrainTestlist").mkdir()
    (tmp_path / "ucfTrainTestlist" / "testlist01.txt").write_text(
        "HammerThrow/v_HammerThrow_g01_c01.avi\nHammering/v_Hammering_g01_c01.avi\n"
    )
    split = read_dataset("ucf101", tmp_path, split="val")
    assert [(s.path, s.label) for s in split.samples] == [
        (second, names.index("HammerThrow")),
        (first, names.index("Hammering")),
    ]


def test_hmdb51_official_list_and_original_split_files(tmp_path: Path) -> None:
    names = load_labels("hmdb51")
    frame_folder(tmp_path / "brush_hair_x_f_cm_np1_ri_goo_0", 3, "img_{:05d}.jpg")
    (tmp_path / "split1").mkdir()
    (tmp_path / "split1" / "val.txt").write_text("brush_hair_x_f_cm_np1_ri_goo_0 3 0\n")
    (sample,) = read_dataset("hmdb51", tmp_path).samples
    assert (sample.path, sample.num_frames, sample.label) == (tmp_path / "brush_hair_x_f_cm_np1_ri_goo_0", 3, 0)

    other = tmp_path / "original"
    splits = other / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "wave_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2 \n")
    (splits / "wave_test_split2.txt").write_text("a.avi 2 \n")
    touch(other / "wave" / "b.avi")
    split = read_dataset("hmdb51", other, split="val")
    assert [(s.path, s.label) for s in split.samples] == [
        (other / "cartwheel" / "d.avi", names.index("cartwheel")),
        (other / "wave" / "b.avi", names.index("wave")),
    ]
    assert [s.path.name for s in read_dataset("hmdb51", other, split="train").samples] == ["a.avi"]


def test_folder_tree_matches_the_model_classes_by_name(tmp_path: Path) -> None:
    touch(tmp_path / "val" / "Cat" / "1.mp4")
    touch(tmp_path / "val" / "dog" / "2.webm")
    frame_folder(tmp_path / "val" / "dog" / "frames3", 2, "img_{:05d}.jpg")
    touch(tmp_path / "val" / "dog" / "notes.txt")
    split = read_dataset("folder", tmp_path, classes=["dog", "bird", "cat"])
    assert [(s.path.name, s.label) for s in split.samples] == [("1.mp4", 2), ("2.webm", 0), ("frames3", 0)]
    # A model without class names: the sorted folder names.
    assert read_dataset("folder", tmp_path, num_classes=2).classes == ["Cat", "dog"]
    with pytest.raises(DatasetError, match=r"1 class name\(s\) .* not classes of the model .*'Cat'"):
        read_dataset("folder", tmp_path, classes=["dog", "bird"])


def test_csv_with_names_or_indices(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "mine.csv"
    listing.parent.mkdir()
    listing.write_text("path,label\na.mp4,bird\nsub/b.mp4,dog\n")
    split = read_dataset("csv", tmp_path, list_file=listing, classes=["dog", "bird"])
    assert [(s.path, s.label) for s in split.samples] == [(tmp_path / "a.mp4", 1), (tmp_path / "sub/b.mp4", 0)]
    # Without --root the paths are relative to the list's folder; indices need the class count.
    listing.write_text("a.mp4,1\n")
    split = read_dataset("csv", None, list_file=listing, num_classes=3)
    assert split.samples[0].path == listing.parent / "a.mp4" and split.classes == ["0", "1", "2"]
    listing.write_text("a.mp4,3\n")
    with pytest.raises(DatasetError, match=r"mine.csv:1: label 3 is out of range for a model with 3 classes"):
        read_dataset("csv", None, list_file=listing, num_classes=3)


def with_list(root: Path) -> Path:
    (root / "val.csv").write_text("a.mp4,0\n")
    return root


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda root: read_dataset("k400", root / "nope"), "does not exist"),
        (lambda root: read_dataset("k400", root), r"no k400 val list under .*val\.csv.*pass --list FILE"),
        (lambda root: read_dataset("k400", root, list_file=root / "x.csv"), "list file .* does not exist"),
        (lambda root: read_dataset("sthv1", root, split="dev"), "unknown split 'dev'"),
        (lambda root: read_dataset("k400", root, split="val2"), "no numbered folds"),
        (lambda root: read_dataset("kinetics", root), "unknown dataset 'kinetics'"),
        (lambda root: read_dataset("folder", root), r"no val/ folder"),
        (lambda root: read_dataset("csv", None), "--root is required"),
        (
            lambda root: read_dataset("k600", with_list(root), classes=K400),
            r"not the k600 classes \(its class 'balloon blowing' is not one of them\)",
        ),
        (
            lambda root: read_dataset("k400", with_list(root), classes=K400[:10]),
            r"not the k400 classes \(it has no class 'bobsledding'\)",
        ),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, call, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as error:
        call(tmp_path)
    assert "\n" not in str(error.value)


def test_label_out_of_range_in_an_official_list(tmp_path: Path) -> None:
    (tmp_path / "somesomev1_rgb_validation_split.txt").write_text("1 10 3\n2 10 174\n")
    with pytest.raises(DatasetError, match=r"validation_split.txt:2: label 174 is out of range .* 174 classes"):
        read_dataset("sthv1", tmp_path)


def test_default_models_come_from_the_zoo() -> None:
    for spec in DATASETS.values():
        entry = spec.default_model
        assert (entry is None) == (spec.label_set is None)
        if entry is not None:
            assert entry.dataset == spec.label_set
