"""`uniformer flops`: what each model costs (parameters, GFLOPs, measured speed); thin layer over `engine.flops`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.options import BatchSizeOption, ClipsOption, CropsOption, DeviceOption, JsonFlag, ModelOption
from uniformer_cli.errors import UniformerError
from uniformer_cli.models.config import FAMILIES

ArchOption = Annotated[
    str | None,
    typer.Option("--arch", help=f"An architecture instead of zoo entries: {', '.join(FAMILIES)} (400 classes)."),
]
# --frames and --size filter the zoo here (or recompute a model), unlike the shared protocol overrides.
ShapeFramesOption = Annotated[
    int | None,
    typer.Option(
        "--frames",
        "-t",
        min=1,
        help="Frames per clip. Alone: the zoo entries released at this length (or, if"
        " none, every architecture at it); with --model / --arch: recompute at this length.",
    ),
]
ShapeSizeOption = Annotated[
    int | None, typer.Option("--size", min=1, help="Crop side in pixels; filters or recomputes like --frames.")
]
ByStageFlag = Annotated[
    bool, typer.Option("--by-stage", help="Also split GFLOPs per view over patch embeddings, stages and head.")
]
BenchFlag = Annotated[
    bool,
    typer.Option(
        "--bench", help="Also measure latency, throughput and peak memory (random weights, fast inference path)."
    ),
]
WarmupOption = Annotated[int, typer.Option("--warmup", min=0, help="Untimed forward passes before measuring.")]
RunsOption = Annotated[int, typer.Option("--runs", min=1, help="Timed forward passes; the median is reported.")]
CsvOption = Annotated[
    Path | None, typer.Option("--csv", help="Write the rows as CSV to FILE (`-`: stdout instead of the tables).")
]


def flops(
    model: ModelOption = None,
    arch: ArchOption = None,
    frames: ShapeFramesOption = None,
    size: ShapeSizeOption = None,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    by_stage: ByStageFlag = False,
    bench: BenchFlag = False,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = 1,
    warmup: WarmupOption = 2,
    runs: RunsOption = 5,
    json_output: JsonFlag = False,
    csv_path: CsvOption = None,
) -> None:
    """Parameters and GFLOPs of every zoo model (or one, or an architecture), beside the paper's figures.

    GFLOPs are per view (one clip x one crop) and in total over the test views.
    [bold]Counted[/]: convolutions (depthwise included), linear layers and the two attention matrix products
    (q k^T and probabilities x v), one multiply-accumulate = one FLOP, as the paper (fvcore) counts.
    [bold]Not counted[/]: normalisation, activations, softmax, pooling, bias and residual additions,
    token-selection bookkeeping.
    The light models' paper figures are up to 2.5% higher: they presumably include some of those.

    Examples:
    `uniformer flops --frames 16`
    `uniformer flops --model b16x4-k400 --by-stage`
    `uniformer flops --arch s --frames 8 --size 224 --bench --batch-size 4`
    """
    csv_to_stdout = csv_path is not None and str(csv_path) == "-"
    if json_output and csv_to_stdout:
        raise UniformerError("--json and --csv - both write to stdout: pick one")
    settings = (
        engine.flops.BenchSettings(device=device, batch_size=batch_size, warmup=warmup, runs=runs) if bench else None
    )
    workloads = engine.flops.select_workloads(
        model=model, arch=arch, frames=frames, size=size, clips=clips, crops=crops
    )
    rows = engine.flops.cost_rows(workloads, by_stage=by_stage, bench=settings)
    if json_output:
        typer.echo(json.dumps([row.as_dict() for row in rows], indent=2))
    elif csv_to_stdout:
        typer.echo(_csv_text(rows), nl=False)
    else:
        _print_tables(rows)
    if csv_path is not None and not csv_to_stdout:
        try:
            csv_path.write_text(_csv_text(rows), encoding="utf-8")
        except OSError as error:
            raise UniformerError(f"cannot write {csv_path}: {error.strerror or error}") from error


def _csv_text(rows: list[engine.flops.CostRow]) -> str:
    flat = [row.as_flat_dict() for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gflops(value: float) -> str:
    """Two decimals, or one significant digit for the tiny parts (the head) that would print as 0.00."""
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.1g}"


# Tables narrow enough for an 80-column terminal.
COMPACT: dict[str, Any] = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True}


def _print_tables(rows: list[engine.flops.CostRow]) -> None:
    console = Console()
    table = Table(title="UniFormer cost per view and over the test views", header_style="bold", **COMPACT)
    table.caption = "1 multiply-accumulate = 1 FLOP; counted: convolutions, linear layers, attention matmuls (--help)"
    table.add_column("model", no_wrap=True)
    for column in ("clip", "views", "params\n(M)", "GFLOPs\n/view", "GFLOPs\ntotal", "paper\n/view", "paper\ntotal"):
        table.add_column(column, justify="right")
    table.add_column("Δ\n/view", justify="right")
    for row in rows:
        diff = row.diff_pct
        table.add_row(
            row.name,
            f"{row.frames}x{row.size}",
            f"{row.clips}x{row.crops}",
            _number(row.params_m),
            _number(row.gflops_per_view),
            _number(row.gflops, 1),
            "-" if row.paper_gflops_per_view is None else f"{row.paper_gflops_per_view:g}",
            "-" if row.paper_gflops is None else f"{row.paper_gflops:g}",
            "-" if diff is None else f"{diff:+.1f}%",
        )
    console.print(table)
    if rows[0].stages is not None:
        # The four patch embeddings share one column so the table fits 80 columns; --json splits them.
        stages = Table(title="GFLOPs per view by stage (embeds: patch_embed1-4)", header_style="bold", **COMPACT)
        stages.add_column("model", no_wrap=True)
        blocks = [group for group in rows[0].stages if not group.startswith("patch_embed")]
        for column in ("embeds", *blocks):
            stages.add_column(column, justify="right")
        for row in rows:
            split = row.stages or {}
            embeds = sum(value for group, value in split.items() if group.startswith("patch_embed"))
            stages.add_row(row.name, *(_gflops(value) for value in (embeds, *(split[group] for group in blocks))))
        console.print(stages)
    if rows[0].bench is not None:
        speed = Table(title="Measured speed (median of the timed runs)", header_style="bold", **COMPACT)
        speed.add_column("model", no_wrap=True)
        for column in ("device", "precision", "batch", "latency\n(ms)", "clips/s", "peak memory\n(MiB)"):
            speed.add_column(column, justify="left" if column in ("device", "precision") else "right")
        for row in rows:
            result = row.bench
            assert result is not None
            speed.add_row(
                row.name,
                result.device,
                result.precision,
                str(result.batch_size),
                _number(result.latency_ms, 1),
                _number(result.clips_per_s),
                _number(result.peak_memory_mb, 0),
            )
        console.print(speed)
