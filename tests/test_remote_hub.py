"""Datasets, lists, shards, videos and weights in a Hugging Face dataset repository (`hf://datasets/...`),
read through huggingface_hub's HfFileSystem from the local Hub server (tests/hub_server.py, which answers
the tree listings, paths-info and ranged downloads HfFileSystem asks for, as the Hub does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli
from hub_server import LocalHub
from motion_data import DIRECTIONS, listed_motion_dataset, same_frames

from uniformer_cli.data import shards, storage
from uniformer_cli.data.datasets import read_dataset, read_packed
from uniformer_cli.engine.packing import PackRequest, pack
from uniformer_cli.errors import DatasetError

CLASSES = sorted(DIRECTIONS)
PROTOCOL = {"frames": 8, "stride": 2, "sampling": "dense", "clips": 1, "crops": 1, "size": 32, "channel_order": "rgb"}
REPO = "user/motion"
ROOT = f"hf://datasets/{REPO}"


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders (1 training, 1 validation video per class), a CSV list of the validation videos with
    one that does not exist, a tiny model file beside them, and shards of the folders."""
    root = listed_motion_dataset(tmp_path_factory.mktemp("remote_hub") / "motion", 1, PROTOCOL)
    pack(PackRequest(root, root.parent / "shards", shard_bytes=15_000))
    return root


def _serve(local_hub: LocalHub, folder: Path, prefix: str = "") -> None:
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        local_hub.server.add_file(REPO, prefix + file.relative_to(folder).as_posix(), file, repo_type="dataset")


def _records(document: str) -> list[dict[str, object]]:
    """The per-video records, without where the weights came from."""
    return [
        {k: v for k, v in record.items() if k not in ("model", "weights")} for record in json.loads(document)["videos"]
    ]


def test_eval_and_predict_read_a_hub_dataset_as_they_read_the_local_files(
    local_hub: LocalHub, motion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve(local_hub, motion)
    local_hub.server.add_file(REPO, "tiny.safetensors", motion.parent / "tiny.safetensors", repo_type="dataset")
    local_hub.server.tree_page_size = 3  # listings come in pages, followed through their Link headers
    weights, remote_weights = motion.parent / "tiny.safetensors", f"{ROOT}/tiny.safetensors"
    code, expected, err = run_cli(capsys, "eval", "-D", "folder", "-r", motion, "-w", weights, "--json", "-j", "0")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", "-D", "folder", "-r", ROOT, "-w", remote_weights, "--json")
    assert code == 0, err
    assert _records(out) == _records(expected) and len(_records(out)) == 4
    split = read_dataset("folder", ROOT, split="val")
    assert [sample.url for sample in split.samples] == [f"{ROOT}/val/{name}/0.mp4" for name in CLASSES]

    # A list in the repository naming a video that is not there: its record says so, the others are scored.
    code, out, _ = run_cli(capsys, "eval", "-D", "csv", "--list", f"{ROOT}/val.csv", "-w", weights, "--json")
    assert code == 3
    records = _records(out)
    assert records[:4] == _records(expected)
    assert records[4]["video"] == "val/up/gone.mp4" and "does not exist" in str(records[4]["error"])

    # One video named by its hf:// URL gives the local file's prediction.
    code, local, _ = run_cli(capsys, "predict", motion / "val/left/0.mp4", "-w", weights, "--json")
    code, out, err = run_cli(capsys, "predict", f"{ROOT}/val/left/0.mp4", "-w", remote_weights, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["top_k"] == json.loads(local)[0]["top_k"]
    assert json.loads(out)[0]["video"] == f"{ROOT}/val/left/0.mp4"


def test_shards_in_a_hub_dataset_are_read_in_ranges(local_hub: LocalHub, motion: Path) -> None:
    local_pack = motion.parent / "shards"
    _serve(local_hub, local_pack, "shards/")
    for split in ("train", "val"):
        remote, local = read_packed(f"{ROOT}/shards", split), read_packed(local_pack, split)
        assert [(s.path, s.label) for s in remote.samples] == [(s.path, s.label) for s in local.samples]
        assert same_frames(remote.samples, local.samples)
    member = read_packed(f"{ROOT}/shards", "val").samples[0].member
    assert member is not None
    local_hub.server.sent.clear()
    data = shards.read_member(member)
    assert data.video == shards.read_member(read_packed(local_pack, "val").samples[0].member).video  # type: ignore[arg-type]
    shard_bytes = (local_pack / storage.name_of(member.shard)).stat().st_size
    assert local_hub.server.sent == [member.size] and member.size < shard_bytes  # one range, not the shard
    last = max(int(file.stem.split("-")[1]) for file in local_pack.glob("val-*.tar"))
    batch = read_packed(f"{ROOT}/shards/val-{{000000..{last:06d}}}.tar")  # shards named by a brace pattern
    assert [sample.path for sample in batch.samples] == [s.path for s in read_packed(local_pack, "val").samples]


def test_missing_repositories_revisions_and_files_are_one_line_errors(local_hub: LocalHub, motion: Path) -> None:
    local_hub.server.add_file(REPO, "val.csv", motion / "val.csv", repo_type="dataset")
    assert storage.exists(f"{ROOT}/val.csv") and not storage.exists(f"{ROOT}/none.csv")
    assert storage.read_bytes(f"{ROOT}/val.csv", 4, 10) == (motion / "val.csv").read_bytes()[4:14]
    for location in (f"{ROOT}/none.csv", "hf://datasets/user/nothing/val.csv", f"hf://datasets/{REPO}@v9/val.csv"):
        with pytest.raises(DatasetError) as caught:
            storage.read_bytes(location)
        assert "\n" not in str(caught.value) and location in str(caught.value)
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset("folder", "hf://datasets/user/nothing", split="val")
