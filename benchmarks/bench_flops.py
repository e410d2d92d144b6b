"""How fast `uniformer flops` counts, and what the models cost to run here.

Prints, in one run: the time to count one view of each family at its largest released clip (target: a
full-size B 32x224 in a second or two, on fake tensors), the time to cost the whole zoo table, and unless
`--no-speed` the measured latency / throughput / peak memory of S16 and B16 (fast inference path).

    python benchmarks/bench_flops.py [--device auto] [--batch-size 1] [--runs 5] [--no-speed]
"""

from __future__ import annotations

import argparse
import time

from uniformer_cli.engine.flops import BenchSettings, benchmark, cost_rows, count_macs, select_workloads
from uniformer_cli.models import FAMILIES
from uniformer_cli.zoo import ZOO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true", help="only time the counter")
    args = parser.parse_args()

    print("counting one view (fake tensors; the first call also builds the shape-only model)")
    for family in FAMILIES:
        entry = max((e for e in ZOO.values() if e.family == family), key=lambda e: (e.protocol.frames, e.protocol.size))
        start = time.perf_counter()
        count = count_macs(entry.config, entry.protocol.frames, entry.protocol.size)
        print(
            f"  {family:>3} {entry.protocol.frames}x{entry.protocol.size}: {count.macs / 1e9:8.2f} GFLOPs"
            f"  in {time.perf_counter() - start:5.2f} s"
        )
    start = time.perf_counter()
    rows = cost_rows(select_workloads())
    print(f"whole zoo table ({len(rows)} rows, counts cached above reused): {time.perf_counter() - start:.2f} s")

    if args.no_speed:
        return
    settings = BenchSettings(device=args.device, batch_size=args.batch_size, warmup=args.warmup, runs=args.runs)
    print(f"forward passes, batch {args.batch_size}, median of {args.runs} after {args.warmup} warm-up")
    for family in ("s", "b"):
        count = count_macs(FAMILIES[family], 16, 224)
        result = benchmark(FAMILIES[family], 16, 224, settings)
        # One multiply-accumulate is two floating-point operations of the hardware.
        achieved = 2 * count.macs * result.batch_size / (result.latency_ms / 1e3) / 1e9
        memory = "-" if result.peak_memory_mb is None else f"{result.peak_memory_mb:.0f} MiB"
        print(
            f"  {family}16x224 on {result.device} ({result.precision}): {result.latency_ms:8.1f} ms,"
            f" {result.clips_per_s:6.2f} clips/s, {achieved:6.1f} GFLOP/s, peak {memory}"
        )


if __name__ == "__main__":
    main()
