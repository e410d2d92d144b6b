"""Where `uniformer predict` spends its time on a 10 s clip: decode, preprocess and model.

Uses the example clip (examples/yoga.mp4: 300 frames, 426x320, exactly 10 s) unless `--video` names
another, a zoo architecture with random weights (the split does not depend on the values) and the
model's released protocol (`--clips` / `--crops` override it). Each stage is timed `--runs` times after
one warm-up and the median is printed; the decode line also says how many frames were decoded.

    python benchmarks/bench_predict.py [--model s16x4-k400] [--device auto] [--decoder auto] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from uniformer_cli.data import open_video
from uniformer_cli.data.views import read_view_frames, views_from_frames
from uniformer_cli.device import select_device, synchronize
from uniformer_cli.engine.predict import Predictor
from uniformer_cli.models import create_model
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.zoo import get_entry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "yoga.mp4"


def _median_seconds(work: Callable[[], object], runs: int, device: torch.device) -> tuple[float, object]:
    work()  # warm-up: first-call allocations, kernel selection, decoder start-up
    times, result = [], None
    for _ in range(runs):
        synchronize(device)
        started = time.perf_counter()
        result = work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="s16x4-k400", help="zoo name: architecture and protocol")
    parser.add_argument("--video", type=Path, default=EXAMPLE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--clips", type=int)
    parser.add_argument("--crops", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    entry = get_entry(args.model)
    device = select_device(args.device)
    protocol = entry.protocol.with_views(args.clips, args.crops)
    # The model `uniformer predict` runs: the fast inference path on the chosen device.
    model = optimize_for_inference(create_model(entry.config).to(device), inplace=True)
    predictor = Predictor(model, protocol, device=device, batch_size=args.batch_size)

    def decode() -> tuple[object, ...]:
        with open_video(args.video, args.decoder) as video:
            frames, positions = read_view_frames(video, protocol)
            return frames, positions, video

    decode_s, (frames, positions, video) = _median_seconds(decode, args.runs, device)
    preprocess_s, views = _median_seconds(lambda: views_from_frames(frames, positions, protocol), args.runs, device)
    model_s, _ = _median_seconds(lambda: predictor.logits(views), args.runs, device)
    total = decode_s + preprocess_s + model_s

    print(f"video   {args.video.name}: {video.num_frames} frames, {video.duration:.1f} s, {video.width}x{video.height}")
    print(f"model   {entry.name} (random weights), {protocol.describe()}, batch {args.batch_size}, {device}")
    print(f"torch   {torch.__version__}, {torch.get_num_threads()} CPU threads")
    decoded = f"{len(frames)} frames with {video.decoder}"
    for stage, seconds, note in (
        ("decode", decode_s, decoded),
        ("preprocess", preprocess_s, f"{protocol.views} views"),
        ("model", model_s, ""),
    ):
        print(f"{stage:<11}{seconds * 1000:9.1f} ms  {seconds / total:6.1%}  {note}")
    print(f"{'total':<11}{total * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
