"""Training on the dataset releases: Something-Something never flips unless asked, and missing or
unreadable videos of the train and val lists are counted and listed at start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from motion_data import motion_dataset, tiny_flags
from test_releases import STHV2_VALIDATION, touch, write_sthv2_release

from uniformer_cli.cli.app import main
from uniformer_cli.data.datasets import DatasetSplit, Sample
from uniformer_cli.engine.train_config import plan_training
from uniformer_cli.engine.train_data import UNAVAILABLE_LIST, report_unavailable
from uniformer_cli.engine.train_options import TrainOptions
from uniformer_cli.errors import DatasetError


@pytest.fixture(scope="module")
def sthv2_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sthv2")
    write_sthv2_release(root)
    items = [{"id": video, "template": template} for video, template, _ in STHV2_VALIDATION]
    (root / "labels" / "train.json").write_text(json.dumps(items))
    return root


@pytest.mark.parametrize(
    "start",
    [{"init": "scratch"}, {}, {"recipe": "b16x4-k400", "init": "scratch"}],
    ids=["scratch", "imagenet", "kinetics-recipe"],
)
def test_something_something_never_flips_unless_asked(sthv2_release: Path, start: dict[str, object]) -> None:
    # Every Kinetics recipe flips; left/right is part of the Something-Something labels.
    options = TrainOptions(data=sthv2_release, dataset="sthv2", arch=None if "recipe" in start else "s", **start)
    assert plan_training(options).augment.flip is False
    assert plan_training(TrainOptions(**{**options.__dict__, "flip": True})).augment.flip is True


def test_a_class_folder_tree_of_something_something_classes_does_not_flip(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for name in ("Pushing [something] from left to right", "Pushing [something] from right to left"):
            touch(tmp_path / split / name / f"{split}.webm")
    assert plan_training(TrainOptions(data=tmp_path, init="scratch")).augment.flip is False
    for split in ("train", "val"):
        touch(tmp_path / split / "juggling" / "1.mp4")
    assert plan_training(TrainOptions(data=tmp_path, init="scratch")).augment.flip is True


def test_unavailable_videos_are_counted_listed_and_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    fine = [touch(root / f"{name}.webm") for name in ("1", "2")]
    fine[0].write_bytes(b"\x1a\x45\xdf\xa3")
    fine[1].write_bytes(b"\x1a\x45\xdf\xa3")
    empty = touch(root / "3.webm")
    frames = root / "4"
    frames.mkdir()
    samples = [Sample(path, 0) for path in (*fine, empty, root / "gone.webm", frames)]

    def split(chosen: list[Sample]) -> DatasetSplit:
        return DatasetSplit("folder", "x", chosen, ["a"], root, "class folders", root)

    run = tmp_path / "run"
    run.mkdir()
    with caplog.at_level(logging.WARNING):
        count = report_unavailable({"train": split(samples[:4]), "val": split([*samples[4:], *samples[:2]])}, run)
    assert count == 3
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("2 of 4 train and 1 of 3 val videos are missing or unreadable (3.webm, gone.webm, 4)")
    assert str(run / UNAVAILABLE_LIST) in message
    assert (run / UNAVAILABLE_LIST).read_text().splitlines() == [
        f"train\tempty file\t{empty}",
        f"train\tmissing\t{root / 'gone.webm'}",
        f"val\tempty frame folder\t{frames}",
    ]
    caplog.clear()
    assert report_unavailable({"train": split(samples[:2]), "val": split(samples[:2])}, run) == 0
    assert not (run / UNAVAILABLE_LIST).exists() and not caplog.records
    with pytest.raises(DatasetError, match="none of the 2 training videos can be read"):
        report_unavailable({"train": split(samples[2:4]), "val": split(samples[:2])}, run)


def test_a_run_reports_its_unreadable_videos_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = motion_dataset(tmp_path / "motion", 2, 1)
    touch(data / "train" / "left" / "broken.mp4")  # an empty file, as an interrupted download leaves
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "-o", str(run), *tiny_flags(), "--workers", "0", "--epochs", "1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--batch-size", "3", "--json"])
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    listing = run / UNAVAILABLE_LIST
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"1 of 9 train videos are missing or unreadable (train/left/broken.mp4): the full list is in {listing}"
    ]
    assert listing.read_text() == f"train\tempty file\t{data / 'train' / 'left' / 'broken.mp4'}\n"
