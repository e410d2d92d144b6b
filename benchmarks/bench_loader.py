"""Whether DataLoader workers keep the model busy during evaluation (decode overlapping the forward passes).

Writes `--videos` synthetic H.264 clips (320x240, 150 frames of moving gradient plus noise, so decoding is
real work) to a temporary folder and scores them with the eval engine's `score_videos`, once per
`--workers` value. The model (a zoo family with random weights, on the fast inference path) has hooks so
that every forward pass is timed between device synchronisations: the sum is the model-busy time, the
wall time of consuming the whole iterator is the total, and idle = wall - busy is the time the model
waited for decoded views (worker start-up included). With workers, decoding runs in other processes while
the model computes; on a 2-core CPU those workers compete with the model's own threads for the same
cores, so the overlap buys less there than on a GPU machine, where the model does not use the CPU.

    python benchmarks/bench_loader.py [--family s] [--videos 12] [--workers 0 2] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn

from uniformer_cli.data.datasets import Sample
from uniformer_cli.device import select_device, synchronize
from uniformer_cli.engine.scoring import score_videos
from uniformer_cli.models import create_model
from uniformer_cli.models.config import FAMILIES
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.protocol import ViewProtocol


class ForwardTimer:
    """Adds the synchronised duration of each forward pass of `model` to `busy`, through forward hooks,
    so the engine runs the model itself (its autocast and fast-path checks see the real module)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.busy = 0.0
        self.started = 0.0
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._stop)

    def _start(self, *_: object) -> None:
        synchronize(self.device)
        self.started = time.perf_counter()

    def _stop(self, *_: object) -> None:
        synchronize(self.device)
        self.busy += time.perf_counter() - self.started


def write_clip(path: Path, seed: int, frames: int = 150, width: int = 320, height: int = 240) -> Path:
    """An H.264 clip of a gradient that moves each frame, plus per-frame noise (keyframe every 12)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 12
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for index in range(frames):
            base = np.stack([(x * 2 + index * 5) % 256, (y * 2 + index * 3) % 256, (x + y + index * 7) % 256], -1)
            noise = rng.integers(-24, 25, size=base.shape)
            image = np.clip(base + noise, 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def measure(
    model: nn.Module,
    timer: ForwardTimer,
    samples: list[Sample],
    protocol: ViewProtocol,
    device: torch.device,
    batch_size: int,
    workers: int,
) -> tuple[float, float]:
    """(wall seconds, model-busy seconds) of scoring every sample once."""
    keys = [sample.path.name for sample in samples]
    timer.busy = 0.0
    synchronize(device)
    started = time.perf_counter()
    for _, result in score_videos(
        model, samples, range(len(samples)), keys, protocol, device, batch_size=batch_size, workers=workers
    ):
        if result.error:
            raise SystemExit(f"{result.key}: {result.error}")
    synchronize(device)
    return time.perf_counter() - started, timer.busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="s", choices=sorted(FAMILIES), help="architecture, random weights")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--crops", type=int, default=1)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    device = select_device(args.device)
    protocol = ViewProtocol(
        frames=args.frames, stride=args.stride, sampling="dense", clips=args.clips, crops=args.crops, size=args.size
    )
    model = optimize_for_inference(create_model(FAMILIES[args.family]).to(device), inplace=True)
    timer = ForwardTimer(model, device)
    print(f"torch   {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
    print(f"model   {args.family} (random weights), {protocol.describe()}, batch {args.batch_size}")

    with tempfile.TemporaryDirectory() as folder:
        samples = [
            Sample(write_clip(Path(folder) / f"clip{index:03d}.mp4", index), index % 400)
            for index in range(args.videos)
        ]
        print(f"data    {args.videos} synthetic clips, 320x240 H.264, 150 frames")
        measure(model, timer, samples[:1], protocol, device, args.batch_size, 0)  # warm-up: allocations, kernels
        for workers in args.workers:
            wall, busy = measure(model, timer, samples, protocol, device, args.batch_size, workers)
            idle = 100 * max(wall - busy, 0.0) / wall
            print(
                f"workers {workers}: wall {wall:6.2f} s, model busy {busy:6.2f} s, "
                f"model idle {idle:5.1f} %, {len(samples) / wall:5.2f} videos/s"
            )


if __name__ == "__main__":
    main()
