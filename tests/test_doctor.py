"""`uniformer data check` on a deliberately damaged dataset: every kind of problem found, nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_runner import run_cli
from synthetic_video import numbered_frame, write_frame_folder, write_video

from uniformer_cli.data.datasets import read_dataset
from uniformer_cli.engine.doctor import CheckRequest, check
from uniformer_cli.engine.packing import PackRequest, pack

FIXTURES = Path(__file__).parent / "fixtures" / "preprocess"


def _video(path: Path, frames: int, offset: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, frame=lambda i: numbered_frame(i + offset, 32, 48), gop=4)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders with one of each problem among good videos (each of distinct content)."""
    root = tmp_path_factory.mktemp("damaged")
    for split, count in (("train", 3), ("val", 2)):
        for label, name in enumerate(("jump", "run")):
            for number in range(count):
                _video(root / split / name / f"{name}{number}.mp4", 12, 100 * label + 10 * number + len(split))
    (root / "train" / "jump" / "empty.mp4").write_bytes(b"")
    data = (root / "train" / "run" / "run0.mp4").read_bytes()
    (root / "train" / "run" / "cut.mp4").write_bytes(data[: len(data) // 2])
    (root / "val" / "run" / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    _video(root / "val" / "jump" / "short.mp4", 3, 999)
    shutil.copy(root / "train" / "jump" / "jump1.mp4", root / "val" / "run" / "leaked.mp4")  # train copy in val
    frames = [numbered_frame(k, 32, 48) for k in range(12)]
    folder = write_frame_folder(root / "train" / "jump" / "frames0", frames)
    (folder / "img_00005.jpg").unlink()  # a gap
    return root


EXPECTED = {
    "train/jump/empty.mp4": "empty",
    "train/run/cut.mp4": "unreadable",
    "train/jump/frames0": "unreadable",
    "val/run/noise.mp4": "unreadable",
    "val/jump/short.mp4": "too short",
    "val/run/leaked.mp4": "duplicate",
}


def test_every_damage_is_found_and_nothing_else(damaged: Path, tmp_path: Path) -> None:
    report = check(CheckRequest(damaged, min_frames=8, fix_list=tmp_path / "fixed.csv"))
    found = {video.video: video.problem for video in report.videos if video.problem}
    assert found == EXPECTED
    for video in report.videos:
        assert (video.error is None) == (video.problem is None)
        assert "\n" not in (video.error or "")
    assert "jump1.mp4" in next(v.error for v in report.videos if v.problem == "duplicate")
    summary = report.summary()
    assert summary["videos"] == 16 and summary["problems"] == 6
    assert report.splits["train"]["classes"] == {"jump": 5, "run": 4}
    assert report.splits["val"]["problems"] == {"unreadable": 1, "empty": 0, "too short": 1, "duplicate": 1}
    assert summary["decode_seconds_per_video"] > 0 and summary["decoded_videos"] == 8
    # The fixed list holds exactly the videos without problems, and the csv reader takes it.
    fixed = read_dataset("csv", damaged, list_file=tmp_path / "fixed.csv", classes=["jump", "run"])
    good = {video.video for video in report.videos if video.problem is None}
    assert {sample.path.relative_to(damaged).as_posix() for sample in fixed.samples} == good


def test_the_model_sets_the_clip_length_and_the_classes(damaged: Path) -> None:
    report = check(CheckRequest(damaged, splits=("val",), model="s16x4-k400"))  # 16 x 4 = 64 frames
    assert report.min_frames == 64
    assert all(video.problem in ("too short", "unreadable", "duplicate") for video in report.videos)
    assert report.class_mismatch is not None and "s16x4-k400" in report.class_mismatch


def test_deep_decodes_what_a_probe_cannot_see(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "val" / "a").mkdir(parents=True)
    data = bytearray((FIXTURES / "carphone_pristine.mp4").read_bytes())
    start, index = data.find(b"mdat") + 4, data.find(b"moov")
    middle = (start + index) // 2
    data[middle : index - 8] = bytes(index - 8 - middle)  # frame data zeroed, container intact
    (root / "val" / "a" / "zeroed.mp4").write_bytes(bytes(data))
    shutil.copy(FIXTURES / "carphone_pristine.mp4", root / "val" / "a" / "fine.mp4")
    quick = check(CheckRequest(root, splits=("val",)))
    assert [video.problem for video in quick.videos] == [None, None]
    deep = check(CheckRequest(root, splits=("val",), deep=True, decoder="pyav"))
    assert [(video.video, video.problem) for video in deep.videos] == [
        ("val/a/fine.mp4", None),
        ("val/a/zeroed.mp4", "unreadable"),
    ]


def test_packed_datasets_are_checked_through_their_index(damaged: Path, tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    pack(PackRequest(damaged, packed, shard_bytes=30_000))
    report = check(CheckRequest(packed, min_frames=8))
    found = {video.video: video.problem for video in report.videos if video.problem}
    # The pack left out what it could not read; the short video and the copy went in, and are found.
    assert found == {"val/jump/short.mp4": "too short", "val/run/leaked.mp4": "duplicate"}
    shard = packed / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[1100:3000] = bytes(1900)
    shard.write_bytes(bytes(data))
    report = check(CheckRequest(packed, splits=("train",)))
    assert [video.problem for video in report.videos].count("unreadable") >= 1


def test_check_command_output_and_exit_status(
    capsys: pytest.CaptureFixture[str], damaged: Path, tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "data", "check", damaged, "--min-frames", "8", "--json")
    assert code == 3, err
    document = json.loads(out)
    assert document["problems"] == 6 and len(document["records"]) == 16
    code, out, err = run_cli(capsys, "data", "check", damaged, "--split", "train", "--min-frames", "8")
    assert code == 3 and "empty" in out
    clean = tmp_path / "clean"
    for name in ("jump", "run"):
        shutil.copytree(damaged / "val" / name, clean / "val" / name)
    for bad in ("noise.mp4", "short.mp4", "leaked.mp4"):
        for name in ("jump", "run"):
            (clean / "val" / name / bad).unlink(missing_ok=True)
    code, out, err = run_cli(capsys, "data", "check", clean, "--split", "val", "--min-frames", "8")
    assert code == 0, out + err
    code, _, err = run_cli(capsys, "data", "check", tmp_path / "nowhere")
    assert code == 1 and err.count("\n") == 1
