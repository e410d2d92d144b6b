"""Packed datasets on remote storage, against real servers on 127.0.0.1: an S3-compatible server (moto
in server mode), a GCS emulator and an HTTP server that answers byte ranges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli
from motion_data import same_frames
from storage_servers import http_server
from synthetic_video import numbered_frame, write_video

from uniformer_cli.data import shards, storage
from uniformer_cli.data.datasets import read_packed
from uniformer_cli.engine.doctor import CheckRequest, check
from uniformer_cli.engine.packing import PackRequest, pack
from uniformer_cli.errors import DatasetError

pytest.importorskip("s3fs")  # the remote extra, installed by the test extra


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote_data")
    for split, count in (("train", 3), ("val", 2)):
        for label, name in enumerate(("left", "right")):
            (root / split / name).mkdir(parents=True)
            for number in range(count):
                offset = 50 * label + 7 * number + 3 * len(split)
                write_video(
                    root / split / name / f"{number}.mp4", 9, frame=lambda i, o=offset: numbered_frame(i + o, 32, 48)
                )
    return root


@pytest.fixture(scope="module")
def local_pack(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    destination = tmp_path_factory.mktemp("local_pack") / "shards"
    pack(PackRequest(dataset, destination, shard_bytes=15_000))
    return destination


def test_pack_to_s3_and_read_back_equals_the_local_pack(s3: str, dataset: Path, local_pack: Path) -> None:
    report = pack(PackRequest(dataset, "s3://data/k", shard_bytes=15_000))
    assert report.splits["train"]["samples"] == 6
    import boto3

    objects = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="data", Prefix="k/")["Contents"]
    names = sorted(item["Key"] for item in objects)
    assert names == sorted(f"k/{file.name}" for file in local_pack.iterdir())
    for name in names:  # byte for byte the shards a local pack writes
        body = boto3.client("s3", endpoint_url=s3).get_object(Bucket="data", Key=name)["Body"].read()
        assert body == (local_pack / name.removeprefix("k/")).read_bytes()
    for split in ("train", "val"):
        remote, local = read_packed("s3://data/k", split), read_packed(local_pack, split)
        assert [(s.path, s.label) for s in remote.samples] == [(s.path, s.label) for s in local.samples]
        assert same_frames(remote.samples, local.samples)
    batch = read_packed("s3://data/k/train-{000000..000001}.tar")
    members = [sample.member for sample in batch.samples]
    assert [m.key for m in members if m] and shards.read_members(members) == [  # type: ignore[arg-type]
        shards.read_member(member) for member in members if member
    ]


def test_pack_to_gcs_and_read_back_equals_the_local_pack(gcs: str, dataset: Path, local_pack: Path) -> None:
    pack(PackRequest(dataset, "gs://data/k", shard_bytes=15_000))
    assert sorted(storage.find_files("gs://data/k")) == sorted(file.name for file in local_pack.iterdir())
    for name in storage.find_files("gs://data/k"):  # byte for byte the shards a local pack writes
        assert storage.read_bytes(f"gs://data/k/{name}") == (local_pack / name).read_bytes()
    for split in ("train", "val"):
        remote, local = read_packed("gs://data/k", split), read_packed(local_pack, split)
        assert [(s.path, s.label) for s in remote.samples] == [(s.path, s.label) for s in local.samples]
        assert same_frames(remote.samples, local.samples)


def test_check_and_pack_commands_take_s3_urls(capsys: pytest.CaptureFixture[str], s3: str, dataset: Path) -> None:
    code, _, err = run_cli(capsys, "data", "pack", dataset, "s3://data/cli", "--shard-size", "20KB")
    assert code == 0, err
    code, out, err = run_cli(capsys, "data", "check", "s3://data/cli", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["videos"] == 10 and document["problems"] == 0
    code, _, err = run_cli(capsys, "data", "pack", dataset, "s3://data/cli")
    assert code == 1 and "already holds a packed dataset" in err


def test_missing_bucket_and_objects_are_one_line_errors(s3: str) -> None:
    with pytest.raises(DatasetError, match=r"holds no index\.json"):
        read_packed("s3://data/nothing-here", "val")
    with pytest.raises(DatasetError) as caught:
        read_packed("s3://no-such-bucket/k", "val")
    assert "\n" not in str(caught.value)


def test_http_reads_only_the_ranges_it_needs(local_pack: Path) -> None:
    with http_server(local_pack.parent) as (url, sent):
        remote = read_packed(f"{url}/shards", "val")
        local = read_packed(local_pack, "val")
        sent.clear()
        first = remote.samples[0]
        assert first.member is not None
        data = shards.read_member(first.member)
        assert data.video == shards.read_member(local.samples[0].member).video  # type: ignore[arg-type]
        shard_bytes = (local_pack / storage.name_of(first.member.shard)).stat().st_size
        assert 0 < sum(sent) == first.member.size < shard_bytes  # a ranged read, not the whole shard
        assert same_frames(remote.samples, local.samples)
        report = check(CheckRequest(f"{url}/shards"))
        assert report.problems == 0 and len(report.videos) == 10


def test_only_storage_protocols_are_accepted() -> None:
    for location in ("pipe://cat /etc/passwd", "ftp://host/x", "zip://a.zip"):
        with pytest.raises(DatasetError, match="unsupported protocol"):
            storage.read_bytes(location)
    with pytest.raises(DatasetError, match="reads only packed datasets"):
        check(CheckRequest("s3://data/loose-videos", dataset="folder"))
