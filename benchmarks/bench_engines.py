"""Our CPU inference against OpenVINO, the engine a user could pick instead (issues 12 and 22): the
targets' table.

For each condition (`--background`: 0 = the machine as it is, quiet when nothing else runs; N = N more
busy processes, one pure-Python loop each, started for that part and stopped after), model (S16 and B16
at 224 by default), batch (1 and 4) and precision (fp32, and bf16 on CPUs with native bf16), in one
process, our fast path (`optimize_for_inference`, what the CLI runs, attention kernel measured per shape)
and OpenVINO (the ONNX file `uniformer export` writes, its precision hint) alternate: median of --runs
after --warmup, random weights and clips, 2 threads.
Each row: milliseconds per clip, the speed ratio ours / OpenVINO (above 1: ours faster), the largest
logit difference and whether the top-5 match. The CPU model and features head the table.

--runtime default skips the settings the `uniformer` command makes at start-up (`uniformer_cli.runtime`:
passive OpenMP waiting, glibc keeping large blocks), to measure them. --predict also times `uniformer
predict` end to end (a random S16 saved with the s16x4-k400 protocol), on examples/yoga.mp4 (4 views) and
on a folder of 8 copies of it (32 views), each run a fresh process: fp32, bf16 on PyTorch and bf16 on
OpenVINO (its model converted once into a cache of the benchmark's own, whose first, converting run is
timed apart).

    python benchmarks/bench_engines.py [--models s b] [--batches 1 4] [--precisions fp32 bf16]
        [--background 0 1] [--threads 2] [--runs 5] [--warmup 2] [--runtime cli|default] [--predict]
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
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--background", nargs="+", type=int, default=[0, 1], help="busy processes, per part")
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
    for _ in range(warmup):
        for run in contenders.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


class Model:
    """One architecture: our fast paths and OpenVINO's compiled models, per precision."""

    def __init__(self, family: str, args: argparse.Namespace, folder: Path) -> None:
        import onnx
        import openvino
        import torch

        from uniformer_cli.engine.interchange import exportable, write_onnx
        from uniformer_cli.models import FAMILIES, create_model
        from uniformer_cli.models.fast import optimize_for_inference

        torch.manual_seed(0)
        model = create_model(FAMILIES[family]).eval()
        self.name = f"{family.upper()}{args.frames}x{args.size}"
        self.shape = (3, args.frames, args.size, args.size)
        path = folder / f"{family}.onnx"
        write_onnx(exportable(model), torch.randn(1, *self.shape), path, {}, onnx)
        core = openvino.Core()
        self.ours, self.openvino = {}, {}
        for precision in args.precisions:
            self.ours[precision] = optimize_for_inference(model, precision=precision)
            config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
            config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
            self.openvino[precision] = core.compile_model(str(path), "CPU", config)

    def row(self, precision: str, batch: int, args: argparse.Namespace, condition: str) -> None:
        import torch

        clips = torch.randn(batch, *self.shape)
        array = clips.numpy()
        fast, compiled = self.ours[precision], self.openvino[precision]

        def ours() -> torch.Tensor:
            with torch.inference_mode():
                return fast(clips)

        def openvino() -> torch.Tensor:
            return torch.from_numpy(compiled(array)[0])

        reference, logits = openvino(), ours().float()
        error = float((logits - reference).abs().max())
        same = torch.equal(logits.topk(5).indices, reference.topk(5).indices)
        times = timed_rounds({"ours": ours, "OpenVINO": openvino}, args.runs, args.warmup)
        mine, theirs = (statistics.median(times[name]) for name in ("ours", "OpenVINO"))
        print(
            f"| {self.name} | {batch} | {precision} | {condition}"
            f" | {mine / batch * 1e3:6.0f} (min {min(times['ours']) / batch * 1e3:.0f})"
            f" | {theirs / batch * 1e3:6.0f} (min {min(times['OpenVINO']) / batch * 1e3:.0f})"
            f" | **{theirs / mine:.2f}x** | {error:.1e} | {'same' if same else 'DIFFERS'} |",
            flush=True,
        )


def random_s16(path: Path) -> Path:
    """A UniFormer-S16 with random weights (seed 0), saved with the s16x4-k400 protocol (4 views of 16 frames)."""
    import torch

    from uniformer_cli.models import create_model
    from uniformer_cli.weights import save_weights
    from uniformer_cli.zoo import get_entry

    entry = get_entry("s16x4-k400")
    torch.manual_seed(0)
    return save_weights(path, create_model(entry.config).eval(), entry.config, protocol=entry.protocol.as_dict())


def bench_predict(args: argparse.Namespace, folder: Path) -> None:
    weights = random_s16(folder / "s16.safetensors")
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
    import openvino
    import torch

    from uniformer_cli.models.fast import cpu_has_native_bf16
    from uniformer_cli.models.fast_attention import CHOICE
    from uniformer_cli.runtime import cpu_info

    torch.set_num_threads(args.threads)
    if not cpu_has_native_bf16() and "bf16" in args.precisions:
        print("this CPU has no native bf16: fp32 only")
        args.precisions = [precision for precision in args.precisions if precision != "bf16"]
    policy = os.environ.get("OMP_WAIT_POLICY", "default (active)")
    print(f"CPU: {cpu_info().describe()}")
    print(
        f"torch {torch.__version__}, OpenVINO {openvino.__version__}, {args.threads} threads, OMP_WAIT_POLICY"
        f" {policy}, runtime settings: {args.runtime}; load average before: {load_average()}"
    )
    print(f"median of {args.runs} after {args.warmup} warm-up, ours and OpenVINO alternating, random weights")
    columns = ("model", "batch", "precision", "condition", "ours ms/clip", "OpenVINO ms/clip", "speed ours/OpenVINO")
    print("| " + " | ".join((*columns, "max abs d", "top-5")) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        models = [Model(family, args, Path(folder)) for family in args.models]
        for background in args.background:
            condition = "as is" if background == 0 else f"+{background} busy"
            with busy_processes(background):
                for model in models:
                    for batch in args.batches:
                        for precision in args.precisions:
                            model.row(precision, batch, args, condition)
        kernels = sorted(set(CHOICE.decided.items()))
        print("attention kernels measured fastest: " + "; ".join(f"{key} {name}" for key, name in kernels))
        print(f"load average after: {load_average()}")
        if args.predict:
            bench_predict(args, Path(folder))


if __name__ == "__main__":
    main()
