"""UniFormerV2 on the CPU (issue 24).

1. B/16 at 8x224, batch 1, random weights, in one process with the contenders alternating (median of --runs
   after --warmup): ours fp32 and bf16 (`optimize_for_inference`), OpenVINO fp32 and bf16 (precision hint)
   on the ONNX file `uniformer export` writes of the same weights, ONNX Runtime fp32 when installed; each
   row with its ratio to ours fp32, its largest logit difference and whether the top-5 matches
   (`bench_engines.py`'s contenders).
2. L/14 at 8x224 (--l14): peak memory of one clip through ours fp32 and bf16 (the torch profiler's
   allocation trace plus the resident weights, `engine.flops.peak_memory`), and with --train of a training
   step (AdamW, batch 1) with every backbone block checkpointed (the training default for L/14) and without.

Prints the CPU model and the features the kernels depend on first. With other jobs on the same cores,
trust the ratios (measured in the same run) more than the times.

    python benchmarks/bench_v2.py [--threads 2] [--runs 5] [--warmup 2] [--background N] [--l14] [--train]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_line() -> str:
    """The CPU's model name and which of `FEATURES` it has (`runtime.cpu_info`, the one CPU description)."""
    from uniformer_cli.runtime import cpu_info

    cpu = cpu_info()
    have = [feature for feature in FEATURES if feature in cpu.flags]
    return f"{cpu.model}, {os.cpu_count()} logical CPUs, features: {' '.join(have) or 'none'}"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--background", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--l14", action="store_true", help="also L/14 8x224 peak memory")
    parser.add_argument("--train", action="store_true", help="with --l14: a training step's peak memory too")
    return parser.parse_args()


def engines_b16(args: argparse.Namespace, folder: Path) -> None:
    import torch
    from bench_engines import compare, engines

    from uniformer_cli.models import create_model
    from uniformer_cli.models.config_v2 import V2_FAMILIES
    from uniformer_cli.models.fast import cpu_has_native_bf16, optimize_for_inference

    torch.manual_seed(0)
    model = create_model(V2_FAMILIES["v2-b16"]).eval()
    for parameter in model.parameters():  # the official zero-initialised layers too: every branch computes
        if parameter.ndim > 1:
            torch.nn.init.normal_(parameter, std=0.02)
    clip = torch.randn(1, 3, 8, 224, 224)

    def ours(fast: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return fast(clip)

        return run

    contenders: dict[str, Callable[[], torch.Tensor]] = {}
    contenders["ours fp32"] = ours(optimize_for_inference(model, precision="fp32"))
    if cpu_has_native_bf16():
        contenders["ours bf16"] = ours(optimize_for_inference(model, precision="bf16"))
    contenders.update(engines(model, clip, args.threads, folder))
    compare(contenders, args, "v2-b16 8x224")


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
        del fast
    if not args.train:
        return
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


def main() -> None:
    args = parse()
    from uniformer_cli.runtime import configure_runtime

    configure_runtime()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from bench_engines import busy_processes

    torch.set_num_threads(args.threads)
    print(f"{cpu_line()}; torch {torch.__version__}, {args.threads} threads, {args.background} busy process(es)")
    print(f"median of {args.runs} after {args.warmup} warm-up, contenders alternating, batch 1, random weights:")
    with tempfile.TemporaryDirectory() as folder, busy_processes(args.background):
        engines_b16(args, Path(folder))
        if args.l14:
            memory_l14(args)


if __name__ == "__main__":
    main()
