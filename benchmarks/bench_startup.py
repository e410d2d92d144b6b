"""What a `uniformer` process pays before and after its work (issue 22): importing torch against what a
torch-free route for cached OpenVINO models would import (openvino, numpy, PyAV), and leaving the
interpreter after a model ran: the normal teardown against `cli.app.leave` (flush, then `os._exit`).

Each case is a fresh process; cases alternate, median of --runs. The exit cases run a small UniFormer-S
forward pass first, print the time, then leave; the parent reads the time at which the child's output
ended and when the child was gone.

    python benchmarks/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPORTS = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "import openvino": "import openvino",
    "import numpy, av": "import numpy, av",
    "uniformer_cli.cli.app (what --help loads)": "import uniformer_cli.cli.app",
}
EXIT = """
import sys, time
import torch
from uniformer_cli.cli.app import leave
from uniformer_cli.models import FAMILIES, create_model
from uniformer_cli.models.fast import optimize_for_inference
model = optimize_for_inference(create_model(FAMILIES["s"]), inplace=True)
with torch.inference_mode():
    model(torch.randn(1, 3, 8, 112, 112))
print(time.time(), flush=True)
if sys.argv[1] == "leave":
    leave(0)
"""


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from uniformer_cli.runtime import cpu_info

    print(f"CPU: {cpu_info().describe()}; load average before: {load_average()}")
    imports: dict[str, list[float]] = {name: [] for name in IMPORTS}
    exits: dict[str, list[float]] = {"normal exit": [], "leave (os._exit)": []}
    for _ in range(args.runs):
        for name, code in IMPORTS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            imports[name].append(time.perf_counter() - started)
        for name, mode in (("normal exit", "normal"), ("leave (os._exit)", "leave")):
            done = subprocess.run([sys.executable, "-c", EXIT, mode], check=True, capture_output=True, text=True)
            exits[name].append(time.time() - float(done.stdout.split()[-1]))
    base = statistics.median(imports["import torch"])
    print(f"process start to exit, median of {args.runs}, cases alternating:")
    for name, values in imports.items():
        median = statistics.median(values)
        print(f"  {name:42s} {median * 1e3:7.0f} ms  ({median / base:4.2f}x import torch)")
    print("after a forward pass: from the last output to the process gone")
    for name, values in exits.items():
        print(f"  {name:42s} {statistics.median(values) * 1e3:7.0f} ms")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
