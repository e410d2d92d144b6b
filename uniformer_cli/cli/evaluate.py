"""`uniformer eval`: accuracy of a model on a dataset split with the official test protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine, plots
from uniformer_cli.cli.click_api import MissingParameter
from uniformer_cli.cli.options import (
    MAX_COUNT,
    BatchSizeOption,
    ChannelOrderOption,
    ClipsOption,
    CompileFlag,
    CropsOption,
    Dataset,
    Decoder,
    DecoderOption,
    Device,
    DeviceOption,
    Engine,
    EngineOption,
    FramesOption,
    HeadDimOption,
    ListFileOption,
    ModelOption,
    PackedDataOption,
    Precision,
    PrecisionOption,
    RevisionOption,
    RootOption,
    SamplingOption,
    SizeOption,
    SplitOption,
    StrideOption,
    WeightsOption,
    WorkersOption,
    fields_from,
    inference_request,
    require_root,
)
from uniformer_cli.cli.output import JsonFlag, Output, OutputOption, Result
from uniformer_cli.cli.progress import ProgressBars, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.data.datasets import DATASETS
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.files import ensure_writable


def _layouts_epilog() -> str:
    """Every layout the readers find without --list, one line per dataset (datasets that share their
    layouts share a line); docs/DATASETS.md shows an example tree of each."""
    lines: dict[tuple[str, ...], list[str]] = {}
    for spec in DATASETS.values():
        lines.setdefault(tuple(layout.name for layout in spec.layouts), []).append(spec.name)
    rows = [f"{', '.join(names)}: {' | '.join(layouts)}" for layouts, names in lines.items()]
    paragraphs = ["Layouts (an example tree of each: docs/DATASETS.md):", *(f"- {row}" for row in rows)]
    return "\n\n".join(map(escape, paragraphs))


LAYOUTS_EPILOG = _layouts_epilog()


def evaluate(
    dataset: Annotated[
        Dataset | None,
        typer.Option(
            "--dataset",
            "-D",
            case_sensitive=False,
            help="Picks the reader, list file names, class names and default model. \\[default: with --data,"
            " the dataset it was packed from]",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    split: SplitOption = "val",
    list_file: ListFileOption = None,
    data: PackedDataOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    revision: RevisionOption = None,
    head_dim: HeadDimOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    size: SizeOption = None,
    channel_order: ChannelOrderOption = None,
    device: DeviceOption = Device.auto,
    decoder: DecoderOption = Decoder.auto,
    compile_model: CompileFlag = False,
    precision: PrecisionOption = Precision.auto,
    engine_name: EngineOption = Engine.auto,
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = DEFAULT_WORKERS,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=MAX_COUNT, help="Evaluate only the first N videos.")
    ] = None,
    skip_broken: Annotated[
        bool,
        typer.Option("--skip-broken", help="Leave unreadable videos out of the accuracy (default: count as wrong)."),
    ] = False,
    json_output: JsonFlag = False,
    output: OutputOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run saved in -o FILE.json: skip videos already scored.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Write per_class.png (accuracy bars) and confusion.png (matrix, or the most confused pairs "
            "when there are many classes) to this folder. Needs the plot extra.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Evaluate a model on a dataset split: top-1, top-5 and mean class accuracy, released protocol.

    The model defaults to the dataset's zoo checkpoint, the protocol (sampling, views, size, channel order)
    to the model's (for weights without one, the dataset's zoo model's, else --frames with --stride or
    --sampling). Unreadable videos count as wrong (exit status 3) and are listed. `-o FILE.json` is also
    saved every minute and on Ctrl-C or SIGTERM; `--resume` continues it.
    Multi-GPU: `torchrun --nproc-per-node 8 -m uniformer_cli.cli.app eval ...` (same numbers, one shard each).

    Examples:
    `uniformer eval --dataset sthv2 --root /data/sthv2 -o sthv2.json`
    `uniformer eval --data s3://bucket/k400-shards -o k400.json`
    """
    if dataset is None and data is None:
        raise MissingParameter(
            "Name the dataset (with --root) or a packed dataset (--data).", param_hint="'--dataset' / '-D'"
        )
    require_root(root, list_file, data)
    destination = Output(json_output, output)
    # A JSON file is the engine's: it saves progress into it and --resume reads it back.
    json_path = destination.file if destination.file is not None and destination.file_format == "json" else None
    request = engine.evaluate.EvalRequest(
        **fields_from(engine.evaluate.EvalRequest, locals(), inference=inference_request(locals()))
    )
    if plot is not None:
        plots.require_matplotlib()
        for name in PLOT_FILES:  # before any work
            ensure_writable(plot / name, "plot")
    with ProgressBars(stderr_console.is_terminal) as bars:
        report = engine.evaluate.run_evaluation(request, bars)
    if report is None:  # a torchrun rank other than 0
        return
    document = report.to_json()
    code = destination.emit(
        Result(document["videos"], document=document),  # type: ignore[arg-type]
        lambda console: show(console, report, destination.file),
        file_written=json_path is not None,
    )
    if plot is not None:
        _plot(report, plot)
    # torchrun reports any non-zero status of a process as a crash, with a traceback of its own: a
    # multi-process run lists its failed videos and exits 0 (docs/OUTPUT.md).
    if code and report.processes == 1:
        raise typer.Exit(code)


PLOT_FILES = ("per_class.png", "confusion.png")  # what --plot FOLDER receives


def _plot(report: engine.evaluate.EvalReport, folder: Path) -> None:
    """Per-class accuracy and confusions of the readable videos (their top-1 prediction)."""
    scored = [result for result in report.results if result.error is None and result.top5]
    labels, predicted = [r.label for r in scored], [r.top5[0] for r in scored]
    written = [
        plots.per_class_plot(folder / PLOT_FILES[0], report.classes, labels, predicted),
        plots.confusion_plot(folder / PLOT_FILES[1], report.classes, labels, predicted),
    ]
    stderr_console.print(escape(f"plots: {', '.join(map(str, written))}"), highlight=False)


def show(console: Console, report: engine.evaluate.EvalReport, json_file: Path | str | None) -> None:
    console.print(
        f"[bold]{escape(report.model)}[/] on {report.dataset} {escape(report.split)}", highlight=False, soft_wrap=True
    )
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("top-1", f"{report.top1:.2f}%"),
        ("top-5", f"{report.top5:.2f}%"),
        ("mean class", f"{report.mean_class:.2f}%"),
    ]
    if report.paper_top1 is not None:
        rows.append(("paper top-1", f"{report.paper_top1:.1f}%"))
    counted = "" if report.counted == report.videos else f" ({report.counted} counted)"
    treated = "" if not report.failures else " (left out)" if report.skip_broken else " (counted as wrong)"
    rows += [
        ("videos", f"{report.videos}{counted}"),
        ("failures", f"{report.failures}{treated}"),
        ("videos/s", f"{report.videos_per_s:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    details = [
        f"protocol {report.protocol_text}",
        f"list {report.list_file} ({report.layout})",
        f"device {report.device}" + (f" x {report.processes} processes" if report.processes > 1 else ""),
    ]
    if report.evaluated != report.videos:
        details.append(f"{report.videos - report.evaluated} videos taken from the resumed file")
    if json_file is not None:
        details.append(f"per-video predictions in {json_file}")
    console.print("\n".join(map(escape, details)), style="dim", highlight=False)
    if report.failed:
        console.print(f"[bold red]{report.failures} unreadable video(s):[/]")
        for result in report.failed:
            console.print(escape(f"  {result.video}: {result.error}"), highlight=False, soft_wrap=True)
