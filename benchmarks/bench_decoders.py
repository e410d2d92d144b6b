"""The video decoders (PyAV, decord, torchcodec) on the project's three decoding workloads: speed, peak
memory and whether their frames equal PyAV's.

    python benchmarks/bench_decoders.py                      # every installed decoder, 1-minute long video
    python benchmarks/bench_decoders.py --minutes 10 --rounds 3 --workloads timeline

Workloads (each as the engine runs it, model left out):
- views:    `predict`/`eval` test views of K400-like clips (10 s, 340x256, H.264 with B-frames), 16x4 dense
            sampling, 4 clips x 1 crop, each frame shrunk to 224 px as it is decoded (`views_from_video`).
- timeline: `predict --timeline 2` on a 720p video: every 2 s window sampled 16x4, 1 clip, one open reader.
- train:    training clips: open a clip, read one random 16x4 clip of raw frames, close (a video per sample).

Times are medians over `--rounds` rounds in this process, the decoders alternating within each round, as
ratios to PyAV measured in the same rounds. Peak memory is the resident high-water mark (Linux `VmHWM`,
reset after the imports) of a fresh process per (workload, decoder). "frames" says whether every frame
the workload decoded is bit-identical to PyAV's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uniformer_cli.data.video import decord_available, open_video  # noqa: E402
from uniformer_cli.data.views import read_view_frames, views_from_video  # noqa: E402
from uniformer_cli.data.windows import window_bounds  # noqa: E402
from uniformer_cli.protocol import ViewProtocol  # noqa: E402

VIEWS = ViewProtocol(frames=16, stride=4, clips=4, crops=1, size=224)
WINDOW = ViewProtocol(frames=16, stride=4, clips=1, crops=1, size=224)
WINDOW_SECONDS = 2.0


def cpu_description() -> str:
    """The CPU model and the vector features that matter for decoding and the model."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.partition(":")[2].strip()
            if line.startswith(("flags", "Features")):
                flags = set(line.partition(":")[2].split())
    except OSError:
        pass
    features = [name for name in ("amx_tile", "avx512_bf16", "avx512f", "avx2", "neon", "asimd") if name in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(features) or 'no listed vector features'}"


def decoders() -> list[str]:
    from uniformer_cli.data.video import torchcodec_problem

    found = ["pyav"]
    if decord_available():
        found.append("decord")
    if torchcodec_problem() is None:
        found.append("torchcodec")
    return found


def write_source(path: Path, width: int, height: int, frames: int, seed: int) -> Path:
    """A moving gradient with noise (so decoding is real work), H.264 with B-frames and the encoder's
    default keyframe interval, like web video."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    noise = rng.integers(-12, 13, size=(8, height, width, 3))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index in range(frames):
            base = np.stack([(x + 3 * index) % 256, (y + 2 * index) % 256, (x + y + 5 * index) % 256], -1)
            image = np.clip(base + noise[index % 8], 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


# Each workload returns what it decoded, for the equality check against PyAV.
def run_views(paths: list[Path], decoder: str, raw: bool = False) -> list[np.ndarray]:
    """The test views of each clip; `raw`: the frames behind them, before any resizing (what the
    equality check compares)."""
    out = []
    for path in paths:
        with open_video(path, decoder) as video:
            out.append(read_view_frames(video, VIEWS)[0] if raw else views_from_video(video, VIEWS).numpy())
    return out


def run_timeline(paths: list[Path], decoder: str) -> list[np.ndarray]:
    out = []
    with open_video(paths[0], decoder, "timeline") as video:
        for window in window_bounds(video.num_frames, video.fps, WINDOW_SECONDS):
            out.append(views_from_video(video, WINDOW, window).numpy())
    return out


def run_train(paths: list[Path], decoder: str, samples: int = 24) -> list[np.ndarray]:
    from uniformer_cli.data.sampling import train_indices

    rng = np.random.default_rng(0)
    out = []
    for sample in range(samples):
        with open_video(paths[sample % len(paths)], decoder, "train") as video:
            indices = train_indices("dense", video.num_frames, 16, 4, rng)
            out.append(video.read(indices))
    return out


WORKLOADS: dict[str, Callable[[list[Path], str], list[np.ndarray]]] = {
    "views": run_views,
    "timeline": run_timeline,
    "train": run_train,
}

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import torch  # imported before the measurement, as every command does
import bench_decoders as bench

def rss_mib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

paths = json.loads(sys.argv[4])
if sys.argv[3] == "torchcodec":
    from torchcodec.decoders import VideoDecoder  # its libraries load once per process, not measured
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # Linux: reset the peak resident size (VmHWM) to the current one
before = rss_mib("VmRSS")
bench.WORKLOADS[sys.argv[2]]([bench.Path(p) for p in paths], sys.argv[3])
print(json.dumps({"before_mib": before, "peak_mib": rss_mib("VmHWM")}))
"""


def peak_memory(workload: str, decoder: str, paths: list[Path]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CHILD, str(ROOT), workload, decoder, json.dumps([str(p) for p in paths])]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)
    return result["peak_mib"] - result["before_mib"]


def same_frames(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--decoders", nargs="+", default=None, help="default: every one that works here")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the timeline's 720p video")
    parser.add_argument("--clips", type=int, default=6, help="K400-like clips for views and train")
    parser.add_argument("--clip-size", default="340x256", help="their WIDTHxHEIGHT (torchcodec: try 320x256)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    contenders = args.decoders or decoders()
    import torch

    print(f"cpu     {cpu_description()}")
    print(f"python  {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"decode  {', '.join(contenders)}")
    with tempfile.TemporaryDirectory() as folder:
        width, height = (int(side) for side in args.clip_size.split("x"))
        clips = [write_source(Path(folder) / f"clip{i}.mp4", width, height, 300, i) for i in range(args.clips)]
        sources = {"views": clips, "train": clips}
        if "timeline" in args.workloads:
            frames = int(args.minutes * 60 * 30)
            sources["timeline"] = [write_source(Path(folder) / "long.mp4", 1280, 720, frames, 99)]
        print(f"data    {args.clips} clips {args.clip_size} 10 s; timeline 1280x720 {args.minutes:g} min; 30 fps H.264")
        for workload in args.workloads:
            paths = sources[workload]
            check = functools.partial(run_views, raw=True) if workload == "views" else WORKLOADS[workload]
            reference = check(paths, "pyav")
            equal = {decoder: same_frames(check(paths, decoder), reference) for decoder in contenders}
            times: dict[str, list[float]] = {decoder: [] for decoder in contenders}
            for round_number in range(args.rounds):
                shift = round_number % len(contenders)
                for decoder in contenders[shift:] + contenders[:shift]:
                    started = time.perf_counter()
                    WORKLOADS[workload](paths, decoder)
                    times[decoder].append(time.perf_counter() - started)
            base = statistics.median(times["pyav"])
            for decoder in contenders:
                median = statistics.median(times[decoder])
                memory = "" if args.no_memory else f"peak +{peak_memory(workload, decoder, paths):6.0f} MiB"
                print(
                    f"  {workload:<8} {decoder:<10} {median:7.2f} s  speed {base / median:4.2f}x PyAV  "
                    f"{memory}  frames {'equal' if equal[decoder] else 'DIFFER'}"
                )


if __name__ == "__main__":
    main()
