"""Every long step reports its progress (`events.Progress`) for the CLI to draw (issue 25): explain, export,
`flops --bench` and downloads; and `-v` says what runs and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import run_cli
from parity import FIXTURES, fixture_model
from synthetic_video import write_video

from uniformer_cli.engine import explain, export, flops
from uniformer_cli.engine.inference import InferenceRequest
from uniformer_cli.events import Progress
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights

PROTOCOL = ViewProtocol(frames=4, stride=2, clips=2, crops=1, size=32)


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


def test_export_reports_each_step(weights: Path, tmp_path: Path) -> None:
    heard: list[Progress] = []
    export.export_model(InferenceRequest(weights=weights), "onnx", tmp_path, progress=heard.append)
    assert_counts_up_to_the_end(heard, "exporting")
    steps = [event.detail.get("step") for event in heard if event.task == "exporting"][:-1]
    assert steps == ["load the model", "export to ONNX", "check at batch 1", "check at batch 3", "write"]


def test_flops_bench_reports_every_forward_pass(weights: Path) -> None:
    heard: list[Progress] = []
    workloads = flops.select_workloads(arch="xxs", frames=4, size=32)
    settings = flops.BenchSettings(device="cpu", batch_size=1, warmup=2, runs=3)
    flops.cost_rows(workloads, bench=settings, progress=heard.append)
    passes = [event for event in heard if event.task == "forward passes"]
    assert all(event.sub for event in passes)
    # 2 warm-up, 3 timed and the one the CPU memory profile runs.
    assert [event.done for event in passes] == list(range(7)) and passes[-1].finished
    assert [event.detail.get("pass") for event in passes[1:]] == ["warm-up"] * 2 + ["timed"] * 3 + ["memory"]
    assert counts(heard, "benchmarking") == [0, 1]


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
