"""One clip end to end (issue 22): `uniformer -v predict examples/yoga.mp4` in a fresh process, this
checkout against another one (`--baseline DIR`, e.g. `git archive main | tar -x -C /tmp/main`), contenders
alternating, for a tiny random UniFormer and an S16-sized one, both saved with the s16x4-k400 protocol
(4 views of 16x224x224).

Per contender: end to end (process start to exit, median), the paired difference per round, and the
breakdown the `-v` log gives (model ready: weights read and prepared; decode: the first video's
decoding and preprocessing time; model: its forward passes), with `import torch` timed in a fresh process
each round. What is left of the end to end is the interpreter, the package's other imports, the
waiting and the exit.

    python benchmarks/bench_first_clip.py --baseline /tmp/main [--rounds 8] [--precision bf16] [--engine openvino]

Each contender runs once untimed first (with `--engine openvino` that converts and compiles the model,
after which this checkout's runs take the torch-free route, `engine.torch_free`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = re.compile(r"decoded and preprocessed in ([\d.]+) s \(\d+ views\), model ([\d.]+) s")
READY = re.compile(r"model ready in ([\d.]+) s")


def weights(folder: Path) -> dict[str, Path]:
    import torch
    from bench_engines import random_s16

    from uniformer_cli.models import create_model
    from uniformer_cli.models.config import ModelConfig
    from uniformer_cli.weights import save_weights
    from uniformer_cli.zoo import get_entry

    tiny = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=3)
    torch.manual_seed(0)
    protocol = get_entry("s16x4-k400").protocol.as_dict()
    return {
        "tiny": save_weights(folder / "tiny.safetensors", create_model(tiny).eval(), tiny, protocol=protocol),
        "s16": random_s16(folder / "s16.safetensors"),
    }


def run(checkout: Path, model: Path, options: list[str]) -> tuple[float, float, float, float]:
    """End to end, model ready, decode and model seconds of one `predict` process."""
    command = [sys.executable, "-m", "uniformer_cli.cli.app", "-v", "predict", str(ROOT / "examples" / "yoga.mp4")]
    command += ["--weights", str(model), "--device", "cpu", "--json", *options]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout
    )
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    log = " ".join(done.stderr.split())
    ready, timed = READY.search(log), LOG.search(log)
    assert ready is not None and timed is not None, log
    return total, float(ready.group(1)), float(timed.group(1)), float(timed.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of the repository")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["tiny", "s16"])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--engine", default="torch")
    args = parser.parse_args()
    from uniformer_cli.runtime import cpu_info

    print(f"CPU: {cpu_info().describe()}")
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    checkouts = {"baseline": args.baseline.resolve(), "this checkout": ROOT}
    options = ["--precision", args.precision, "--engine", args.engine]
    with tempfile.TemporaryDirectory() as folder:
        models = weights(Path(folder))
        for model in args.models:  # warm-up: OpenVINO's conversion and blob caches, file caches
            for checkout in checkouts.values():
                run(checkout, models[model], options)
        imports: list[float] = []
        times: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for round_number in range(args.rounds):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True)
            imports.append(time.perf_counter() - started)
            for model in args.models:
                names = list(checkouts) if round_number % 2 == 0 else list(reversed(checkouts))
                for name in names:
                    times.setdefault((model, name), []).append(run(checkouts[name], models[model], options))
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"predict examples/yoga.mp4 {' '.join(options)}, median of {args.rounds} alternating rounds")
    print(f"import torch (a fresh process): {statistics.median(imports):.2f} s")
    for model in args.models:
        for name in checkouts:
            rows = times[(model, name)]
            total, ready, decode, forward = (statistics.median(column) for column in zip(*rows, strict=True))
            spread = f"{min(row[0] for row in rows):.2f}-{max(row[0] for row in rows):.2f}"
            print(
                f"  {model:5} {name:14} end to end {total:5.2f} s ({spread}); model ready {ready:.2f}, "
                f"decode {decode:.2f}, model {forward:.2f}"
            )
        base, mine = ([row[0] for row in times[(model, name)]] for name in checkouts)
        gains = [before - after for before, after in zip(base, mine, strict=True)]
        print(
            f"  {model:5} this checkout / baseline {statistics.median(mine) / statistics.median(base):.2f}x; "
            f"paired gain per round median {statistics.median(gains):+.2f} s, faster in {sum(g > 0 for g in gains)}"
            f" of {len(gains)}"
        )


if __name__ == "__main__":
    main()
