"""`train`, `eval` and `features` on packed shards (`uniformer data pack`) against the same commands on
the original layout: the same per-video records, the same features, the same training run where the
visiting order is the same, and an exact resume."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from hypothesis import given
from hypothesis import strategies as st
from motion_data import DIRECTIONS, motion_dataset, tiny_flags
from tiny_training import TINY_CONFIG

from uniformer_cli.cli.app import main
from uniformer_cli.data import shards
from uniformer_cli.data.datasets import read_packed
from uniformer_cli.engine import train as train_engine
from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.engine.distributed import Session
from uniformer_cli.engine.features import read_features
from uniformer_cli.engine.packing import PackRequest, pack
from uniformer_cli.engine.train_data import training_order
from uniformer_cli.models import create_model
from uniformer_cli.weights import save_weights

CLASSES = sorted(DIRECTIONS)
PROTOCOL = {"frames": 8, "stride": 2, "sampling": "dense", "clips": 2, "crops": 3, "size": 32, "channel_order": "rgb"}
# Every random draw of training on: augmentation, mixup, drop path.
TRAIN_FLAGS = [
    *tiny_flags(), "--no-flip", "--workers", "0", "--aug", "official", "--randaug", "rand-m7-n2-mstd0.5",
    "--mixup", "--drop-path", "0.1", "--weight-decay", "0.01", "--epochs", "2", "--batch-size", "2",
    "--log-every", "1", "--json",
]  # fmt: skip


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 training videos and 2 validation videos per class, as class folders."""
    return motion_dataset(tmp_path_factory.mktemp("packed_runs") / "motion", 3, 2)


@pytest.fixture(scope="module")
def packed(motion: Path) -> Path:
    destination = motion.parent / "shards"
    pack(PackRequest(motion, destination, shard_bytes=30_000))
    for split in ("train", "val"):
        assert len(shards.open_packed(destination, split).shards) >= 2  # several shards to split and order
    return destination


@pytest.fixture(scope="module")
def weights(motion: Path) -> Path:
    torch.manual_seed(7)
    model = create_model(TINY_CONFIG.replace(num_classes=len(CLASSES)))
    return save_weights(motion.parent / "tiny.safetensors", model, model.config, labels=CLASSES, protocol=PROTOCOL)


def _records(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text())["videos"]


def test_eval_from_shards_gives_the_records_of_the_original_layout(
    motion: Path, packed: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose, from_shards, subset = tmp_path / "loose.json", tmp_path / "packed.json", tmp_path / "subset.json"
    common = ["--weights", weights, "--batch-size", "12"]
    assert (
        run_cli(capsys, "eval", "--dataset", "folder", "--root", motion, *common, "--workers", "0", "-o", loose)[0] == 0
    )
    # Two workers: each fetches its batches' samples from the shards itself.
    assert run_cli(capsys, "eval", "--data", packed, *common, "--workers", "2", "-o", from_shards)[0] == 0
    expected, actual = _records(loose), _records(from_shards)
    assert len(expected) == 4 * 2 and all(record["error"] is None for record in expected)
    assert actual == expected
    summary = json.loads(from_shards.read_text())["summary"]
    assert summary["layout"] == "packed shards (uniformer data pack)"
    assert summary["videos_sha256"] == json.loads(loose.read_text())["summary"]["videos_sha256"]

    # Some of the shards, named by a brace pattern: their videos only, with the same records.
    first = shards.open_packed(packed, "val").shards[0]
    pattern = f"{packed}/val-{{000000..{0:06d}}}.tar"
    assert run_cli(capsys, "eval", "--data", pattern, *common, "--workers", "0", "-o", subset)[0] == 0
    assert _records(subset) == expected[: len(first)]


def test_features_from_shards_equal_those_of_the_original_layout(
    motion: Path, packed: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose, from_shards = tmp_path / "loose.safetensors", tmp_path / "packed.safetensors"
    run_cli(capsys, "features", "--dataset", "folder", "--root", motion, "--weights", weights, "-o", loose)
    run_cli(capsys, "features", "--data", packed, "--weights", weights, "-o", from_shards, "--workers", "1")
    expected, actual = read_features(loose), read_features(from_shards)
    assert actual.videos == expected.videos and actual.labels == expected.labels
    assert torch.equal(actual.features, expected.features)


def test_packed_data_is_refused_with_a_layout_option(
    packed: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "eval", "--data", packed, "--root", packed, "--weights", weights)
    assert code == 1 and err.count("error:") == 1 and "drop --root and --list" in err
    code, _, err = run_cli(capsys, "eval", "--data", packed, "--dataset", "k400", "--weights", weights)
    assert code == 1 and "holds a packed folder dataset, not k400" in err
    code, _, err = run_cli(capsys, "eval", "--data", f"{packed}/train-000000.tar", "--weights", weights)
    assert code == 1 and "are train shards, not val" in err
    code, out, err = run_cli(capsys, "eval", "--weights", weights)  # neither: a command-line error
    assert (code, out) == (2, "") and err.count("\n") == 1 and "--dataset" in err and "--data" in err


@given(st.integers(0, 200), st.integers(1, 9))
def test_ranks_share_a_list_in_contiguous_runs_covering_it_once(count: int, world: int) -> None:
    parts = [Session(rank, world, torch.device("cpu")).share(range(count)) for rank in range(world)]
    assert [item for part in parts for item in part] == list(range(count))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _loose_list(motion: Path, packed: Path, split: str, destination: Path) -> Path:
    """A `path,label` CSV of the original files in the packed order of `split`."""
    with destination.open("w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(["path", "label"])
        for sample in read_packed(packed, split).samples:
            rows.writerow([sample.path.as_posix(), CLASSES[sample.label]])
    return destination


def _final(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if record["event"] == "step"]


def _train(capsys: pytest.CaptureFixture[str], *args: object) -> dict[str, object]:
    code, out, err = run_cli(capsys, "train", *args)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread for every run of this module: tiny models train fastest so, and runs compared
    bit for bit must sum in the same order."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def packed_run(packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run on the shards (12 training videos: 6 steps of 2 per epoch, 2 epochs)."""
    run = tmp_path_factory.mktemp("packed_run") / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(packed), "-o", str(run), *TRAIN_FLAGS])
    assert exit_info.value.code in (0, None)
    return run


@pytest.mark.slow
def test_training_on_shards_equals_training_on_the_files_in_the_same_order(
    motion: Path,
    packed: Path,
    packed_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Packed training visits shard by shard (`shards.epoch_order`), loose training a plain permutation:
    given the packed order, the files listed in packed order give the same batches, hence the same run."""
    train_list = _loose_list(motion, packed, "train", tmp_path / "train.csv")
    val_list = _loose_list(motion, packed, "val", tmp_path / "val.csv")
    sizes = [len(shard) for shard in shards.open_packed(packed, "train").shards]
    monkeypatch.setattr(
        train_engine, "training_order", lambda split: lambda seed, epoch: shards.epoch_order(sizes, seed, epoch)
    )
    loose = tmp_path / "loose"
    _train(capsys, "--dataset", "csv", "--data", motion, "--train-list", train_list, "--val-list", val_list,
           "-o", loose, *TRAIN_FLAGS)  # fmt: skip
    assert _losses(loose) == _losses(packed_run) and len(set(_losses(loose))) > 1
    expected, actual = _final(packed_run), _final(loose)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


@pytest.mark.slow
def test_a_run_on_shards_stopped_mid_epoch_resumes_to_the_same_weights(
    packed: Path, packed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = tmp_path / "stopped"
    first = _train(capsys, "--data", packed, "-o", stopped, *TRAIN_FLAGS, "--max-steps", "4")
    assert first["steps"] == 4 and first["stopped_early"]
    resumed = _train(capsys, "--resume", stopped, "--workers", "2", "--log-every", "1", "--json")
    assert resumed["steps"] == 12 and not resumed["stopped_early"]
    assert _losses(stopped) == _losses(packed_run)
    expected, actual = _final(packed_run), _final(stopped)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_an_epoch_of_packed_training_reads_each_sample_once_in_shard_runs(packed: Path) -> None:
    split = read_packed(packed, "train")
    order = training_order(split)
    assert order is not None
    visited = order(0, 3)
    assert sorted(visited.tolist()) == list(range(len(split.samples)))
    shard_of = [split.samples[index].member.shard for index in visited]  # type: ignore[union-attr]
    runs = [shard_of[0]] + [b for a, b in itertools.pairwise(shard_of) if a != b]
    assert len(runs) == len(set(runs)) == len(split.shard_sizes or ())
    assert not np.array_equal(visited, order(0, 4))
