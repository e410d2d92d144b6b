"""`uniformer predict`: ranked labels (or a timeline) for videos, as tables, JSON or CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.bar import Bar
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uniformer_cli import data, engine, plots
from uniformer_cli.cli.options import (
    BatchSizeOption,
    ChannelOrderOption,
    ClipsOption,
    CompileFlag,
    CropsOption,
    DecoderOption,
    DeviceOption,
    FramesOption,
    HeadDimOption,
    JsonFlag,
    ModelOption,
    RevisionOption,
    SamplingOption,
    SizeOption,
    StrideOption,
    WeightsOption,
)
from uniformer_cli.errors import UniformerError
from uniformer_cli.progress import print_error, stderr_console
from uniformer_cli.zoo import DEFAULT_MODEL

PREDICTION_COLUMNS = ("file", "model", "rank", "label", "index", "score", "seconds")
TIMELINE_COLUMNS = ("file", "model", "start", "end", "label", "index", "score")


def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Video files, frame folders, folders (searched recursively) or globs such as 'clips/**/*.mp4'.",
            show_default=False,
            metavar="PATH",
        ),
    ],
    model: ModelOption = None,
    weights: WeightsOption = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per video.")] = 5,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    size: SizeOption = None,
    channel_order: ChannelOrderOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = 8,
    decoder: DecoderOption = "auto",
    compile_model: CompileFlag = False,
    json_output: JsonFlag = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write the results to this CSV file.", dir_okay=False)
    ] = None,
    timeline: Annotated[
        float | None,
        typer.Option(
            "--timeline",
            min=0.01,
            help="Slide a window of this many seconds over each video and show its top label per window "
            "(one centre-crop clip per window, or --clips).",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="With --timeline: draw the top classes' scores over time to this PNG (one per video: "
            "FILE-<video>.png when there are several). Needs the plot extra.",
            dir_okay=False,
        ),
    ] = None,
    revision: RevisionOption = None,
    head_dim: HeadDimOption = None,
) -> None:
    """Classify videos with a zoo model or your own weights, under the model's test protocol.

    Without --model or --weights the model is [bold]{default}[/]. A local [italic].pth[/] of a zoo checkpoint
    takes --model naming its entry (that gives its protocol and labels); a safetensors file written by
    `uniformer convert` or `uniformer train` carries them. Any other file (e.g. a custom architecture) needs
    its protocol from --frames with --stride or --sampling (then clips 1, crops 1, size 224, RGB unless
    given) and shows its classes as `class N`. The protocol flags also override a model's own protocol.
    Scores are the softmax of the mean of the views' logits. Files that cannot be read are listed at the
    end (exit status 1); the others are still predicted.

    Examples: `uniformer predict examples/yoga.mp4 --model b-k400`,
    `uniformer predict videos/ --json`, `uniformer predict long.mp4 --timeline 2`,
    `uniformer predict clip.mp4 --weights mine.pth --frames 16 --stride 4`
    """
    if plot is not None:
        if timeline is None:
            raise typer.BadParameter("--plot draws a timeline: add --timeline SECONDS", param_hint="'--plot'")
        plots.require_matplotlib()
    videos = engine.predict.find_videos(paths)
    predictor = engine.predict.load_predictor(
        model,
        weights,
        revision=revision,
        head_dim=head_dim,
        device=device,
        overrides=data.ProtocolOverrides(
            frames=frames,
            stride=stride,
            sampling=sampling,
            clips=clips,
            crops=crops,
            size=size,
            channel_order=channel_order,
        ),
        batch_size=batch_size,
        decoder=decoder,
        compile=compile_model,
    )
    report = engine.predict.run_predict(
        predictor,
        videos,
        top_k=top_k,
        timeline=timeline,
        timeline_clips=clips,
        progress=stderr_console.is_terminal,
    )
    if json_output:
        typer.echo(json.dumps([result.as_dict() for result in report.results], indent=2))
    else:
        console = Console()
        for result in report.results:
            console.print(
                _timeline_table(result) if isinstance(result, engine.predict.VideoTimeline) else _table(result)
            )
    if csv_file is not None:
        _write_csv(csv_file, report)
    if plot is not None:
        _plot_timelines(plot, [r for r in report.results if isinstance(r, engine.predict.VideoTimeline)])
    for failure in report.failures:
        print_error(failure.error)
    if report.failures:
        raise typer.Exit(1)


# The help names the default model from the zoo, which owns it.
predict.__doc__ = (predict.__doc__ or "").format(default=DEFAULT_MODEL)


def _table(result: engine.predict.VideoPrediction) -> Table:
    table = Table(
        title=f"[bold]{escape(result.file)}[/]",
        caption=escape(f"{result.model} · {result.protocol} · {result.num_frames} frames · {result.seconds:.2f} s"),
        header_style="bold",
    )
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("", width=24)
    for rank, prediction in enumerate(result.predictions, start=1):
        bar = Bar(1.0, 0.0, prediction.score, color="green")
        table.add_row(str(rank), escape(prediction.label), f"{prediction.score:.1%}", bar)
    return table


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _timeline_table(result: engine.predict.VideoTimeline) -> Table:
    table = Table(
        title=f"[bold]{escape(result.file)}[/]",
        caption=escape(f"{result.model} · {result.protocol} per window · {result.seconds:.2f} s"),
        header_style="bold",
    )
    for column in ("start", "end"):
        table.add_column(column, justify="right")
    table.add_column("label")
    table.add_column("score", justify="right")
    for window in result.windows:
        table.add_row(_clock(window.start), _clock(window.end), escape(window.label), f"{window.score:.1%}")
    return table


def _plot_timelines(path: Path, timelines: list[engine.predict.VideoTimeline]) -> None:
    """One PNG per video: `path` itself for a single video, else `path`'s stem, `-`, the video's stem."""
    used: set[Path] = set()
    for result in timelines:
        target = path
        if len(timelines) > 1:
            target = path.with_name(f"{path.stem}-{Path(result.file).stem}{path.suffix or '.png'}")
            for number in range(2, len(timelines) + 2):
                if target not in used:
                    break
                target = path.with_name(f"{path.stem}-{Path(result.file).stem}-{number}{path.suffix or '.png'}")
        used.add(target)
        windows = [(window.start, window.end) for window in result.windows]
        title = f"{Path(result.file).name} · {result.model} · {result.protocol} per window"
        plots.timeline_plot(target, windows, np.asarray(result.probabilities), result.labels, title)
        stderr_console.print(escape(f"timeline plot: {target}"), highlight=False)


def _write_csv(path: Path, report: engine.predict.PredictReport) -> None:
    """One row per (video, rank), or per (video, window) for timelines."""
    rows: list[tuple[object, ...]] = []
    for result in report.results:
        if isinstance(result, engine.predict.VideoTimeline):
            rows += [(result.file, result.model, w.start, w.end, w.label, w.index, w.score) for w in result.windows]
        else:
            rows += [
                (result.file, result.model, rank, p.label, p.index, p.score, round(result.seconds, 4))
                for rank, p in enumerate(result.predictions, start=1)
            ]
    columns = (
        TIMELINE_COLUMNS
        if any(isinstance(r, engine.predict.VideoTimeline) for r in report.results)
        else PREDICTION_COLUMNS
    )
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
    except OSError as error:
        raise UniformerError(f"cannot write {path}: {error.strerror or error}") from None
