"""Data loading for training and evaluation: loose files against packed shards on local disk and over S3,
with each decoder and DataLoader worker count; and whether workers keep a model busy.

    python benchmarks/bench_loader.py                       # the loader table (no model)
    python benchmarks/bench_loader.py --videos 24 --rounds 3 --workers 0 1 2 --decoders pyav decord
    python benchmarks/bench_loader.py --overlap [--family s] [--device auto]   # model busy vs idle

Loader table. Writes `--videos` synthetic K400-like clips (320x240, 150 frames of moving gradient plus
noise, H.264, a keyframe every 12 frames) as class folders, packs them (`uniformer data pack`, about 4
shards per split) into a local folder and into an S3 bucket on a moto server on 127.0.0.1 (started here;
needs the test extra), then reads every sample once per source, exactly as the engine does:
- train: training's DataLoader (`TrainClips` with `GlobalBatchSampler`, micro-batches of 4, the packed
  order for shards), one 16x4 dense clip per video, the basic augmentation at 224 px: clips/s;
- views: evaluation's `decoded_batches` (16x4 dense, 4 clips x 1 crop at 224 px, batches of 8 views):
  test views/s.
For each (workload, decoder, workers) the three sources alternate within each round; times are medians
over `--rounds`, and shards are given as ratios to loose files measured in the same rounds. A local S3
server costs little latency; a real object store adds tens of milliseconds per request, which the
one-request-per-shard-per-batch reads are there to amortise.

Overlap (`--overlap`, issue 7): scores the clips with `score_videos` once per `--workers` value, with a
model whose forward passes are timed between device synchronisations: model idle = (wall - busy) / wall
is the time the model waited for decoded views, worker start-up included.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_decoders import decoders  # noqa: E402

from uniformer_cli.data.augment import AugmentConfig, ClipAugment  # noqa: E402
from uniformer_cli.data.datasets import DatasetSplit, Sample, read_dataset, read_packed  # noqa: E402
from uniformer_cli.data.loading import init_decoding_worker  # noqa: E402
from uniformer_cli.device import select_device, synchronize  # noqa: E402
from uniformer_cli.engine.packing import PackRequest, pack  # noqa: E402
from uniformer_cli.engine.scoring import decoded_batches, score_videos  # noqa: E402
from uniformer_cli.engine.train_data import ClipSampling, GlobalBatchSampler, TrainClips, training_order  # noqa: E402
from uniformer_cli.models import create_model  # noqa: E402
from uniformer_cli.models.config import FAMILIES  # noqa: E402
from uniformer_cli.models.fast import optimize_for_inference  # noqa: E402
from uniformer_cli.protocol import ViewProtocol  # noqa: E402
from uniformer_cli.runtime import cpu_info  # noqa: E402

VIEWS = ViewProtocol(frames=16, stride=4, sampling="dense", clips=4, crops=1, size=224)
TRAIN_SAMPLING = ClipSampling(16, 4, "dense")
MICRO_BATCH = 4
CLASSES = 4


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


# -- the loader table ---------------------------------------------------------------------------------


def write_dataset(root: Path, videos: int) -> Path:
    """`root/{train,val}/c{k}/clip{n}.mp4`: `videos` clips per split, spread over the classes."""
    for split in ("train", "val"):
        for index in range(videos):
            folder = root / split / f"c{index % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            write_clip(folder / f"clip{index:03d}.mp4", index + (1000 if split == "val" else 0))
    return root


@contextlib.contextmanager
def s3_bucket() -> Iterator[str | None]:
    """A moto S3 server on 127.0.0.1 with a bucket, the AWS environment pointing at it; None without moto."""
    import os
    import socket

    try:
        import boto3
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    try:
        yield "s3://bench/shards"
    finally:
        server.stop()


def train_epoch(split: DatasetSplit, decoder: str, workers: int) -> int:
    """Training's DataLoader over one epoch of `split`; the clips it produced."""
    sampler = GlobalBatchSampler(len(split.samples), MICRO_BATCH, seed=0, order=training_order(split))
    augment = ClipAugment(AugmentConfig.basic(224))
    loader = DataLoader(
        TrainClips(split.samples, TRAIN_SAMPLING, augment, seed=0, decoder=decoder),
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=init_decoding_worker if workers else None,
    )
    clips = 0
    for batch, _ in loader:
        clips += len(batch)
    return clips


def test_views(split: DatasetSplit, decoder: str, workers: int) -> int:
    """Evaluation's reading of every sample's test views; the views it produced."""
    views = 0
    for batch in decoded_batches(split.samples, range(len(split.samples)), VIEWS, workers=workers, decoder=decoder):
        for _, item, error in batch:
            if item is None:
                raise SystemExit(f"a sample failed: {error}")
            views += len(item)
    return views


WORKLOADS = {"train": (train_epoch, "train", "clips/s"), "views": (test_views, "val", "views/s")}


def loader_table(args: argparse.Namespace) -> None:
    contenders = args.decoders or decoders()
    print(f"cpu     {cpu_info().describe()}")
    print(f"torch   {torch.__version__}, {torch.get_num_threads()} threads; decoders {', '.join(contenders)}")
    with tempfile.TemporaryDirectory() as folder, s3_bucket() as remote:
        root = write_dataset(Path(folder) / "loose", args.videos)
        shard_bytes = max(1, sum(f.stat().st_size for f in (root / "train").rglob("*.mp4")) // 4)
        pack(PackRequest(root, Path(folder) / "shards", shard_bytes=shard_bytes))
        sources = {"loose": lambda split: read_dataset("folder", root, split=split)}
        sources["shards"] = lambda split: read_packed(Path(folder) / "shards", split)
        if remote is not None:
            pack(PackRequest(root, remote, shard_bytes=shard_bytes))
            sources["shards-s3"] = lambda split: read_packed(remote, split)
        else:
            print("note    moto/s3fs not installed (pip install -e '.[test]'): no S3 column")
        print(f"data    {args.videos} clips per split, 320x240 H.264 150 frames; shards of ~{shard_bytes / 1e6:.1f} MB")
        print(f"rounds  {args.rounds}, sources alternating within each; medians")
        for workload, (run, split_name, unit) in WORKLOADS.items():
            if workload not in args.workloads:
                continue
            splits = {name: read(split_name) for name, read in sources.items()}
            for decoder in contenders:
                for workers in args.workers:
                    times: dict[str, list[float]] = {name: [] for name in splits}
                    count = run(splits["loose"], decoder, workers)  # warm-up: imports, decoder libraries
                    for round_number in range(args.rounds):
                        names = list(splits)
                        shift = round_number % len(names)
                        for name in names[shift:] + names[:shift]:
                            started = time.perf_counter()
                            produced = run(splits[name], decoder, workers)
                            times[name].append(time.perf_counter() - started)
                            assert produced == count, (name, produced, count)
                    medians = {name: statistics.median(values) for name, values in times.items()}
                    cells = ", ".join(f"{name} {count / seconds:6.1f}" for name, seconds in medians.items())
                    ratios = ", ".join(
                        f"{name}/loose {medians['loose'] / seconds:4.2f}x"
                        for name, seconds in medians.items()
                        if name != "loose"
                    )
                    print(f"  {workload:<5} {decoder:<10} workers {workers}  {unit}: {cells};  {ratios}")


def overlap(args: argparse.Namespace) -> None:
    device = select_device(args.device)
    protocol = ViewProtocol(
        frames=args.frames, stride=args.stride, sampling="dense", clips=args.clips, crops=args.crops, size=args.size
    )
    model = optimize_for_inference(create_model(FAMILIES[args.family]).to(device), inplace=True)
    timer = ForwardTimer(model, device)
    print(f"cpu     {cpu_info().describe()}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlap", action="store_true", help="model busy/idle with workers instead of the table")
    parser.add_argument("--videos", type=int, default=16, help="clips (per split for the table)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decoders", nargs="+", default=None, help="default: every one that works here")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--family", default="s", choices=sorted(FAMILIES), help="--overlap: architecture")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--crops", type=int, default=1)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.overlap:
        overlap(args)
    else:
        loader_table(args)


if __name__ == "__main__":
    main()
