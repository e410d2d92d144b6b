"""UniFormerV2 on the CPU (issue 24).

1. B/16 at 8x224, batch 1, random weights, in one process with the contenders alternating (median of --runs
   after --warmup, `bench_engines.timed_rounds`): ours fp32 and bf16 (`optimize_for_inference`, what the CLI
   runs, attention kernel measured per shape), OpenVINO fp32 and bf16 (precision hint) on the ONNX file
   `uniformer export` writes of the same weights; each row with its ratio to ours fp32, its largest logit
   difference (absolute and relative to the largest logit) and whether the top-5 matches. The attention
   kernels chosen are printed after. With --official DIR (a clone of OpenGVLab/UniFormerV2, imported from
   there at run time, `official_v2.py`): the official model of the released K400 B/16 8x224 config, fp32
   and under torch.autocast bf16, alternating with the others, all on the same random weights (drawn in
   the official model and loaded into ours through our reader of official checkpoints), after a check
   that ours (exact) gives the official fp32 logits.
2. L/14 at 8x224 (--l14): peak memory of one clip through ours fp32 and bf16 (the torch profiler's
   allocation trace plus the resident weights, `engine.flops.peak_memory`), and with --train of a training
   step (AdamW, batch 1) with every backbone block checkpointed (the training default for L/14) and without;
   with --official, the official model's inference peak too (its released K400 L/14 8x224 config).

Prints the CPU model and features (`runtime.cpu_info`) and the load average first. With other jobs on the
same cores, trust the ratios (measured in the same run) more than the times.

    python benchmarks/bench_v2.py [--threads 2] [--runs 5] [--warmup 2] [--background N] [--l14] [--train]
                                  [--official DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from official_v2 import (
    B16_EXPERIMENT,
    L14_EXPERIMENT,
    MODULE,
    OfficialError,
    official_model,
    save_official_checkpoint,
)

if TYPE_CHECKING:  # torch loads after the runtime settings (see main)
    import torch


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--background", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--l14", action="store_true", help="also L/14 8x224 peak memory")
    parser.add_argument("--train", action="store_true", help="with --l14: a training step's peak memory too")
    parser.add_argument(
        "--official", type=Path, metavar="DIR", help="a clone of OpenGVLab/UniFormerV2: time its model too"
    )
    return parser.parse_args()


def openvino_contenders(
    model: torch.nn.Module, clip: torch.Tensor, threads: int, folder: Path
) -> dict[str, Callable[[], torch.Tensor]]:
    """OpenVINO fp32 and bf16 on the ONNX file `uniformer export` writes of `model` (none without openvino)."""
    import importlib.util

    import torch

    from uniformer_cli.engine.interchange import exportable, write_onnx

    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "openvino")):
        return {}
    import onnx
    import openvino

    path = folder / "v2.onnx"
    write_onnx(exportable(model), torch.randn(clip.shape), path, {}, onnx)
    core, array = openvino.Core(), clip.numpy()
    found: dict[str, Callable[[], torch.Tensor]] = {}
    for label, hint in (("OpenVINO fp32", "f32"), ("OpenVINO bf16", "bf16")):
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        compiled = core.compile_model(str(path), "CPU", config)
        found[label] = lambda compiled=compiled: torch.from_numpy(compiled(array)[0])
    return found


def compare(
    contenders: dict[str, Callable[[], torch.Tensor]], args: argparse.Namespace, shape: str
) -> dict[str, float]:
    """Time `contenders` (alternating) and print each one's median, spread, ratio to "ours fp32", largest
    logit difference to it (absolute, and relative to its largest logit) and whether the top-5 matches;
    return the medians."""
    from bench_engines import timed_rounds

    reference = contenders["ours fp32"]()
    scale = float(reference.abs().max())
    checks = {}
    for name, run in contenders.items():
        logits = run().float()
        same = logits.topk(5).indices.tolist() == reference.topk(5).indices.tolist()
        checks[name] = (float((logits - reference).abs().max()), same)
    times = timed_rounds(dict(contenders), args.runs, args.warmup)
    base = statistics.median(times["ours fp32"])
    medians = {}
    for name, values in times.items():
        median = medians[name] = statistics.median(values)
        error, same = checks[name]
        print(
            f"  {shape:12s} {name:14s} {median * 1e3:8.0f} ms  ({min(values) * 1e3:5.0f}-{max(values) * 1e3:5.0f})"
            f"  x{base / median:5.2f}  max|d| {error:8.2e} (rel {error / scale:7.1e})"
            f"  top-5 {'same' if same else 'DIFFERS'}",
            flush=True,
        )
    return medians


def inference(model: torch.nn.Module, clip: torch.Tensor) -> Callable[[], torch.Tensor]:
    import torch

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(clip)

    return run


def autocast(model: torch.nn.Module, clip: torch.Tensor) -> Callable[[], torch.Tensor]:
    """`model` (fp32 weights) run under torch.autocast bf16: how the official code computes in bf16."""
    import torch

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(clip).float()

    return run


def official_and_ours(
    checkout: Path, experiment: str, clip: torch.Tensor, folder: Path
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official model of `experiment` with random weights, and ours holding the same weights (read from
    the official checkpoint they make, as `--weights` reads one); prints how far ours (exact, fp32) is from
    the official logits. Exits with one error line when the checkout cannot give the official model."""
    import torch

    from uniformer_cli.weights.loader import resolve_model

    try:
        official = official_model(checkout, experiment)
    except OfficialError as error:
        raise SystemExit(f"error: {error}") from None
    path = folder / f"official-{experiment.replace('/', '-')}.pyth"
    save_official_checkpoint(official, path)
    model = resolve_model(path, device="cpu").model
    with torch.inference_mode():
        expected, got = official(clip), model(clip)
    error = float((expected - got).abs().max())
    print(
        f"  official {experiment} (from {checkout}) against ours, exact fp32, same random weights:"
        f" max|d| {error:.2e}, {error / float(expected.abs().max()):.1e} of the largest logit;"
        f" top-5 {'same' if expected.topk(5).indices.equal(got.topk(5).indices) else 'DIFFERS'}",
        flush=True,
    )
    return official, model


def engines_b16(args: argparse.Namespace, folder: Path) -> None:
    import torch

    from uniformer_cli.models import create_model
    from uniformer_cli.models.config_v2 import V2_FAMILIES
    from uniformer_cli.models.fast import cpu_has_native_bf16, optimize_for_inference
    from uniformer_cli.models.fast_attention import CHOICE

    torch.manual_seed(0)
    clip = torch.randn(1, 3, 8, 224, 224)
    official: torch.nn.Module | None = None
    if args.official is not None:
        official, model = official_and_ours(args.official, B16_EXPERIMENT, clip, folder)
    else:
        model = create_model(V2_FAMILIES["v2-b16"]).eval()
        for parameter in model.parameters():  # the official zero-initialised layers too: every branch computes
            if parameter.ndim > 1:
                torch.nn.init.normal_(parameter, std=0.02)

    contenders: dict[str, Callable[[], torch.Tensor]] = {}
    contenders["ours fp32"] = inference(optimize_for_inference(model, precision="fp32"), clip)
    if cpu_has_native_bf16():
        contenders["ours bf16"] = inference(optimize_for_inference(model, precision="bf16"), clip)
    contenders.update(openvino_contenders(model, clip, args.threads, folder))
    if official is not None:
        contenders["official fp32"] = inference(official, clip)
        if cpu_has_native_bf16():
            contenders["official bf16"] = autocast(official, clip)
    medians = compare(contenders, args, "v2-b16 8x224")
    for precision in ("fp32", "bf16"):
        if f"official {precision}" in medians:
            speed_up = medians[f"official {precision}"] / medians[f"ours {precision}"]
            print(f"  ours {precision} runs {speed_up:.2f}x as fast as the official code at {precision}", flush=True)
    kernels = sorted(CHOICE.decided.items())
    print("  attention kernels measured fastest: " + "; ".join(f"{key} {name}" for key, name in kernels), flush=True)


def memory_l14(args: argparse.Namespace) -> None:
    import torch

    from uniformer_cli.engine.flops import peak_memory
    from uniformer_cli.models import create_model
    from uniformer_cli.models.config_v2 import V2_FAMILIES
    from uniformer_cli.models.fast import cpu_has_native_bf16, optimize_for_inference

    device = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(V2_FAMILIES["v2-l14"]).eval()
    clip = torch.randn(1, 3, 8, 224, 224)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(f"  v2-l14 8x224 weights (fp32)           {weights:8.0f} MiB", flush=True)
    for precision in ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",):
        fast = optimize_for_inference(model, precision=precision)

        def forward(fast: torch.nn.Module = fast) -> None:
            with torch.inference_mode():
                fast(clip)

        forward()  # packed weights and the allocator settle before the profiled run
        peak = peak_memory(device, fast, clip, forward)
        print(f"  v2-l14 8x224 inference, ours {precision}       peak {peak:8.0f} MiB", flush=True)
        del fast, forward
    if args.train:
        train_l14(model, clip)
    del model  # one L/14 at a time in memory
    if args.official is not None:
        memory_official(args.official, clip, args.train)


def train_l14(model: torch.nn.Module, clip: torch.Tensor) -> None:
    """Peak memory of a training step of ours, with every backbone block checkpointed and without."""
    import torch

    from uniformer_cli.engine.flops import peak_memory

    device = torch.device("cpu")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    labels = torch.zeros(1, dtype=torch.long)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(clip), labels).backward()
        optimizer.step()

    for checkpointed in (True, False):
        model.set_grad_checkpointing(checkpointed)
        step()  # the optimiser's state exists before the measured step
        peak = peak_memory(device, model, clip, step)
        label = "every block checkpointed" if checkpointed else "no checkpointing"
        print(f"  v2-l14 8x224 train step, {label:24} peak {peak:8.0f} MiB", flush=True)


def memory_official(checkout: Path, clip: torch.Tensor, train: bool) -> None:
    """Peak memory of one clip through the official L/14 8x224 model, fp32 and under autocast bf16, and
    with `train` of a training step (AdamW, batch 1) with the official checkpointing of every block (its
    `use_checkpoint`, `checkpoint_num` = the depth) and without (the released config's setting)."""
    import torch

    from uniformer_cli.engine.flops import peak_memory
    from uniformer_cli.models.fast import cpu_has_native_bf16

    try:
        official = official_model(checkout, L14_EXPERIMENT)
    except OfficialError as error:
        raise SystemExit(f"error: {error}") from None
    runs = {"fp32": inference(official, clip)}
    if cpu_has_native_bf16():
        runs["bf16"] = autocast(official, clip)
    for precision, run in runs.items():

        def forward(run: Callable[[], torch.Tensor] = run) -> None:
            run()

        forward()  # as for ours: the allocator settles before the profiled run
        peak = peak_memory(torch.device("cpu"), official, clip, forward)
        print(f"  v2-l14 8x224 inference, official {precision}   peak {peak:8.0f} MiB", flush=True)
    del official, runs, run, forward
    if not train:
        return
    labels = torch.zeros(1, dtype=torch.long)
    for checkpointed in (True, False):
        every_block = [24]  # the official code checkpoints the first checkpoint_num[0] of L/14's 24 blocks
        official = official_model(checkout, L14_EXPERIMENT, use_checkpoint=checkpointed, checkpoint_num=every_block)
        official.train()
        optimizer = torch.optim.AdamW([p for p in official.parameters() if p.requires_grad], lr=1e-5)

        def step(official: torch.nn.Module = official, optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(official(clip), labels).backward()
            optimizer.step()

        step()  # the optimiser's state exists before the measured step
        peak = peak_memory(torch.device("cpu"), official, clip, step)
        label = "every block checkpointed" if checkpointed else "no checkpointing"
        print(f"  v2-l14 8x224 train step, official, {label:24} peak {peak:8.0f} MiB", flush=True)
        del official, optimizer, step


def main() -> None:
    args = parse()
    if args.official is not None and not (args.official / MODULE).is_file():  # said before minutes of work
        raise SystemExit(f"error: {args.official} is not a checkout of OpenGVLab/UniFormerV2: it has no {MODULE}")
    from uniformer_cli.runtime import configure_runtime

    configure_runtime()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from bench_engines import busy_processes, load_average

    from uniformer_cli.runtime import cpu_info

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_info().describe()}")
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.background} busy process(es) of ours;"
        f" load average before: {load_average()}"
    )
    print(f"median of {args.runs} after {args.warmup} warm-up, contenders alternating, batch 1, random weights:")
    with tempfile.TemporaryDirectory() as folder, busy_processes(args.background):
        engines_b16(args, Path(folder))
        if args.l14:
            memory_l14(args)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
