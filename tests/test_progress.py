"""Every long step reports its progress (`events.Progress`) for the CLI to draw (issue 25): explain, export,
`flops --bench` and downloads; and `-v` says what runs and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import run_cli
from parity import FIXTURES, fixture_model
from synthetic_video import write_video

from uniformer_cli.engine import explain, export, flops
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.errors import UniformerError
from uniformer_cli.events import Progress
from uniformer_cli.models import ModelConfig
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights

PROTOCOL = ViewProtocol(frames=4, stride=2, clips=2, crops=1, size=32)
TINY = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=10)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("progress")
    labels = [f"c{index}" for index in range(10)]
    return save_weights(
        folder / "small.safetensors", fixture_model("small"), FIXTURES["small"], labels, PROTOCOL.as_dict()
    )


def counts(heard: list[Progress], task: str) -> list[int]:
    return [event.done for event in heard if event.task == task]


def assert_counts_up_to_the_end(heard: list[Progress], task: str) -> None:
    done = counts(heard, task)
    total = next(event.total for event in heard if event.task == task)
    assert done == list(range(total + 1)), done  # each step once, in order, then finished
    assert heard[-1].task == task and heard[-1].finished


def test_explain_reports_each_step(weights: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", 24)
    heard: list[Progress] = []
    request = explain.ExplainRequest(video, tmp_path / "e.gif", InferenceRequest(weights=weights, device="cpu"))
    explain.explain_video(request, heard.append)
    assert_counts_up_to_the_end(heard, "explaining")
    steps = [event.detail.get("step") for event in heard if event.task == "explaining"][:-1]
    assert steps == list(explain.EXPLAIN_STEPS)


def test_export_reports_each_step_and_replaces_a_file_only_when_forced(weights: Path, tmp_path: Path) -> None:
    heard: list[Progress] = []
    (tmp_path / "small.onnx").write_bytes(b"an earlier export")
    with pytest.raises(UniformerError, match="already exists: pass --force"):
        export.export_model(InferenceRequest(weights=weights), "onnx", tmp_path, progress=heard.append)
    assert counts(heard, "exporting") == [0] and (tmp_path / "small.onnx").read_bytes() == b"an earlier export"
    heard.clear()
    export.export_model(InferenceRequest(weights=weights), "onnx", tmp_path, force=True, progress=heard.append)
    assert_counts_up_to_the_end(heard, "exporting")
    steps = [event.detail.get("step") for event in heard if event.task == "exporting"][:-1]
    assert steps == ["load the model", "export to ONNX", "check at batch 1", "check at batch 3", "write"]
    assert (tmp_path / "small.onnx").read_bytes()[:4] != b"an e"


def test_flops_bench_reports_every_forward_pass() -> None:
    heard: list[Progress] = []
    settings = flops.BenchSettings(device="cpu", batch_size=1, warmup=1, runs=2)
    flops.benchmark(TINY, 4, 32, settings, heard.append)
    assert all(event.task == "forward passes" and event.sub for event in heard)
    # 1 warm-up, 2 timed and the one the CPU memory profile runs.
    assert [event.done for event in heard] == list(range(5)) and heard[-1].finished
    assert [event.detail.get("pass") for event in heard[1:]] == ["warm-up", "timed", "timed", "memory"]


def test_verbose_says_what_runs_and_why(capsys: pytest.CaptureFixture[str], weights: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", 24)
    code, _, err = run_cli(capsys, "predict", video, "-w", weights, "--frames", "8", "-d", "cpu", "-v")
    assert code == 0, err
    text = " ".join(err.split())
    assert f"weights: {weights} (a local file)" in text
    assert "protocol: 8x2, 2x1 views, 32px, RGB (recorded in the weights file; changed by --frames 8)" in text
    assert "device: cpu (--device cpu)" in text
    assert "precision: auto: exact float32 on CPU; engine: torch (auto:" in text
    assert "threads: torch" in text and "model ready in" in text
    assert f"{video}: decoded and preprocessed in" in text and "(2 views), model" in text
    code, _, err = run_cli(capsys, "predict", video, "-w", weights, "-d", "cpu")
    assert code == 0 and "protocol:" not in err and "threads:" not in err  # debug lines only with -v
