"""Memory of `uniformer predict STREAM --timeline S`: peak resident memory of the command on a short and a
long synthetic camera stream (FFmpeg's `testsrc` as a capture device), and the frames its ring held.

A live timeline keeps only the frames a window may still need (at most 1.5 windows, resized to the
model's short side), so the peak must not grow with the stream's length.

    python benchmarks/bench_live.py                      # 1280x720 at 30 fps, 2 s windows, 10 s and 60 s
    python benchmarks/bench_live.py --durations 10 120 --window 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights

CHILD = """
import json, resource, sys
from uniformer_cli.engine.predict import load_predictor
predictor = load_predictor(sys.argv[1], device="cpu")
timeline = predictor.live_timeline(sys.argv[2], float(sys.argv[3]))
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"windows": len(timeline.windows), "frames_held": timeline.frames_held, "peak_mib": peak_kib / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=int, nargs="+", default=[10, 60], help="stream lengths in seconds")
    parser.add_argument("--window", type=float, default=2.0, help="timeline window in seconds")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    config = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 64), head_dim=16, num_classes=4)
    protocol = ViewProtocol(frames=8, stride=4, size=224)  # a real model's input size; a tiny network
    with tempfile.TemporaryDirectory() as folder:
        model = create_model(config).eval()
        weights = save_weights(Path(folder) / "tiny.safetensors", model, config, None, protocol.as_dict())
        length = max(1, round(args.window * args.fps))
        short = min(args.width, args.height)
        frame_mib = 3 * 224 * math.floor(max(args.width, args.height) / short * 224) * 4 / 2**20
        print(f"torch {torch.__version__}; {args.width}x{args.height} at {args.fps} fps, {args.window:g} s windows")
        print(f"bound: {math.ceil(1.5 * length)} frames x {frame_mib:.2f} MiB (resized to 224 px, float32)")
        for duration in args.durations:
            source = f"lavfi:testsrc=size={args.width}x{args.height}:rate={args.fps}:duration={duration}"
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(weights), source, str(args.window)],
                capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
            figures = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"{duration:4d} s stream: {figures['windows']:3d} windows, ring held {figures['frames_held']} frames "
                f"({figures['frames_held'] * frame_mib:.0f} MiB), peak RSS {figures['peak_mib']:.0f} MiB"
            )


if __name__ == "__main__":
    main()
