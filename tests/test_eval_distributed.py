"""`uniformer eval` under torchrun with 2 CPU processes (gloo): each rank scores a shard, rank 0 gathers,
and the numbers and per-video predictions equal a single-process run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
from eval_data import colour, colour_model, flat_video
from launch import run_uniformer

from uniformer_cli.engine.features import read_features
from uniformer_cli.weights import save_weights

PROTOCOL = {"frames": 4, "stride": 2, "sampling": "dense", "clips": 2, "crops": 1, "size": 32, "channel_order": "rgb"}
NAMES = [f"class{k}" for k in range(8)]


def uniformer_eval(*args: str | Path, processes: int = 1) -> subprocess.CompletedProcess[str]:
    return run_uniformer("eval", "--device", "cpu", "--workers", "0", *map(str, args), processes=processes, timeout=240)


def test_torchrun_two_processes_equal_one(tmp_path: Path) -> None:
    # 7 videos (one unreadable): shards of 4 and 3, so padding duplicates would change the numbers.
    values = [(-1.5, 0), (0.0, 3), (0.5, 2), (1.0, 5), (2.0, 6), (-1.0, 1)]
    lines = []
    for number, (value, label) in enumerate(values):
        flat_video(tmp_path / f"{number}.mp4", colour(value), size=(64, 48))
        lines.append(f"{number}.mp4,{label}")
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
    lines.insert(3, "broken.mp4,4")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    model = colour_model()
    weights = save_weights(tmp_path / "tiny.safetensors", model, model.config, labels=NAMES, protocol=PROTOCOL)
    common = ("--dataset", "csv", "--list", tmp_path / "list.csv", "--weights", weights)

    # Exit status 3: one video failed, the others were scored and written; a torchrun run exits 0, as
    # torchrun reports any other status as a crash of its own.
    single = uniformer_eval(*common, "-o", tmp_path / "one.json")
    assert single.returncode == 3, single.stderr
    double = uniformer_eval(*common, "-o", tmp_path / "two.json", processes=2)
    assert double.returncode == 0, double.stderr

    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert (one["summary"]["processes"], two["summary"]["processes"]) == (1, 2)
    for key in ("top1", "top5", "mean_class", "videos", "counted", "failures", "evaluated"):
        assert one["summary"][key] == two["summary"][key], key
    assert two["summary"]["videos"] == 7 and two["summary"]["failures"] == 1
    assert [video["video"] for video in two["videos"]] == [line.split(",")[0] for line in lines]
    for a, b in zip(one["videos"], two["videos"], strict=True):
        assert (a["video"], a["true_index"], a["top5"], a["error"] is None) == (
            b["video"],
            b["true_index"],
            b["top5"],
            b["error"] is None,
        )
    # Only rank 0 prints the table.
    assert double.stdout.count("top-1") == 1


def test_features_under_torchrun_equal_one_process(tmp_path: Path) -> None:
    """`uniformer features` shards like eval: 2 gloo ranks write the same rows, in the same order, and
    list the same failure as one process."""
    for number, value in enumerate((-1.5, 0.0, 0.5, 1.0, 2.0)):
        flat_video(tmp_path / "videos" / f"{number}.mp4", colour(value), size=(64, 48))
    (tmp_path / "videos" / "2b.mp4").write_bytes(b"not a video" * 50)
    model = colour_model()
    weights = save_weights(tmp_path / "tiny.safetensors", model, model.config, labels=NAMES, protocol=PROTOCOL)
    common = ("features", tmp_path / "videos", "--weights", weights, "--device", "cpu", "--workers", "0")
    single = run_uniformer(*map(str, common), "-o", str(tmp_path / "one.safetensors"))
    assert single.returncode == 3, single.stderr
    double = run_uniformer(*map(str, common), "-o", str(tmp_path / "two.safetensors"), processes=2)
    assert double.returncode == 0, double.stderr
    one, two = read_features(tmp_path / "one.safetensors"), read_features(tmp_path / "two.safetensors")
    assert one.videos == two.videos and len(one.videos) == 5
    assert [failure.video for failure in two.failures] == [str(tmp_path / "videos" / "2b.mp4")]
    assert torch.allclose(one.features, two.features, atol=1e-6)
