"""`uniformer flops`: what each model costs (parameters, GFLOPs, measured speed); thin layer over `engine.flops`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console

from uniformer_cli import engine
from uniformer_cli.cli.options import (
    MAX_PASSES,
    Arch,
    BatchSizeOption,
    ClipsOption,
    CropsOption,
    Device,
    DeviceOption,
    ModelOption,
    Precision,
    PrecisionOption,
)
from uniformer_cli.cli.output import Column, JsonFlag, Output, OutputOption, Result, dropped_note, fitted_table
from uniformer_cli.cli.progress import ProgressBars, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.errors import UniformerError

ArchOption = Annotated[
    Arch | None,
    typer.Option(
        "--arch",
        case_sensitive=False,
        help="An architecture instead of zoo entries (400 classes).",
        show_default=False,
    ),
]
# --frames and --size filter the zoo here (or recompute a model), unlike the shared protocol overrides.
ShapeFramesOption = Annotated[
    int | None,
    typer.Option(
        "--frames",
        "-t",
        min=1,
        help="Frames per clip. Alone: the zoo entries released at this length (or, if"
        " none, every architecture at it); with --model / --arch: recompute at this length."
        " \\[default: all; 16 with --arch]",
        show_default=False,
    ),
]
ShapeSizeOption = Annotated[
    int | None,
    typer.Option(
        "--size",
        min=1,
        help="Crop side in pixels; filters or recomputes like --frames. \\[default: all; the released one with --arch]",
        show_default=False,
    ),
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
WarmupOption = Annotated[
    int, typer.Option("--warmup", min=0, max=MAX_PASSES, help="Untimed forward passes before measuring.")
]
RunsOption = Annotated[
    int, typer.Option("--runs", min=1, max=MAX_PASSES, help="Timed forward passes; the median is reported.")
]
CsvOption = Annotated[
    str | None,
    typer.Option("--csv", metavar="FILE", hidden=True, help="Old spelling of -o FILE, as CSV ('-': stdout)."),
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
    device: DeviceOption = Device.auto,
    batch_size: BatchSizeOption = 1,
    precision: PrecisionOption = Precision.auto,
    warmup: WarmupOption = 2,
    runs: RunsOption = 5,
    json_output: JsonFlag = False,
    output: OutputOption = None,
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
    `uniformer flops --by-stage -o flops.csv`
    `uniformer flops --model s16x4-k400 --bench --precision bf16`
    """
    if output is not None and csv_path is not None:
        raise UniformerError("--csv is the old spelling of -o FILE.csv: give one of them")
    destination = Output(json_output, csv_path, forced_format="csv") if csv_path else Output(json_output, output)
    settings = (
        engine.flops.BenchSettings(device=device, batch_size=batch_size, warmup=warmup, runs=runs, precision=precision)
        if bench
        else None
    )
    workloads = engine.flops.select_workloads(
        model=model, arch=arch, frames=frames, size=size, clips=clips, crops=crops
    )
    with ProgressBars(stderr_console.is_terminal) as bars:
        rows = engine.flops.cost_rows(workloads, by_stage=by_stage, bench=settings, progress=bars)
    destination.finish(Result([row.as_dict() for row in rows]), lambda console: _print_tables(console, rows))


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gflops(value: float) -> str:
    """Two decimals, or one significant digit for the tiny parts (the head) that would print as 0.00."""
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.1g}"


# Numbers never wrap; model names fold and low-value columns go when the terminal is narrow.
COMPACT: dict[str, Any] = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True, "header_style": "bold"}
MODEL = Column("model", wrap=True)
COST_COLUMNS = (
    MODEL,
    Column("clip", justify="right", drop=3),
    Column("views", justify="right", drop=2),
    Column("params\n(M)", justify="right", drop=4),
    Column("GFLOPs\n/view", justify="right"),
    Column("GFLOPs\ntotal", justify="right"),
    Column("paper\n/view", justify="right"),
    Column("paper\ntotal", justify="right", drop=1),
    Column("Δ\n/view", justify="right"),
)
SPEED_COLUMNS = (
    MODEL,
    Column("device", drop=2),
    Column("precision", drop=1),
    Column("batch", justify="right"),
    Column("latency\n(ms)", justify="right"),
    Column("clips/s", justify="right"),
    Column("peak\nMiB", justify="right"),
)


def _published(value: float | None, step: float | None) -> str:
    """A published figure as it was published: GFLOPs, or TFLOPs to one decimal (UniFormerV2's)."""
    if value is None:
        return "-"
    return f"{value / 1000:g}T" if step else f"{value:g}"


def _difference(row: engine.flops.CostRow) -> str:
    if row.diff_pct is None:
        return "-"
    return "rounds" if row.paper_step and row.diff_pct == 0 else f"{row.diff_pct:+.1f}%"


def _print_stage_table(console: Console, groups: tuple[str, ...], rows: list[engine.flops.CostRow]) -> None:
    embeds = [group for group in groups if group.startswith("patch_embed")]
    parts = [group for group in groups if group not in embeds]
    names = (["embeds"] if embeds else []) + [group.rsplit(".", 1)[-1] for group in parts]
    columns = [MODEL, *(Column(name, justify="right") for name in names)]
    cells = []
    for row in rows:
        split = row.stages or {}
        values = ([sum(split[group] for group in embeds)] if embeds else []) + [split[group] for group in parts]
        cells.append([escape(row.name), *(_gflops(value) for value in values)])
    title = "GFLOPs per view by part" + (" (embeds: patch_embed1-4)" if embeds else "")
    table, _ = fitted_table(console, columns, cells, title=title, **COMPACT)
    console.print(table)


def _print_tables(console: Console, rows: list[engine.flops.CostRow]) -> None:
    cells = [
        [
            escape(row.name),
            f"{row.frames}x{row.size}",
            f"{row.clips}x{row.crops}",
            _number(row.params_m),
            _number(row.gflops_per_view),
            _number(row.gflops, 1),
            _published(row.paper_gflops_per_view, row.paper_step),
            _published(row.paper_gflops, row.paper_step),
            _difference(row),
        ]
        for row in rows
    ]
    title = "Cost per view and over the test views"
    table, dropped = fitted_table(console, COST_COLUMNS, cells, title=title, **COMPACT)
    table.caption = "1 multiply-accumulate = 1 FLOP; counted: convolutions, linear layers, attention matmuls (--help)"
    table.caption += dropped_note(dropped)
    console.print(table)
    if rows[0].stages is not None:
        # One table per kind of network (its cost groups); UniFormer's four patch embeddings share one column
        # so the table stays narrow; --json splits them.
        kinds: dict[tuple[str, ...], list[engine.flops.CostRow]] = {}
        for row in rows:
            kinds.setdefault(tuple(row.stages or {}), []).append(row)
        for groups, members in kinds.items():
            _print_stage_table(console, groups, members)
    if rows[0].bench is not None:
        speed_cells = []
        for row in rows:
            result = row.bench
            assert result is not None
            speed_cells.append(
                [
                    escape(row.name),
                    result.device,
                    result.precision,
                    str(result.batch_size),
                    _number(result.latency_ms, 1),
                    _number(result.clips_per_s),
                    _number(result.peak_memory_mb, 0),
                ]
            )
        title = "Measured speed (median of the timed runs)"
        speed, dropped = fitted_table(console, SPEED_COLUMNS, speed_cells, title=title, **COMPACT)
        speed.caption = dropped_note(dropped).strip() or None
        console.print(speed)
