"""`uniformer features`: pooled representations of videos for downstream models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from uniformer_cli import engine
from uniformer_cli.cli.options import (
    MAX_COUNT,
    BatchSizeOption,
    ChannelOrderOption,
    ClipsOption,
    CompileFlag,
    CropsOption,
    Dataset,
    DecoderOption,
    DeviceOption,
    Engine,
    EngineOption,
    ForceFlag,
    FramesOption,
    HeadDimOption,
    JsonFlag,
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
from uniformer_cli.cli.output import Output, Result
from uniformer_cli.cli.progress import ProgressBars, print_error, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.data.storage import local_or_url


def features(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Video files, frame folders, folders (searched recursively) or globs; or use --dataset or --data.",
            show_default=False,
            metavar="PATH",
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="OUT.safetensors, or OUT.npy (with an OUT.json index), a local file or a URL (uploaded when"
            " finished). An existing file is kept unless --force (or continued with --resume).",
            show_default=False,
        ),
    ] = "",
    dataset: Annotated[
        Dataset | None,
        typer.Option("--dataset", "-D", case_sensitive=False, help="Read a split of this dataset instead of PATHs."),
    ] = None,
    root: RootOption = None,
    split: SplitOption = "val",
    list_file: ListFileOption = None,
    data: PackedDataOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            min=1,
            help="Layer whose pooled output to take; default the last, what the classifier reads. UniFormer: "
            "stage 1-4 (4: after the final norm). UniFormerV2: backbone block 1-L, L + 1 the fused video token.",
            show_default=False,
        ),
    ] = None,
    per_view: Annotated[
        bool, typer.Option("--per-view", help="Keep every view's vector ([N, V, D]) instead of their mean.")
    ] = False,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    size: SizeOption = None,
    channel_order: ChannelOrderOption = None,
    device: DeviceOption = "auto",
    decoder: DecoderOption = "auto",
    compile_model: CompileFlag = False,
    precision: PrecisionOption = Precision.auto,
    engine_name: EngineOption = Engine.auto,
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = DEFAULT_WORKERS,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=MAX_COUNT, help="Only the first N videos.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run that wrote OUT: skip the videos it already holds.")
    ] = False,
    force: ForceFlag = False,
    revision: RevisionOption = None,
    head_dim: HeadDimOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Extract each video's pooled representation (what the classifier reads, or --layer's) to a file.

    Views follow the model's test protocol (as in `eval`) and are averaged per video unless --per-view.
    The file holds one float32 [N, D] tensor and, as metadata, the video names (row order), dataset labels,
    the model, protocol and layer, and the videos that could not be read (exit status 3 when there are any).
    Multi-GPU: `torchrun --nproc-per-node 8 -m uniformer_cli.cli.app features ...`.

    Examples:
    `uniformer features clips/ -o clips.safetensors`
    `uniformer features --dataset k400 --root /data/k400 -o k400.npy --workers 8`
    """
    if not output:
        raise typer.BadParameter("name the file to write: -o OUT.safetensors or -o OUT.npy", param_hint="'-o'")
    if dataset is not None and not paths:  # (with paths: "not both" says more)
        require_root(root, list_file, data)
    request = engine.features.FeaturesRequest(
        **fields_from(
            engine.features.FeaturesRequest,
            locals(),
            output=local_or_url(output),
            paths=paths or [],
            inference=inference_request(locals()),
        )
    )
    with ProgressBars(stderr_console.is_terminal) as bars:
        result = engine.features.extract_features(request, bars)
    if result is None:  # a torchrun rank other than 0
        return
    # The features go to -o; the summary follows the output contract (docs/OUTPUT.md): failed videos are
    # records with an `error`, and make the exit status 3 (0 under torchrun, which takes any other for a crash).
    failures = [{"video": failure.video, "error": failure.error} for failure in result.failures]
    summary = {
        "output": str(result.output),
        "index": str(result.index) if result.index else None,
        "shape": list(result.shape),
        "videos": result.videos,
        "computed": result.computed,
        "model": result.model,
        "protocol_text": result.protocol,
        "layer": result.layer,
        "elapsed_s": round(result.seconds, 4),
        "failures": failures,
    }
    code = Output(json_output).emit(Result(failures, document=summary), lambda console: _print(console, result))
    for failure in result.failures:
        print_error(f"{failure.video}: {failure.error}" if failure.video not in failure.error else failure.error)
    if code and engine.distributed.world_size() == 1:
        raise typer.Exit(code)


def _print(console: Console, result: engine.features.FeaturesResult) -> None:
    shape = " x ".join(map(str, result.shape))
    written = f"{result.output}" + (f" (index {result.index})" if result.index else "")
    resumed = result.videos - result.computed
    note = f" ({resumed} from the resumed file)" if resumed else ""
    console.print(
        escape(
            f"{result.videos} videos -> {written}: float32 [{shape}], layer {result.layer}, {result.model}, "
            f"{result.protocol}, {result.seconds:.1f} s{note}"
        ),
        highlight=False,
        soft_wrap=True,
    )
