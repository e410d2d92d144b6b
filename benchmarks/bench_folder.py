"""A folder of clips (issue 22): `uniformer predict DIR` (PyTorch bf16, and `--engine openvino`) and
`uniformer eval` against a hand-written loop, the yardstick: PyAV decode, numpy normalisation and an
OpenVINO bf16 compiled model (the IR `uniformer export --format openvino` writes), the same protocol
(the frames `data.sampling.view_frame_indices` picks, short side resized with swscale's bilinear filter,
centre crops), the next clip decoded in a thread while the model runs on the current one.

Synthetic clips (`--clips`, `--seconds`, `--width`x`--height`) in class folders, a random S16 saved with the
s16x4-k400 protocol (4 views of 16x224x224 per clip). Each run is a fresh process, from its start to its
exit, contenders alternating over `--rounds`; it prints clips/s (median), the ratio to the hand loop, CPU
use (user + system seconds of the process and the children it waited for, over wall seconds: cores kept
busy) and peak memory (the resident set of the process and all its children, sampled every 20 ms).

    python benchmarks/bench_folder.py [--clips 8] [--rounds 3] [--workers 0] [--baseline /tmp/main]

`predict DIR --engine openvino` takes the torch-free route (`engine.torch_free`) once the warm-up run has
converted and compiled the model; `--baseline` runs another checkout's as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")

# The yardstick: what a user writes without this package's engine (it borrows only the torch-free
# frame-index rule, so that both decode the same frames).
HAND_LOOP = r"""
import math, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import av, numpy as np, openvino as ov
from uniformer_cli.data.sampling import view_frame_indices
from uniformer_cli.protocol import ViewProtocol

xml, folder, threads, cache = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
protocol = ViewProtocol.from_dict(sys.argv[5])
SIZE = protocol.size
LEVELS = ((np.arange(256, dtype=np.float32) / 255.0 - 0.45) / 0.225).astype(np.float32)

def views(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
        unique, positions = view_frame_indices(protocol, count)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < height:
            new = SIZE, math.floor(height / width * SIZE)
        else:
            new = math.floor(width / height * SIZE), SIZE
        y, x = math.ceil((new[1] - SIZE) / 2), math.ceil((new[0] - SIZE) / 2)
        wanted, frames = set(unique.tolist()), {}
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                image = frame.to_ndarray(width=new[0], height=new[1], format="rgb24", interpolation="BILINEAR")
                frames[index] = image[y : y + SIZE, x : x + SIZE]
            if index >= unique[-1]:
                break
    last = frames[max(frames)]
    stacked = np.stack([frames.get(index, last) for index in unique.tolist()])
    return np.stack([LEVELS[stacked[clip]].transpose(3, 0, 1, 2) for clip in positions])

core = ov.Core()
config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
          "CACHE_DIR": cache}
compiled = core.compile_model(xml, "CPU", config)
files = sorted(folder.rglob("*.mp4"))
with ThreadPoolExecutor(1) as pool:
    upcoming = pool.submit(views, files[0])
    for number, path in enumerate(files):
        clip_views = upcoming.result()
        if number + 1 < len(files):
            upcoming = pool.submit(views, files[number + 1])
        logits = np.asarray(compiled(clip_views)[0]).mean(axis=0)
        print(path.name, int(logits.argmax()))
"""


def write_clips(folder: Path, count: int, seconds: float, width: int, height: int) -> list[Path]:
    """`count` H.264 clips at 30 fps: a moving gradient with a little noise (cheap to encode, not empty)."""
    import av

    rng = np.random.default_rng(0)
    clips = []
    y, x = np.mgrid[0:height, 0:width]
    for number in range(count):
        path = folder / "val" / f"class{number % 2}" / f"clip{number}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(int(seconds * 30)):
                phase = index * (3 + number)
                image = np.stack([(x + phase) % 256, (y + 2 * phase) % 256, (x + y + phase) % 256], axis=-1)
                image = (image + rng.integers(0, 16, image.shape)).clip(0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        clips.append(path)
    return clips


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    tree, total, pending = _children(), 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
        pending.extend(tree.get(current, []))
    return total


def run(command: list[str], environment: dict[str, str], cwd: Path | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (the process and the children it waited for) and peak resident bytes of
    the process tree (sampled). `cwd`: outside any checkout, so that `python -m` imports the package the
    environment names (`--baseline`'s PYTHONPATH, else the installed one)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment, cwd=cwd)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0,):
        raise SystemExit(f"{' '.join(command[:6])} ... exited {process.returncode}:\n{errors.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="eval's DataLoader workers (-j)")
    parser.add_argument("--only", nargs="*", help="contenders to run (names as printed)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git archive main | tar -x -C /tmp/main`): its predict DIR --engine openvino "
        "joins the contenders, for a before/after in one run",
    )
    args = parser.parse_args()

    from bench_engines import random_s16

    from uniformer_cli.runtime import cpu_info
    from uniformer_cli.zoo import get_entry

    print(f"CPU: {cpu_info().describe()}")
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        clips = write_clips(folder / "data", args.clips, args.seconds, args.width, args.height)
        entry = get_entry("s16x4-k400")
        weights = random_s16(folder / "s16.safetensors")
        environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HOME": str(folder / "hf")}
        cli = [sys.executable, "-m", "uniformer_cli.cli.app"]
        subprocess.run(
            [*cli, "export", str(weights), "--format", "openvino", "-o", str(folder / "ir")],
            check=True,
            capture_output=True,
            env=environment,
        )
        [xml] = (folder / "ir").glob("*.xml")
        predict = [*cli, "predict", str(folder / "data"), "--weights", str(weights), "--device", "cpu", "--json"]
        contenders = {
            "hand loop (PyAV + OpenVINO bf16)": [
                sys.executable,
                "-c",
                HAND_LOOP,
                str(xml),
                str(folder / "data"),
                str(args.threads),
                str(folder / "ov-cache"),
                json.dumps(entry.protocol.as_dict()),
            ],
            "predict DIR bf16 (torch)": [*predict, "--precision", "bf16", "--engine", "torch"],
            "predict DIR bf16 --engine openvino": [*predict, "--precision", "bf16", "--engine", "openvino"],
            f"eval bf16 (torch), -j {args.workers}": [
                *cli,
                "eval",
                "-D",
                "folder",
                "-r",
                str(folder / "data"),
                "--weights",
                str(weights),
                "--device",
                "cpu",
                "--precision",
                "bf16",
                "--engine",
                "torch",
                "-j",
                str(args.workers),
                "--json",
            ],
        }
        if args.baseline is not None:
            contenders["baseline: predict DIR bf16 --engine openvino"] = [
                "env",
                f"PYTHONPATH={args.baseline.resolve()}",
                *predict,
                "--precision",
                "bf16",
                "--engine",
                "openvino",
            ]
        if args.only:
            contenders = {name: command for name, command in contenders.items() if name in args.only}
        for command in contenders.values():  # warm-up: OpenVINO's conversion and blob caches, file caches
            run(command, environment, folder)
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in contenders}
        for round_number in range(args.rounds):
            names = list(contenders) if round_number % 2 == 0 else list(reversed(contenders))
            for name in names:
                results[name].append(run(contenders[name], environment, folder))
        print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print(
            f"{len(clips)} clips of {args.seconds:g} s, {args.width}x{args.height}, 30 fps; random S16, "
            f"{entry.protocol.describe()}; {args.threads} threads; each run a fresh process (start to exit), "
            f"median of {args.rounds} alternating rounds after a warm-up run"
        )
        base = statistics.median(wall for wall, _, _ in results[next(iter(results))])
        print("| contender | clips/s | vs hand loop | CPU use (cores) | peak memory (tree) |")
        print("|---|---|---|---|---|")
        for name, rows in results.items():
            wall = statistics.median(row[0] for row in rows)
            cpu = statistics.median(row[1] / row[0] for row in rows)
            peak = max(row[2] for row in rows) / 2**20
            print(f"| {name} | {len(clips) / wall:.2f} | {base / wall:.2f}x | {cpu:.2f} | {peak:.0f} MiB |")


if __name__ == "__main__":
    main()
