"""Fast inference path against the exact reference, and a training step with / without checkpointing.

Prints, in one run:
- in each model's process, a 2048^3 fp32 matmul's GFLOP/s on each device (the practical peak the models are
  compared with);
- per model (S16 and B16 at 224 by default), CPU batch 1: the exact reference (explicit fp32 softmax
  attention, BatchNorm as separate ops, the official contiguous NCTHW layout) and the fast path
  (`optimize_for_inference`: SDPA, folded BatchNorm, channels-last), median latency of --runs after
  --warmup, speed-up, achieved GFLOP/s (2 x multiply-accumulates / time) and peak memory;
- on CUDA when present: batch --cuda-batch throughput, fast path under bf16 autocast against the fp32
  reference;
- a training step (forward, cross-entropy, backward, SGD step) with and without gradient checkpointing
  of every block: median time and peak memory.
Reference and fast runs alternate, so a busy machine slows both alike: trust the ratios more than the
absolute times when other jobs are running. Each model runs in a fresh process: the memory allocator's
state left by one model changes the next one's reference time (benchmarks/README.md); with
--keep-large-blocks, glibc keeps freed large blocks instead of returning them to the kernel, which takes
the reference's page faults out of the comparison.

    python benchmarks/bench_inference.py [--models s b] [--frames 16] [--size 224] [--runs 5] [--warmup 2]
        [--cuda-batch 8] [--train-batch 1] [--train-frames 16] [--train-size 224] [--compile] [--no-train]
        [--keep-large-blocks]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from uniformer_cli.device import autocast, autocast_dtype, synchronize
from uniformer_cli.engine.flops import count_macs, peak_memory
from uniformer_cli.models import FAMILIES, create_model, exact_attention
from uniformer_cli.models.fast import optimize_for_inference


@dataclass(frozen=True)
class Timing:
    wall: float  # median seconds per call
    cpu: float  # median CPU seconds of this process per call: less sensitive than `wall` to other jobs

    def cpu_text(self, device: torch.device) -> str:
        return f"(cpu {self.cpu * 1e3:7.1f} ms)" if device.type == "cpu" else ""


def median_times(
    functions: dict[str, Callable[[], object]], device: torch.device, runs: int, warmup: int
) -> dict[str, Timing]:
    """Median time per call of each function; the functions take turns so that load affects all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    walls: dict[str, list[float]] = {name: [] for name in functions}
    cpus: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            synchronize(device)
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - start_cpu)
    return {name: Timing(statistics.median(walls[name]), statistics.median(cpus[name])) for name in functions}


def matmul_gflops(device: torch.device, runs: int = 5) -> float:
    a, b = (torch.randn(2048, 2048, device=device) for _ in range(2))
    seconds = median_times({"mm": lambda: a @ b}, device, runs, warmup=2)["mm"].wall
    return 2 * 2048**3 / seconds / 1e9


def peak_mib(device: torch.device, model: nn.Module, clips: torch.Tensor, step: Callable[[], object]) -> float | None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_memory(device, model, clips, step)


def inference_rows(args: argparse.Namespace, family: str, device: torch.device, batch: int) -> None:
    config = FAMILIES[family]
    torch.manual_seed(0)
    reference = create_model(config).to(device).eval()
    exact_attention(reference)
    fast = optimize_for_inference(reference, compile=args.compile)
    reference.channels_last = False  # the official layout
    clips = torch.randn(batch, 3, args.frames, args.size, args.size, device=device)
    half = autocast_dtype(device) is not None

    def run_reference() -> None:
        with torch.inference_mode():
            reference(clips)

    def run_fast() -> None:
        with torch.inference_mode(), autocast(device, enabled=half):
            fast(clips)

    timings = median_times({"reference": run_reference, "fast": run_fast}, device, args.runs, args.warmup)
    macs = count_macs(config, args.frames, args.size).macs * batch
    precision = "bf16/fp16 autocast" if half else "fp32"
    name = f"{family}{args.frames}x{args.size} {device.type} batch {batch}"
    paths = (("reference", "reference fp32", reference, run_reference), ("fast", f"fast {precision}", fast, run_fast))
    for key, label, model, run in paths:
        memory = peak_mib(device, model, clips, run)
        memory_text = "-" if memory is None else f"{memory:7.0f} MiB"
        seconds = timings[key].wall
        print(
            f"  {name:28} {label:24} {seconds * 1e3:9.1f} ms {timings[key].cpu_text(device)}"
            f"  {batch / seconds:7.2f} clips/s  {2 * macs / seconds / 1e9:7.1f} GFLOP/s  peak {memory_text}"
        )
    reference, fast = timings["reference"], timings["fast"]
    cpu_ratio = f"  (cpu time {reference.cpu / fast.cpu:.2f} x)" if device.type == "cpu" else ""
    print(f"  {name:28} {'speed-up':24} {reference.wall / fast.wall:9.2f} x{cpu_ratio}")


def train_rows(args: argparse.Namespace, family: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = create_model(FAMILIES[family]).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    clips = torch.randn(args.train_batch, 3, args.train_frames, args.train_size, args.train_size, device=device)
    labels = torch.randint(0, model.config.num_classes, (args.train_batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = nn.functional.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()

    name = f"{family}{args.train_frames}x{args.train_size} {device.type} batch {args.train_batch}"
    results = {}
    for checkpointing in (False, True):
        model.set_grad_checkpointing(checkpointing)
        timing = median_times({"step": step}, device, max(2, args.runs // 2), warmup=1)["step"]
        results[checkpointing] = (timing, peak_mib(device, model, clips, step))
    for checkpointing, (timing, memory) in results.items():
        label = "train step, checkpointing" if checkpointing else "train step"
        memory_text = "-" if memory is None else f"{memory:7.0f} MiB"
        print(f"  {name:28} {label:26} {timing.wall * 1e3:9.1f} ms {timing.cpu_text(device)}  peak {memory_text}")
    plain, checkpointed = results[False], results[True]
    if plain[1] and checkpointed[1]:
        print(
            f"  {name:28} {'checkpointing / plain':26} time {checkpointed[0].wall / plain[0].wall:.2f} x,"
            f" peak memory {checkpointed[1] / plain[1]:.2f} x"
        )


def benchmark_family(args: argparse.Namespace, family: str) -> None:
    """Every row of one model, on every device (run in a fresh process), after the matmul rate that
    this process reaches on each device."""
    for device in devices():
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"  2048^3 fp32 matmul on {label}: {matmul_gflops(device):.1f} GFLOP/s", flush=True)
    for device in devices():
        inference_rows(args, family, device, batch=1 if device.type == "cpu" else args.cuda_batch)
    if not args.no_train:
        for device in devices():
            train_rows(args, family, device)


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["s", "b"], choices=sorted(FAMILIES))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cuda-batch", type=int, default=8)
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--train-frames", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=224)
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path (slow first call)")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--keep-large-blocks", action="store_true", help="glibc keeps freed large blocks")
    args = parser.parse_args()

    if args.keep_large_blocks:  # read by glibc when each model's process starts
        os.environ.update({name: str(2**34) for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")})
    allocator = "large blocks kept" if args.keep_large_blocks else "default allocator"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {allocator}", flush=True)
    print(f"median of {args.runs} after {args.warmup} warm-up, reference and fast alternating, a process per model:")
    spawn = multiprocessing.get_context("spawn")
    for family in args.models:
        process = spawn.Process(target=benchmark_family, args=(args, family))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"benchmark of {family} failed (exit status {process.exitcode})")


if __name__ == "__main__":
    main()
