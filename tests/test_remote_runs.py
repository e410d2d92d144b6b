"""Loose datasets, lists, videos, weights and outputs at storage URLs, against real servers on 127.0.0.1
(moto's S3 server, a ranged HTTP server): every command reads them as it reads local files, and gives
the same records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from hub_server import LocalHub
from motion_data import DIRECTIONS, listed_motion_dataset, tiny_flags
from storage_servers import http_server
from tiny_training import TINY_CONFIG

from uniformer_cli.data import storage
from uniformer_cli.data.datasets import read_dataset
from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.engine.features import read_features
from uniformer_cli.models import create_model
from uniformer_cli.weights import save_weights

pytest.importorskip("s3fs")  # the remote extra, installed by the test extra

CLASSES = sorted(DIRECTIONS)
PROTOCOL = {"frames": 8, "stride": 2, "sampling": "dense", "clips": 1, "crops": 3, "size": 32, "channel_order": "rgb"}


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders (2 training, 1 validation video per class), a tiny model file, and a CSV list of
    the validation videos with one that does not exist."""
    return listed_motion_dataset(tmp_path_factory.mktemp("remote_runs") / "motion", 2, PROTOCOL)


def _upload(folder: Path, url: str) -> None:
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        storage.write_bytes(f"{url}/{file.relative_to(folder).as_posix()}", file.read_bytes())


def _records(document: str | bytes) -> list[dict[str, object]]:
    return json.loads(document)["videos"]


def test_eval_reads_a_dataset_and_its_list_at_an_s3_root_as_it_reads_them_locally(
    s3: str, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload(motion, "s3://data/motion")
    weights = motion.parent / "tiny.safetensors"
    local, remote = tmp_path / "local.json", "s3://data/results/eval.json"
    code, _, err = run_cli(capsys, "eval", "-D", "folder", "-r", motion, "-w", weights, "-o", local, "-j", "0")
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", "-D", "folder", "-r", "s3://data/motion", "-w", weights, "-o", remote)
    assert code == 0, err
    expected = _records(local.read_text())
    assert _records(storage.read_bytes(remote)) == expected and len(expected) == 4
    assert all(record["error"] is None for record in expected)

    # A list at a URL naming a video that is not there: that video's record says so, the others are scored.
    code, out, _ = run_cli(capsys, "eval", "-D", "csv", "--list", "s3://data/motion/val.csv", "-w", weights, "--json")
    assert code == 3
    records = _records(out)
    assert records[:4] == expected
    assert records[4]["video"] == "val/up/gone.mp4" and "does not exist" in str(records[4]["error"])

    # --resume continues a report kept at the URL: only the videos it lacks are scored.
    partial = "s3://data/results/partial.json"
    run_cli(capsys, "eval", "-D", "folder", "-r", "s3://data/motion", "-w", weights, "-o", partial, "--limit", "1")
    code, out, _ = run_cli(capsys, "eval", "-D", "folder", "-r", "s3://data/motion", "-w", weights, "-o", partial,
                           "--resume", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["summary"]["evaluated"] == 3
    assert _records(storage.read_bytes(partial)) == expected


def test_training_from_an_s3_root_is_the_run_on_the_local_files(
    s3: str, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload(motion, "s3://data/train-motion")
    flags = [*tiny_flags(), "--no-flip", "--workers", "0", "--epochs", "1", "--batch-size", "2", "--json"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for data, run in ((motion, tmp_path / "local"), ("s3://data/train-motion", tmp_path / "remote")):
            code, _, err = run_cli(capsys, "train", "--data", data, "-o", run, *flags)
            assert code == 0, err
    finally:
        torch.set_num_threads(threads)
    expected, actual = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("local", "remote"))
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    config = json.loads((tmp_path / "remote" / "config.json").read_text())
    assert config["data"] == "s3://data/train-motion"  # a URL is kept as it is, for --resume


def test_a_missing_video_at_a_url_is_reported_from_one_listing(s3: str, motion: Path) -> None:
    _upload(motion / "val", "s3://data/listing/val")
    storage.write_bytes("s3://data/listing/val/up/empty.mp4", b"")
    split = read_dataset("folder", "s3://data/listing", split="val")
    assert [sample.path.as_posix() for sample in split.samples][-2:] == ["val/up/0.mp4", "val/up/empty.mp4"]
    assert all(sample.url == f"s3://data/listing/{sample.path.as_posix()}" for sample in split.samples)
    from uniformer_cli.data.datasets import unavailable_videos

    assert unavailable_videos(split.samples) == [(Path("val/up/empty.mp4"), "empty file")]


def test_lists_and_weights_on_a_web_server(
    motion: Path, tmp_path: Path, local_hub: LocalHub, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = motion.parent / "tiny.safetensors"
    local = tmp_path / "local.json"
    run_cli(capsys, "eval", "-D", "csv", "--list", motion / "val.csv", "-w", weights, "-o", local)
    with http_server(motion.parent) as (url, sent):
        code, out, _ = run_cli(capsys, "eval", "-D", "csv", "--list", f"{url}/motion/val.csv", "-w", weights, "--json")
        assert code == 3 and sent  # the missing video, as locally
        records, expected = _records(out), _records(local.read_text())
        assert records[:4] == expected[:4]
        assert records[4]["video"] == expected[4]["video"] and "gone.mp4 does not exist" in str(records[4]["error"])
        # Weights named by URL: predict gives the local file's prediction.
        video = str(motion / "val/left/0.mp4")
        code, out, _ = run_cli(capsys, "predict", video, "-w", f"{url}/tiny.safetensors", "--json")
        assert code == 0
    code, expected, _ = run_cli(capsys, "predict", video, "-w", weights, "--json")
    assert json.loads(out)[0]["top_k"] == json.loads(expected)[0]["top_k"]


def test_weights_at_a_url_are_fetched_once_and_again_when_they_change(
    s3: str, motion: Path, local_hub: LocalHub, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = motion.parent / "tiny.safetensors"
    storage.write_bytes("s3://data/models/tiny.safetensors", weights.read_bytes())
    storage.write_bytes("s3://data/single/down.mp4", (motion / "val/down/0.mp4").read_bytes())
    video = "s3://data/single/down.mp4"  # a video at a URL too, read as the local file is
    expected = json.loads(run_cli(capsys, "predict", motion / "val/down/0.mp4", "-w", weights, "--json")[1])
    first = json.loads(run_cli(capsys, "predict", video, "-w", "s3://data/models/tiny.safetensors", "--json")[1])
    assert first[0]["video"] == video and first[0]["top_k"] == expected[0]["top_k"]
    copies = list((local_hub.home / "uniformer" / "downloads" / "urls").rglob("tiny.safetensors"))
    assert len(copies) == 1 and copies[0].read_bytes() == weights.read_bytes()
    stamp = copies[0].stat().st_mtime_ns
    again = json.loads(run_cli(capsys, "predict", video, "-w", "s3://data/models/tiny.safetensors", "--json")[1])
    assert again[0]["top_k"] == first[0]["top_k"] and copies[0].stat().st_mtime_ns == stamp  # not fetched again
    torch.manual_seed(4)
    other = create_model(TINY_CONFIG.replace(num_classes=len(CLASSES)))
    replaced = save_weights(motion.parent / "other.safetensors", other, other.config, labels=CLASSES, protocol=PROTOCOL)
    storage.write_bytes("s3://data/models/tiny.safetensors", replaced.read_bytes())
    run_cli(capsys, "predict", video, "-w", "s3://data/models/tiny.safetensors", "--json")
    assert copies[0].read_bytes() == replaced.read_bytes()
    code, _, err = run_cli(capsys, "predict", video, "-w", "s3://data/models/none.safetensors")
    assert code == 1 and err.count("error:") == 1 and "does not exist" in err


def test_features_of_videos_in_an_s3_folder(
    s3: str, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload(motion / "val", "s3://data/clips")
    weights = motion.parent / "tiny.safetensors"
    local, remote = tmp_path / "local.safetensors", tmp_path / "remote.safetensors"
    run_cli(capsys, "features", motion / "val", "-w", weights, "-o", local)
    run_cli(capsys, "features", "s3://data/clips", "-w", weights, "-o", remote)
    expected, actual = read_features(local), read_features(remote)
    assert actual.videos == [
        f"s3://data/clips/{Path(v).relative_to(motion / 'val').as_posix()}" for v in expected.videos
    ]
    assert torch.equal(actual.features, expected.features)


def test_outputs_that_must_be_local_refuse_a_url(motion: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = motion.parent / "tiny.safetensors"
    code, _, err = run_cli(capsys, "features", motion / "val", "-w", weights, "-o", "s3://data/f.safetensors")
    assert code == 2 and "written to a local file" in err
    code, _, err = run_cli(capsys, "train", "--data", motion, *tiny_flags(), "-o", "s3://data/runs/a", "--dry-run")
    assert code == 1 and err.count("error:") == 1 and "local or shared file system" in err
    assert not Path("s3:").exists()  # nothing written under a mangled local name
