"""Training steps in float32 and bf16 autocast on the CPU (issue 22): does bf16 pay, per model kind?

For each family (random weights, Kinetics-400 head), one optimiser step as `uniformer train` makes it:
the training forward (light models: both heads), soft-target cross entropy, backward, fused AdamW.
Three contenders alternate in one process: float32, bf16 autocast as `--amp bf16` runs it (depthwise
convolutions in float32, `models.layers.depthwise`) and bf16 autocast with the depthwise convolutions in
bf16 too (as before that change); each row gives the medians of --runs after --warmup and each bf16
contender's speed-up over float32 (float32 time / its time). --profile FAMILY prints the operators that
take the most time in one step of each contender.

Prints the CPU model and features (`runtime.cpu_info`) and the load average first. With other jobs on the
same cores, trust the ratios (measured in the same run) more than the times.

    python benchmarks/bench_train_precision.py [--families xxs xs s] [--frames 8] [--size 160] [--batch 4]
        [--threads 2] [--runs 5] [--warmup 2] [--profile xxs]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads after the runtime settings (see main)
    import torch


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["xxs", "xs", "s"], choices=("xxs", "xs", "s", "b"))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", choices=("xxs", "xs", "s", "b"), help="top operators of one step, per precision")
    return parser.parse_args()


def training_step(family: str, args: argparse.Namespace, clips: int) -> Callable[[torch.dtype | None], None]:
    """One optimiser step of `family` on `clips` random clips, at the precision given per call."""
    import torch

    from uniformer_cli.data.augment import smoothed_targets
    from uniformer_cli.device import autocast_to
    from uniformer_cli.engine.train import TrainForward, training_loss
    from uniformer_cli.models import FAMILIES, create_model

    torch.manual_seed(0)
    model = create_model(FAMILIES[family].replace(num_classes=400))
    model.train()
    forward = TrainForward(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    inputs = torch.randn(clips, 3, args.frames, args.size, args.size)
    targets = smoothed_targets(torch.randint(0, 400, (clips,)), 400, 0.1)
    cpu = torch.device("cpu")

    def step(dtype: torch.dtype | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_to(cpu, dtype):
            loss = training_loss(forward(inputs), targets)
        loss.backward()
        optimizer.step()

    return step


def contenders(step: Callable[[torch.dtype | None], None]) -> dict[str, Callable[[], object]]:
    import torch

    from uniformer_cli.models import layers

    def bf16(float32_depthwise: bool) -> None:
        layers.FLOAT32_DEPTHWISE = float32_depthwise
        try:
            step(torch.bfloat16)
        finally:
            layers.FLOAT32_DEPTHWISE = True

    return {
        "float32": lambda: step(None),
        "bf16": lambda: bf16(True),
        "bf16, depthwise in bf16": lambda: bf16(False),
    }


def profile(run: Callable[[], None], label: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    run()
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(f"-- {label}: operators by self CPU time, one step")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))


def main() -> None:
    args = parse()
    from uniformer_cli.runtime import configure_runtime

    configure_runtime()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from bench_engines import load_average, timed_rounds

    from uniformer_cli.runtime import cpu_info

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_info().describe()}")
    print(f"torch {torch.__version__}, {args.threads} threads; load average before: {load_average()}")
    print(
        f"one optimiser step (AdamW), batch {args.batch}, {args.frames}x{args.size}, median of {args.runs} after"
        f" {args.warmup} warm-up, contenders alternating, random weights"
    )
    print("| model | float32 ms | bf16 ms | bf16 speed-up | bf16 with bf16 depthwise ms | its speed-up |")
    print("|---|---|---|---|---|---|")
    for family in args.families:
        rounds = timed_rounds(dict(contenders(training_step(family, args, args.batch))), args.runs, args.warmup)
        times = {name: statistics.median(values) for name, values in rounds.items()}
        base = times["float32"]
        cells = [f"{base * 1e3:.0f}"]
        for name in ("bf16", "bf16, depthwise in bf16"):
            cells += [f"{times[name] * 1e3:.0f}", f"{base / times[name]:.2f}x"]
        print(f"| {family} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average after: {load_average()}")
    if args.profile:
        for name, run in contenders(training_step(args.profile, args, args.batch)).items():
            profile(run, f"{args.profile} {name}")


if __name__ == "__main__":
    main()
