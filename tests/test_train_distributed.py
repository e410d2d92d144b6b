"""`torchrun` DDP training (gloo, CPU) against one process that sees the same batches.

Two processes with micro-batch B and one process accumulating two micro-batches of B see the same
videos in the same chunks (`GlobalBatchSampler`), draw the same augmentation, mixup and drop-path
randomness (keyed by sample and chunk, not by rank), normalise BatchNorm over the same chunks and
average the same gradients; only the floating-point summation order differs. So their loss curves
and weights must agree to float32 rounding, amplified a little by Adam over a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import run_uniformer
from motion_data import motion_dataset, tiny_flags

from uniformer_cli.engine.checkpointing import load_checkpoint

LOSS_TOLERANCE = 1e-5  # relative, per logged step (measured: 1.3e-7)
WEIGHT_TOLERANCE = 1e-5  # absolute, per parameter after 8 steps (measured: 8.8e-7)

FLAGS = [*tiny_flags(), "--no-flip", "--workers", "0", "--epochs", "2", "--log-every", "1"]
# The official augmentation chain and regularisers, so that every random draw is exercised.
FLAGS += ["--aug", "official", "--randaug", "rand-m7-n2-mstd0.5", "--mixup", "--drop-path", "0.1", "--lr", "2e-3"]


def train_args(data: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "-o", str(output), *FLAGS, *extra, "--json"]


def step_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if record["event"] == "step"]


def run(args: list[str], processes: int = 1) -> None:
    done = run_uniformer(*args, processes=processes)
    assert done.returncode == 0, done.stderr[-3000:]
    # Issue 12: gradients land in DDP's buckets without a layout copy.
    assert "Grad strides do not match bucket view strides" not in done.stderr


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, run folder) of an uninterrupted two-process run: 16 training videos, 4 steps of 4 per epoch."""
    root = tmp_path_factory.mktemp("ddp")
    data = motion_dataset(root / "motion", 4, 1)
    run(train_args(data, root / "ddp", "--batch-size", "2"), processes=2)
    return data, root / "ddp"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_accumulating_the_same_global_batch(
    ddp_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, ddp = ddp_run
    single = tmp_path / "single"
    run(train_args(data, single, "--batch-size", "2", "--accum-steps", "2"))

    for folder, processes in ((ddp, 2), (single, 1)):
        config = json.loads((folder / "config.json").read_text())
        assert config["world_size"] == processes
        assert config["batch_size"] * config["accum_steps"] * config["world_size"] == 4
    ddp_losses, single_losses = step_losses(ddp), step_losses(single)
    assert len(ddp_losses) == len(single_losses) == 8
    for step, (a, b) in enumerate(zip(ddp_losses, single_losses, strict=True), start=1):
        assert a == pytest.approx(b, rel=LOSS_TOLERANCE), f"step {step}: {a} vs {b}"
    assert len(set(ddp_losses)) > 1  # the model trained

    ddp_state, single_state = load_checkpoint(ddp / "last.pt"), load_checkpoint(single / "last.pt")
    parameters = {
        name for name, _ in ddp_state["model"].items() if "running_" not in name and "num_batches" not in name
    }
    worst = max((ddp_state["model"][name] - single_state["model"][name]).abs().max().item() for name in parameters)
    assert worst <= WEIGHT_TOLERANCE


# `uniformer train` in which rank 1 alone gets SIGTERM a few modules into its third training forward
# (found by a hook counting the forwards, not by timing); rank 0 never gets a signal.
SIGNAL_ONE_RANK = """
import os
import signal
import sys

import torch

from uniformer_cli.cli.app import main
from uniformer_cli.engine.train import TrainForward

forwards = modules = 0


def count(module, args):
    global forwards, modules
    if isinstance(module, TrainForward):
        forwards, modules = forwards + 1, 0
    elif forwards == 3:
        modules += 1
        if modules == 5 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    torch.nn.modules.module.register_module_forward_pre_hook(count)
    main(sys.argv[1:])
"""


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_last_completed_step(
    ddp_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """Rank 1 abandons step 3 in its forward pass; rank 0, mid-step too, drops it at the next vote: both
    stop, last.pt holds step 2, and resuming with two processes ends with the uninterrupted run's weights."""
    data, reference = ddp_run
    script = tmp_path / "signal_one_rank.py"
    script.write_text(SIGNAL_ONE_RANK)
    stopped = tmp_path / "stopped"
    done = run_uniformer(*train_args(data, stopped, "--batch-size", "2"), processes=2, script=str(script))
    assert done.returncode != 0  # the workers exit 143, as the signal itself would have ended them
    assert "SIGTERM: stopping, saving the last completed step" not in done.stderr  # rank 1 does not announce
    assert '"interrupted_by": "a signal to another rank"' in done.stdout, done.stderr[-3000:]
    assert '"steps": 2,' in done.stdout
    assert load_checkpoint(stopped / "last.pt")["step"] == 2
    assert len(step_losses(stopped)) == 2
    run(["train", "--resume", str(stopped), "--workers", "0", "--log-every", "1", "--json"], processes=2)
    assert step_losses(stopped) == pytest.approx(step_losses(reference), rel=1e-6)
    expected, actual = load_checkpoint(reference / "last.pt")["model"], load_checkpoint(stopped / "last.pt")["model"]
    assert max((expected[name] - actual[name]).abs().max().item() for name in expected) <= 1e-6
