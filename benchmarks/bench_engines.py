"""Our CPU inference against the engines a user could pick instead (issue 12).

In one process, contenders alternating (so that load slows all alike), median of --runs after --warmup,
batch 1 at --frames x --size (S16 and B16 at 224 by default), random weights and a random clip:
- ours fp32: `optimize_for_inference(precision="fp32")`, the default CPU path;
- ours bf16: `precision="bf16"` (CPUs with native bf16 only);
- OpenVINO fp32 and bf16 (precision hint) on the ONNX file `uniformer export` writes, and ONNX Runtime
  fp32 on it, each when installed; threads as ours (--threads).
Each row gives the median, the spread (min-max), the speed ratio to ours fp32, the largest logit
difference to ours fp32 and whether the top-5 matches.

--background N starts N busy processes (one pure-Python loop each) for the measurement and stops them
after: the shared-machine case. --runtime default skips the settings the `uniformer` command makes at
start-up (`uniformer_cli.runtime`: passive OpenMP waiting, glibc keeping large blocks), to measure them.
--predict also times `uniformer predict` end to end (a random S16 saved with the s16x4-k400 protocol),
on examples/yoga.mp4 (4 views) and on a folder of 8 copies of it (32 views), each run a fresh process:
fp32, bf16 on PyTorch (what `--engine auto` runs) and bf16 on OpenVINO (`--engine openvino`, when
installed; its model converted once into a cache of the benchmark's own, whose first, converting run is
timed apart).

    python benchmarks/bench_engines.py [--models s b] [--threads 2] [--runs 5] [--warmup 2]
        [--background N] [--runtime cli|default] [--predict]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads after the runtime settings (see main)
    import torch

ROOT = Path(__file__).resolve().parent.parent


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["s", "b"])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--background", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--runtime", choices=("cli", "default"), default="cli")
    parser.add_argument("--predict", action="store_true", help="also time `uniformer predict` fp32 vs bf16 engines")
    return parser.parse_args()


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    workers = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def timed_rounds(contenders: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    for run in contenders.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def engines(model: torch.nn.Module, clip: torch.Tensor, threads: int, folder: Path) -> dict[str, Callable[[], object]]:
    """The installed engines' contenders on the exported ONNX file of `model`."""
    import torch

    from uniformer_cli.engine.interchange import exportable, write_onnx

    have = {
        name: importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "openvino", "onnxruntime")
    }
    if not (have["onnx"] and have["onnxscript"]):
        return {}
    import onnx

    path = folder / "model.onnx"
    write_onnx(exportable(model), torch.randn(clip.shape), path, {}, onnx)
    array = clip.numpy()
    found: dict[str, Callable[[], object]] = {}
    if have["openvino"]:
        import openvino

        core = openvino.Core()
        for label, hint in (("OpenVINO fp32", "f32"), ("OpenVINO bf16", "bf16")):
            config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            compiled = core.compile_model(str(path), "CPU", config)
            found[label] = lambda compiled=compiled: torch.from_numpy(compiled(array)[0])
    if have["onnxruntime"]:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        # Its threads otherwise spin after each run, on the cores the next contender needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        found["ONNX Runtime fp32"] = lambda: torch.from_numpy(session.run(None, {"video": array})[0])
    return found


def bench_model(family: str, args: argparse.Namespace, folder: Path) -> None:
    import torch

    from uniformer_cli.models import FAMILIES, create_model
    from uniformer_cli.models.fast import cpu_has_native_bf16, optimize_for_inference

    torch.manual_seed(0)
    model = create_model(FAMILIES[family]).eval()
    clip = torch.randn(1, 3, args.frames, args.size, args.size)
    fp32 = optimize_for_inference(model, precision="fp32")
    contenders: dict[str, Callable[[], torch.Tensor]] = {}

    def ours(fast: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return fast(clip)

        return run

    contenders["ours fp32"] = ours(fp32)
    if cpu_has_native_bf16():
        contenders["ours bf16"] = ours(optimize_for_inference(model, precision="bf16"))
    contenders.update(engines(model, clip, args.threads, folder))
    reference = contenders["ours fp32"]()
    checks = {}
    for name, run in contenders.items():
        logits = run().float()
        same = logits.topk(5).indices.tolist() == reference.topk(5).indices.tolist()
        checks[name] = (float((logits - reference).abs().max()), same)
    times = timed_rounds(contenders, args.runs, args.warmup)
    base = statistics.median(times["ours fp32"])
    shape = f"{family}{args.frames}x{args.size}"
    for name, values in times.items():
        median = statistics.median(values)
        error, same = checks[name]
        print(
            f"  {shape:10s} {name:18s} {median * 1e3:8.0f} ms  ({min(values) * 1e3:5.0f}-{max(values) * 1e3:5.0f})"
            f"  x{base / median:5.2f}  max|d| {error:8.2e}  top-5 {'same' if same else 'DIFFERS'}",
            flush=True,
        )


def bench_predict(args: argparse.Namespace, folder: Path) -> None:
    import torch

    from uniformer_cli.models import create_model
    from uniformer_cli.weights import save_weights
    from uniformer_cli.zoo import get_entry

    entry = get_entry("s16x4-k400")
    torch.manual_seed(0)
    weights = save_weights(
        folder / "s16.safetensors",
        create_model(entry.config).eval(),
        entry.config,
        protocol=entry.protocol.as_dict(),
    )
    copies = folder / "copies"
    copies.mkdir()
    for number in range(8):
        (copies / f"yoga{number}.mp4").symlink_to(ROOT / "examples" / "yoga.mp4")
    engines = {"fp32": ["--precision", "fp32"], "bf16 --engine torch": ["--precision", "bf16", "--engine", "torch"]}
    openvino = ["--precision", "bf16", "--engine", "openvino"]
    if importlib.util.find_spec("openvino") is not None:
        engines["bf16 --engine openvino"] = openvino
    # A cache of our own: the first OpenVINO run converts the model, the others find it.
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HOME": str(folder / "hf")}
    for label, target in (("yoga.mp4 (4 views)", ROOT / "examples" / "yoga.mp4"), ("8 x yoga.mp4 (32 views)", copies)):
        command = [sys.executable, "-m", "uniformer_cli.cli.app", "predict", str(target)]
        command += ["--weights", str(weights), "--device", "cpu", "--json"]
        label = f"predict {label}, process start to exit,"
        if target != copies and openvino in engines.values():
            start = time.perf_counter()
            subprocess.run([*command, *openvino], check=True, capture_output=True, env=environment)
            print(f"  {label} bf16 --engine openvino first run, converting: {time.perf_counter() - start:6.2f} s")
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(max(3, args.runs // 2)):
            for name, options in engines.items():
                start = time.perf_counter()
                subprocess.run([*command, *options], check=True, capture_output=True, env=environment)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["fp32"])
        for name, values in times.items():
            median = statistics.median(values)
            spread = f"({min(values):.2f}-{max(values):.2f})"
            print(f"  {label} {name:<22} {median:6.2f} s {spread}  x{base / median:.2f}")


def main() -> None:
    args = parse()
    if args.runtime == "cli":
        from uniformer_cli.runtime import configure_runtime

        configure_runtime()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    policy = os.environ.get("OMP_WAIT_POLICY", "default (active)")
    print(
        f"torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY {policy}, runtime settings: "
        f"{args.runtime}, {args.background} busy background process(es)"
    )
    print(f"median of {args.runs} after {args.warmup} warm-up, contenders alternating, batch 1, random weights:")
    with tempfile.TemporaryDirectory() as folder, busy_processes(args.background):
        for family in args.models:
            bench_model(family, args, Path(folder))
        if args.predict:
            bench_predict(args, Path(folder))


if __name__ == "__main__":
    main()
