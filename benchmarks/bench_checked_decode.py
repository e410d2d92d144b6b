"""What the guard against native decoder crashes costs (issue 21): ordinary files, and suspicious ones.

    python benchmarks/bench_checked_decode.py [--rounds 15] [--frames 16]

Writes an H.264 Matroska clip (320x240, 96 frames) and a copy of it whose timestamps start at 1e9 s
(what crashes decord), then times, alternating the contenders round by round in this one process:

- the ordinary clip through `open_video` (probe with the hazard check, then PyAV), against the same with
  the check replaced by one that finds nothing: the cost of the check on every file;
- the suspicious copy through `open_video` (decoded by PyAV in a checked child process), against the same
  copy opened in-process (`guarded=False`): the cost of the child, paid by suspicious files only.

Each contender opens the clip and reads `--frames` frames spread over it. Prints medians, the ratios,
and the CPU (model and vector features): the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

import av
import numpy as np
from bench_engines import timed_rounds  # contenders alternating, round by round

from uniformer_cli.data import video as video_module
from uniformer_cli.data.video import open_video


def cpu_description() -> str:
    """The CPU model and its vector features, from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = {key.strip(): value.strip() for key, value in fields.items()}.get("flags", "").split()
    vector = sorted(flag for flag in flags if flag.startswith(("avx", "amx", "sse4")))
    model = {key.strip(): value.strip() for key, value in fields.items()}.get("model name", platform.machine())
    return f"{model} ({' '.join(vector)})"


def write_clip(path: Path, frames: int, offset_seconds: float) -> Path:
    """A 320x240 H.264 Matroska clip at 30 fps whose timestamps start at `offset_seconds`."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        packets = []
        for _ in range(frames):
            image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            packets += stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
        packets += stream.encode(None)
        for packet in packets:
            shift = int(offset_seconds / packet.time_base)
            packet.pts += shift
            packet.dts += shift
            container.mux(packet)
    return path


def read(path: Path, indices: list[int], **options: object) -> None:
    with open_video(path, "pyav", **options) as opened:  # type: ignore[arg-type]
        opened.read(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory() as folder:
        ordinary = write_clip(Path(folder) / "ordinary.mkv", 96, 0.0)
        hostile = write_clip(Path(folder) / "hostile.mkv", 96, 1e9)
        indices = np.linspace(0, 95, args.frames).round().astype(int).tolist()
        real_check = video_module._hazard

        def unchecked() -> None:
            video_module._hazard = lambda *args: None  # type: ignore[assignment]
            try:
                read(ordinary, indices)
            finally:
                video_module._hazard = real_check

        times = timed_rounds(
            {
                "ordinary, checked": lambda: read(ordinary, indices),
                "ordinary, no check": unchecked,
                "suspicious, child": lambda: read(hostile, indices),
                "suspicious, in-process": lambda: read(hostile, indices, guarded=False),
            },
            args.rounds,
            warmup=1,
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"  {name:24} {seconds * 1e3:8.1f} ms (median of {args.rounds})")
    print(f"  check on every file:    {medians['ordinary, checked'] / medians['ordinary, no check']:.3f} x")
    print(f"  child for suspicious:   {medians['suspicious, child'] / medians['suspicious, in-process']:.2f} x")


if __name__ == "__main__":
    main()
