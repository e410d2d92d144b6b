"""The measuring part of `gpu_check.sh` (issues 12 and 22): model throughput at batch 1 / 8 / 32 in fp32,
bf16 and the default autocast, `uniformer predict` and the eval engine's scoring end to end at the same
batches, and training steps under AMP with and without gradient checkpointing, each with its peak memory.

Random weights throughout (a GPU machine may have no network): speed does not depend on the values; the
numerics are checked by the CUDA tests that `gpu_check.sh` runs first. `--dry-run` runs every part on
the CPU with a tiny clip shape and one timed pass, so that the script is known to work where no GPU is.

    python benchmarks/gpu_check.py [--device cuda] [--dry-run]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from uniformer_cli.device import autocast_to, select_device, synchronize
from uniformer_cli.engine.train import training_loss
from uniformer_cli.models import FAMILIES, ModelConfig, create_model
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights
from uniformer_cli.zoo import get_entry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "yoga.mp4"


def s_config(dry_run: bool) -> ModelConfig:
    """UniFormer-S; one block per stage for the dry run."""
    return FAMILIES["s"].replace(depth=(1, 1, 1, 1)) if dry_run else FAMILIES["s"]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, one pass: does it all run?")
    args = parser.parse_args()
    if args.dry_run:
        args.device = "cpu"
    return args


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return "peak - (CPU)"
    return f"peak {torch.cuda.max_memory_allocated(device) / 2**20:7.0f} MiB"


@contextlib.contextmanager
def measured_peak(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield


def median_seconds(work: Callable[[], object], device: torch.device, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(runs):
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def model_throughput(device: torch.device, shape: tuple[int, int], batches: list[int], runs: int) -> None:
    """S16 (or the dry run's tiny shape) on the fast path, per precision and batch."""
    frames, size = shape
    print(f"== model throughput: S{frames}x{size}, fast path, random weights, median of {runs}")
    model = create_model(s_config(frames < 16)).to(device).eval()
    precisions = ["fp32", "auto"] + (["bf16"] if device.type != "cuda" or torch.cuda.is_bf16_supported() else [])
    for precision in precisions:
        if precision == "bf16" and device.type == "cpu":
            continue  # the CPU's bf16 is measured by bench_engines.py
        fast = optimize_for_inference(model, precision=precision)
        for batch in batches:
            clips = torch.randn(batch, 3, frames, size, size, device=device)
            with measured_peak(device), torch.inference_mode():
                dtype = torch.bfloat16 if precision == "auto" and device.type == "cuda" else None
                with autocast_to(device, dtype):
                    seconds = median_seconds(lambda fast=fast, clips=clips: fast(clips), device, runs, warmup=2)
            speed = f"{seconds * 1e3:8.1f} ms  {batch / seconds:8.1f} clips/s"
            print(f"  {precision:5s} batch {batch:3d}  {speed}  {peak_memory(device)}")


def predict_throughput(device: torch.device, folder: Path, batches: list[int], copies: int, dry_run: bool) -> None:
    """`uniformer predict DIR` end to end (process start to exit), a random S16 with s16x4-k400's protocol."""
    entry = get_entry("s16x4-k400")
    protocol = entry.protocol
    config = entry.config
    if dry_run:
        config = s_config(True).replace(num_classes=config.num_classes)
        protocol = ViewProtocol(frames=4, stride=4, clips=1, crops=1, size=64)
    weights = save_weights(folder / "s16.safetensors", create_model(config).eval(), config, protocol=protocol.as_dict())
    videos = folder / "videos"
    videos.mkdir()
    for number in range(copies):
        (videos / f"clip{number}.mp4").symlink_to(EXAMPLE)
    print(f"== predict: {copies} copies of {EXAMPLE.name}, {protocol.views} views each, process start to exit")
    for batch in batches:
        command = [sys.executable, "-m", "uniformer_cli.cli.app", "predict", str(videos), "--weights", str(weights)]
        command += ["--device", device.type, "--batch-size", str(batch), "--json"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(f"  batch {batch:3d}  FAILED (exit {done.returncode}): {done.stderr.strip()[-300:]}")
            continue
        assert len(json.loads(done.stdout)) == copies
        print(f"  batch {batch:3d}  {seconds:6.2f} s  {copies / seconds:6.2f} clips/s")


def eval_throughput(device: torch.device, batches: list[int], dry_run: bool) -> None:
    """The eval engine's scoring (decode in DataLoader workers + model), through bench_loader.py --overlap."""
    print("== eval scoring (benchmarks/bench_loader.py: synthetic clips, random S)")
    shape = ["--frames", "4", "--size", "32", "--videos", "2"] if dry_run else ["--frames", "16", "--size", "224"]
    workers = ["0"] if dry_run else ["4"]
    for batch in batches:
        command = [sys.executable, str(ROOT / "benchmarks" / "bench_loader.py"), "--overlap", "--device", device.type]
        command += ["--batch-size", str(batch), "--workers", *workers, *shape]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        result = lines[-1] if done.returncode == 0 and lines else f"FAILED: {done.stderr.strip()[-300:]}"
        print(f"  batch {batch:3d}  {result.strip()}")


def train_steps(device: torch.device, shape: tuple[int, int], batch: int, runs: int) -> None:
    """S training steps (AdamW) under the default AMP, without and with gradient checkpointing."""
    frames, size = shape
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    print(f"== train steps: S{frames}x{size}, batch {batch}, autocast {amp}, AdamW, median of {runs}")
    clips = torch.randn(batch, 3, frames, size, size, device=device)
    targets = torch.nn.functional.one_hot(torch.arange(batch, device=device) % 400, 400).float()
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = create_model(s_config(frames < 16)).to(device).train()
        model.set_grad_checkpointing(checkpointing)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
            with autocast_to(device, amp):
                loss = training_loss(model(clips), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with measured_peak(device):
            seconds = median_seconds(step, device, runs, warmup=1)
        label = "checkpointing" if checkpointing else "plain"
        print(f"  {label:13s} {seconds * 1e3:8.1f} ms/step  {batch / seconds:7.1f} clips/s  {peak_memory(device)}")
        del model, optimizer


def main() -> None:
    args = parse()
    device = select_device(args.device)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        print(
            f"torch {torch.__version__}, {properties.name}, {properties.total_memory / 2**30:.0f} GiB, "
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"
        )
    else:
        print(f"torch {torch.__version__}, {device} (dry run: tiny shapes, nothing here is a GPU figure)")
    dry = args.dry_run
    batches = [1, 2] if dry else [1, 8, 32]
    started = time.perf_counter()
    model_throughput(device, (4, 32) if dry else (16, 224), batches, runs=1 if dry else 10)
    with tempfile.TemporaryDirectory() as folder:
        # A cache of its own: predict must not write into the user's Hugging Face cache.
        os.environ["HF_HOME"] = str(Path(folder) / "hf")
        predict_throughput(device, Path(folder), batches, copies=2 if dry else 16, dry_run=dry)
    eval_throughput(device, batches, dry)
    train_steps(device, (4, 32) if dry else (16, 224), batch=2 if dry else 8, runs=1 if dry else 5)
    print(f"gpu_check.py done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
