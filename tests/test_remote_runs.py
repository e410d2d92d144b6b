"""Loose datasets, lists, videos, weights and outputs at storage URLs, against real servers on 127.0.0.1
(moto's S3 server, a ranged HTTP server): every command reads them as it reads local files, and gives
the same records."""

from __future__ import annotations

import json
import logging
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from hub_server import LocalHub
from motion_data import DIRECTIONS, listed_motion_dataset, tiny_flags
from storage_servers import http_server
from synthetic_video import shifted_mkv, write_video
from tiny_training import TINY_CONFIG

from uniformer_cli.data import storage, video
from uniformer_cli.data.datasets import read_dataset
from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.engine.features import read_features, write_features
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


def test_eval_and_features_with_a_dataset_and_outputs_on_gcs(
    gcs: str, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload(motion, "gs://data/motion")
    weights = motion.parent / "tiny.safetensors"
    local = tmp_path / "local.json"
    code, _, err = run_cli(capsys, "eval", "-D", "folder", "-r", motion, "-w", weights, "-o", local, "-j", "0")
    assert code == 0, err
    code, _, err = run_cli(
        capsys, "eval", "-D", "folder", "-r", "gs://data/motion", "-w", weights, "-o", "gs://data/e.json"
    )
    assert code == 0, err
    assert _records(storage.read_bytes("gs://data/e.json")) == _records(local.read_text())
    run_cli(capsys, "features", motion / "val", "-w", weights, "-o", tmp_path / "local.safetensors")
    code, _, err = run_cli(capsys, "features", "gs://data/motion/val", "-w", weights, "-o", "gs://data/f.safetensors")
    assert code == 0, err
    (tmp_path / "remote.safetensors").write_bytes(storage.read_bytes("gs://data/f.safetensors"))
    expected, actual = read_features(tmp_path / "local.safetensors"), read_features(tmp_path / "remote.safetensors")
    assert torch.equal(actual.features, expected.features) and len(actual.videos) == 4


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


def _keys(endpoint: str, prefix: str) -> list[str]:
    import boto3

    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="data", Prefix=prefix)
    return sorted(item["Key"].removeprefix(prefix) for item in listing.get("Contents", []))


def test_features_written_to_an_s3_url_equal_the_local_file_and_resume_there(
    s3: str, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = motion.parent / "tiny.safetensors"
    local = tmp_path / "local.safetensors"
    run_cli(capsys, "features", motion / "val", "-w", weights, "-o", local)
    for output in ("s3://data/features/val.safetensors", "s3://data/features/val.npy"):
        code, out, err = run_cli(capsys, "features", motion / "val", "-w", weights, "-o", output, "--json")
        assert code == 0, err
        assert json.loads(out)["output"] == output
        copy = tmp_path / storage.name_of(output)
        for name in _keys(s3, "features/"):
            if name.startswith(copy.stem):
                (tmp_path / name).write_bytes(storage.read_bytes(f"s3://data/features/{name}"))
        assert torch.equal(read_features(copy).features, read_features(local).features)
    assert _keys(s3, "features/") == ["val.json", "val.npy", "val.safetensors"]  # no checkpoint, no temporary
    code, _, err = run_cli(capsys, "features", motion / "val", "-w", weights, "-o", "s3://data/features/val.npy")
    assert code == 1 and err.count("error:") == 1 and "val.npy and s3://data/features/val.json already exist" in err

    # A checkpoint an interrupted run uploaded: --resume fetches it and computes only the videos it lacks.
    first = read_features(local)
    partial = replace(first, features=first.features[:2], videos=first.videos[:2], labels=None)
    write_features(tmp_path / "partial.safetensors", partial, final=False)
    storage.write_bytes("s3://data/resumed/val.partial.safetensors", (tmp_path / "partial.safetensors").read_bytes())
    output = "s3://data/resumed/val.npy"
    code, out, err = run_cli(capsys, "features", motion / "val", "-w", weights, "-o", output, "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["computed"] == len(first.videos) - 2
    assert _keys(s3, "resumed/") == ["val.json", "val.npy"]  # the checkpoint is gone once the output is there


def test_a_training_run_at_an_s3_url_uploads_whole_files_and_resumes_from_there(
    s3: str, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*tiny_flags(), "--no-flip", "--workers", "0", "--batch-size", "2", "--json"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, _, err = run_cli(capsys, "train", "--data", motion, "-o", tmp_path / "local", *flags, "--epochs", "2")
        assert code == 0, err
        url = "s3://data/runs/a"
        # Stopped inside the second epoch (4 steps an epoch), after the first one's validation.
        code, out, err = run_cli(
            capsys, "train", "--data", motion, "-o", url, *flags, "--epochs", "2", "--max-steps", "6"
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["last_checkpoint"] == f"{url}/last.pt" and result["exported"] == f"{url}/best.safetensors"
        names = ["best.pt", "best.safetensors", "config.json", "last.pt", "metrics.jsonl"]
        assert [name for name in _keys(s3, "runs/a/") if name in names or name.startswith(".")] == names
        code, _, err = run_cli(capsys, "train", "--data", motion, "-o", url, *flags, "--epochs", "1")
        assert code == 1 and "already holds a run" in err
        code, out, err = run_cli(capsys, "train", "--resume", url, "--workers", "0", "--json")
        assert code == 0, err
    finally:
        torch.set_num_threads(threads)
    resumed = tmp_path / "resumed.pt"
    resumed.write_bytes(storage.read_bytes(f"{url}/last.pt"))
    expected, actual = load_checkpoint(tmp_path / "local" / "last.pt"), load_checkpoint(resumed)
    assert actual["step"] == expected["step"] and actual["config"]["output"] == url
    assert all(torch.equal(expected["model"][key], actual["model"][key]) for key in expected["model"])
    lines = storage.read_bytes(f"{url}/metrics.jsonl").decode().splitlines()
    local_lines = (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [json.loads(line)["step"] for line in local_lines]
    code, _, err = run_cli(capsys, "train", "--resume", "s3://data/runs/none", "--workers", "0")
    assert code == 1 and err.count("error:") == 1 and "does not exist" in err


def test_uploads_to_a_store_without_atomic_puts_go_through_a_temporary_name(tmp_path: Path) -> None:
    mirror = storage.Mirror((tmp_path / "store").as_uri())
    (mirror.folder / "last.pt").write_bytes(b"checkpoint")
    (mirror.folder / "metrics.jsonl").write_bytes(b"{}\n")
    assert mirror.push(last=("last.pt",)) == [mirror.remote(mirror.folder / n) for n in ("metrics.jsonl", "last.pt")]
    assert sorted(path.name for path in (tmp_path / "store").iterdir()) == ["last.pt", "metrics.jsonl"]
    assert mirror.push() == []  # nothing changed: nothing sent again
    (mirror.folder / "metrics.jsonl").write_bytes(b"{}\n{}\n")
    assert mirror.push() == [mirror.remote(mirror.folder / "metrics.jsonl")]
    folder = mirror.folder
    mirror.close()
    assert not folder.exists() and (tmp_path / "store" / "metrics.jsonl").read_bytes() == b"{}\n{}\n"


def test_a_long_video_at_a_url_is_decoded_in_ranges_in_memory_that_does_not_follow_its_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    noise = lambda index: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)  # noqa: E731 - hardly compresses
    path = write_video(tmp_path / "long.mp4", 5000, frame=noise, b_frames=0, gop=250)
    size = path.stat().st_size
    assert size > 8 * video.REMOTE_BLOCK_BYTES  # about 44 MB
    wanted = [0, 2600, 4999]
    with video.open_video(path, "pyav") as local:
        expected = local.read(wanted)
    video._note_streaming.cache_clear()
    with http_server(tmp_path) as (url, sent), caplog.at_level(logging.DEBUG, logger="uniformer_cli"):
        with video.open_video(f"{url}/long.mp4", "pyav") as remote:  # the clients' first use, not measured
            remote.read([0])
        video.torchcodec_usable()  # loads torchcodec (or notes that it cannot), not measured either
        for decoder in ("pyav", "auto", "torchcodec"):
            sent.clear()
            tracemalloc.start()
            try:
                with video.open_video(f"{url}/long.mp4", decoder) as remote:
                    frames, used = remote.read(wanted), remote.decoder
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert np.array_equal(frames, expected), decoder
            assert peak < size / 2, (decoder, peak, size)  # the whole file in memory would be more than that
            assert max(sent) <= video.REMOTE_BLOCK_BYTES + 2**16  # ranged requests, a block or so each
            if decoder == "auto":
                assert used == "pyav"  # decord would read the whole file into memory
    if video.decord_available():
        assert "videos at URLs are decoded by PyAV, which reads them in ranges" in caplog.text


def test_a_suspicious_video_at_a_url_is_decoded_in_a_checked_child_from_a_temporary_copy(tmp_path: Path) -> None:
    hostile = shifted_mkv(tmp_path / "late.mkv", 1e9)  # timestamps that would crash decord
    with video.open_video(hostile, "pyav", guarded=False) as direct:
        expected = direct.read([0, 5, 11])
    with http_server(tmp_path) as (url, _), video.open_video(f"{url}/late.mkv") as guarded:
        assert isinstance(guarded, video.CheckedVideo) and guarded.decoder == "pyav"
        assert np.array_equal(guarded.read([0, 5, 11]), expected)
        copy = guarded._copy
        assert copy is not None and copy.read_bytes() == hostile.read_bytes()
    assert not copy.exists()  # removed on close
