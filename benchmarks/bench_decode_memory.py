"""Peak memory of turning a high-resolution video into model views: it should follow the model's input
size, not the source resolution.

    python benchmarks/bench_decode_memory.py                       # 4000x3000 and 640x480 sources, 64 px views
    python benchmarks/bench_decode_memory.py --baseline /work/main # also an older checkout, same run

Writes each source video once (H.264, generated here), then in a fresh process per (checkout, source,
decoder) builds the views of a 16x4 clip and prints the process's peak resident memory while it does
(Linux `VmHWM`, reset after the imports), how much that is above the memory before, and the time taken.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from uniformer_cli.data.views import load_views
import torch  # imported before the measurement, as every command does

def rss_mib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # Linux: reset the peak resident size (VmHWM) to the current one
before = rss_mib("VmRSS")
started = time.perf_counter()
views = load_views(sys.argv[2], frames=16, stride=4, size=int(sys.argv[4]), decoder=sys.argv[3])
seconds = time.perf_counter() - started
print(json.dumps({"before_mib": before, "peak_mib": rss_mib("VmHWM"), "seconds": seconds}))
"""


def write_source(path: Path, width: int, height: int, frames: int) -> Path:
    """A moving gradient, cheap to encode at any size."""
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for index in range(frames):
            image = np.stack([(x + 8 * index) % 256, (y + 4 * index) % 256, np.full_like(x, 96)], axis=-1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def measure(checkout: Path, video: Path, decoder: str, size: int) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CHILD, str(checkout), str(video), decoder, str(size)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--size", type=int, default=64, help="the model's input side")
    parser.add_argument("--decoders", default="pyav,decord,auto")
    args = parser.parse_args()
    checkouts = [("this", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    with tempfile.TemporaryDirectory() as folder:
        sources = {
            "4000x3000": write_source(Path(folder) / "large.mp4", 4000, 3000, 64),
            "640x480": write_source(Path(folder) / "small.mp4", 640, 480, 64),
        }
        print(f"16x4 clip at {args.size} px; peak resident memory (VmHWM, reset after the imports), a process each")
        for source, video in sources.items():
            for decoder in args.decoders.split(","):
                for name, checkout in checkouts:
                    result = measure(checkout, video, decoder, args.size)
                    print(
                        f"  {source:>9} {decoder:<6} {name:<8} peak {result['peak_mib']:6.0f} MiB "
                        f"(+{result['peak_mib'] - result['before_mib']:5.0f} MiB while decoding) "
                        f"{result['seconds']:6.2f} s"
                    )


if __name__ == "__main__":
    main()
