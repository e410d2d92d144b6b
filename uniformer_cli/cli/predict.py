"""`uniformer predict`: ranked labels (or a timeline) for videos, as tables, JSON or CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import box
from rich.bar import Bar
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine, plots
from uniformer_cli.cli.options import (
    MAX_TOP_K,
    BatchSizeOption,
    ChannelOrderOption,
    ClipsOption,
    CompileFlag,
    CropsOption,
    Decoder,
    DecoderOption,
    Device,
    DeviceOption,
    Engine,
    EngineOption,
    FramesOption,
    HeadDimOption,
    ModelOption,
    Precision,
    PrecisionOption,
    RevisionOption,
    SamplingOption,
    SizeOption,
    StrideOption,
    WeightsOption,
    fields_from,
)
from uniformer_cli.cli.output import (
    Column,
    JsonFlag,
    Output,
    OutputOption,
    Result,
    dropped_note,
    encode,
    fitted_table,
    write_stdout,
    write_text,
)
from uniformer_cli.cli.progress import ProgressBars, print_error, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.data.paths import find_videos
from uniformer_cli.data.stream import STDIN, check_stream, is_stream
from uniformer_cli.errors import UniformerError
from uniformer_cli.files import ensure_writable
from uniformer_cli.jsonio import dump_json
from uniformer_cli.protocol import MAX_FPS, MAX_WINDOW_SECONDS, ProtocolOverrides
from uniformer_cli.records import class_record, model_fields
from uniformer_cli.zoo import DEFAULT_MODEL

SUMMARY_COLUMNS = (
    Column("video", wrap=True),
    Column("top-1", wrap=True),
    Column("score", justify="right"),
    Column("next", wrap=True, drop=1),
)


def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Video files, frame folders, folders (searched recursively) or globs such as 'clips/**/*.mp4'; "
            "or one stream with --timeline: '-' (a container on stdin), an rtsp:// or http(s):// URL, or a "
            "capture device (v4l2:/dev/video0, avfoundation:0, dshow:video=NAME).",
            show_default=False,
            metavar="PATH",
        ),
    ],
    model: ModelOption = None,
    weights: WeightsOption = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=MAX_TOP_K, help="Classes to show per video.")] = 5,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    size: SizeOption = None,
    channel_order: ChannelOrderOption = None,
    device: DeviceOption = Device.auto,
    batch_size: BatchSizeOption = 8,
    decoder: DecoderOption = Decoder.auto,
    compile_model: CompileFlag = False,
    precision: PrecisionOption = Precision.auto,
    engine_name: EngineOption = Engine.auto,
    json_output: JsonFlag = False,
    output: OutputOption = None,
    csv_file: Annotated[
        str | None,
        typer.Option("--csv", metavar="FILE", hidden=True, help="Old spelling of -o FILE, as CSV ('-': stdout)."),
    ] = None,
    timeline: Annotated[
        float | None,
        typer.Option(
            "--timeline",
            min=0.01,
            metavar="SECONDS",
            max=MAX_WINDOW_SECONDS,
            help="Slide a window of this many seconds over each video and show its top label per window "
            "(one centre-crop clip per window, or --clips).",
            show_default=False,
        ),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps",
            min=0.01,
            metavar="FPS",
            max=MAX_FPS,
            help="Frame rate of frame folders, which record none: needed for --timeline on one.",
            show_default=False,
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
    Scores are the softmax of the mean of the views' logits. One video prints its ranked labels, several
    one summary table. Files that cannot be read are listed at the end and kept as records with an
    `error` (exit status 3); the others are still predicted.

    Examples:
    `uniformer predict examples/yoga.mp4 --model b-k400`
    `uniformer predict videos/ --json`
    `uniformer predict videos/ -o predictions.csv`
    `uniformer predict long.mp4 --timeline 2`
    `ffmpeg -i cam.mkv -f mpegts - | uniformer predict - --timeline 2 --json`
    `uniformer predict clip.mp4 --weights mine.pth --frames 16 --stride 4`
    """
    if output is not None and csv_file is not None:
        raise UniformerError("--csv is the old spelling of -o FILE.csv: give one of them")
    destination = Output(json_output, csv_file, forced_format="csv") if csv_file else Output(json_output, output)
    if plot is not None:
        if timeline is None:
            raise typer.BadParameter("--plot draws a timeline: add --timeline SECONDS", param_hint="'--plot'")
        plots.require_matplotlib()
        ensure_writable(plot, "timeline plot")  # before any work
    # Missing inputs are found before the engine (and torch) loads: such an error costs no start-up.
    videos = None if any(is_stream(path) for path in paths) else find_videos(paths)
    request = engine.request.InferenceRequest(
        **fields_from(engine.request.InferenceRequest, locals()),
        protocol=ProtocolOverrides(**fields_from(ProtocolOverrides, locals())),
        compile=compile_model,
        engine=engine_name,
    )
    if videos is None:  # a stream
        _predict_stream(paths, timeline, destination, plot, clips, request, batch_size, decoder)
        return
    # A model OpenVINO runs from the cache needs no torch (`engine.torch_free`); else the first video
    # decodes while torch loads and the model opens (not for timelines: windows stream).
    route = engine.torch_free.plan(request, decoder) if timeline is None else None
    first_paths = videos.paths if timeline is None else []
    with engine.prefetch.first_video(request, first_paths, decoder, arrays=route is not None) as first:
        engine.results.check_timeline_request(videos, timeline, fps)
        light = engine.torch_free.open_predictor(route, batch_size=batch_size, decoder=decoder) if route else None
        predictor = None
        if light is None:
            with ProgressBars(stderr_console.is_terminal) as bars:  # downloads, a first OpenVINO conversion
                predictor = engine.predict.open_predictor(
                    request, batch_size=batch_size, decoder=decoder, progress=bars
                )
        # One quick file needs no bar; several files, or a timeline's windows, do.
        with ProgressBars(stderr_console.is_terminal and (len(videos.paths) > 1 or timeline is not None)) as bars:
            if light is not None:
                report = engine.torch_free.run_predict(light, videos, top_k=top_k, progress=bars, first=first)
            else:
                assert predictor is not None
                report = engine.predict.run_predict(
                    predictor,
                    videos,
                    top_k=top_k,
                    timeline=timeline,
                    timeline_clips=clips,
                    fps=fps,
                    progress=bars,
                    first=first,
                )
    code = destination.emit(Result(report.records()), lambda console: _print(console, report))
    if plot is not None:
        _plot_timelines(plot, [r for r in report.results if isinstance(r, engine.results.VideoTimeline)])
    if report.stopped is not None:  # Ctrl-C or SIGTERM: what finished is saved above, the rest are failures
        raise report.stopped
    for failure in report.failures:
        print_error(failure.error)
    if code:
        raise typer.Exit(code)


def _predict_stream(
    paths: list[str],
    timeline: float | None,
    destination: Output,
    plot: Path | None,
    clips: int | None,
    request: engine.request.InferenceRequest,
    batch_size: int,
    decoder: str,
) -> None:
    """A timeline of a live or piped stream: one line (or JSON line) per window as soon as it is final."""
    if len(paths) > 1:
        raise UniformerError("a stream (-, a URL or a capture device) must be the only PATH")
    if timeline is None:
        raise typer.BadParameter(
            "a stream has no end to sample a whole video from: give --timeline SECONDS", param_hint="'--timeline'"
        )
    source = paths[0]
    check_stream(source)  # before the model loads
    with ProgressBars(stderr_console.is_terminal) as bars:
        predictor = engine.predict.open_predictor(request, batch_size=batch_size, decoder=decoder, progress=bars)
    console = Console(emoji=False)

    def show(window: engine.results.TimelineWindow) -> None:
        if destination.to_stdout:
            record = {
                "video": "stdin" if source == STDIN else source,
                **model_fields(predictor.name, predictor.weights),
                "start": round(window.start, 4),
                "end": round(window.end, 4),
                **class_record(window.index, window.label, window.score),
            }
            write_stdout(dump_json(record, ensure_ascii=False) + "\n")
        else:
            line = f"{_clock(window.start)}-{_clock(window.end)}  {window.label}  {window.score:.1%}"
            console.print(escape(line), highlight=False, soft_wrap=True)

    report = engine.predict.run_live(predictor, source, timeline, clips, show)
    if destination.file is not None:
        write_text(destination.file, encode(Result(report.records()), destination.file_format))
    if plot is not None:
        _plot_timelines(plot, [r for r in report.results if isinstance(r, engine.results.VideoTimeline)])
    if report.stopped is not None:  # a stream ended by Ctrl-C or SIGTERM: its windows are saved above
        raise report.stopped


# The help names the default model from the zoo, which owns it.
predict.__doc__ = (predict.__doc__ or "").format(default=DEFAULT_MODEL)


def _print(console: Console, report: engine.results.PredictReport) -> None:
    """Ranked labels of one video, one summary row per video for several, a table per timeline."""
    predictions = [r for r in report.results if isinstance(r, engine.results.VideoPrediction)]
    for result in report.results:
        if isinstance(result, engine.results.VideoTimeline):
            console.print(_timeline_table(result))
    if len(predictions) == 1:
        console.print(_table(predictions[0]))
    elif predictions:
        _print_summary(console, predictions)


def _print_summary(console: Console, results: list[engine.results.VideoPrediction]) -> None:
    rows = [
        [
            escape(result.file),
            escape(result.predictions[0].label),
            f"{result.predictions[0].score:.1%}",
            escape(", ".join(f"{p.label} {p.score:.0%}" for p in result.predictions[1:])),
        ]
        for result in results
    ]
    first = results[0]
    table, dropped = fitted_table(
        console, SUMMARY_COLUMNS, rows, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False
    )
    seconds = sum(result.seconds for result in results)
    table.caption = (
        escape(first.model) + "\n" + escape(f"{first.protocol} · {len(results)} videos · took {seconds:.1f} s")
    )
    table.caption += dropped_note(dropped)
    console.print(table)


def _table(result: engine.results.VideoPrediction) -> Table:
    table = Table(
        title=f"[bold]{escape(result.file)}[/]",
        caption=escape(result.model)
        + "\n"
        + escape(f"{result.protocol} · {result.num_frames} frames · took {result.seconds:.2f} s"),
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


def _timeline_table(result: engine.results.VideoTimeline) -> Table:
    table = Table(
        title=f"[bold]{escape(result.file)}[/]",
        caption=escape(result.model) + "\n" + escape(f"{result.protocol} per window · took {result.seconds:.2f} s"),
        header_style="bold",
    )
    for column in ("start", "end"):
        table.add_column(column, justify="right")
    table.add_column("label")
    table.add_column("score", justify="right")
    for window in result.windows:
        table.add_row(_clock(window.start), _clock(window.end), escape(window.label), f"{window.score:.1%}")
    return table


def _plot_timelines(path: Path, timelines: list[engine.results.VideoTimeline]) -> None:
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
