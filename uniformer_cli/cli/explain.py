"""`uniformer explain`: where the model looks, as a heat-map video and a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uniformer_cli import engine
from uniformer_cli.cli.options import (
    ChannelOrderOption,
    DecoderOption,
    DeviceOption,
    ForceFlag,
    FramesOption,
    HeadDimOption,
    JsonFlag,
    ModelOption,
    RevisionOption,
    SamplingOption,
    SizeOption,
    StrideOption,
    WeightsOption,
    fields_from,
    inference_request,
)
from uniformer_cli.cli.output import Output, Result
from uniformer_cli.cli.progress import ProgressBars, stderr_console
from uniformer_cli.cli.text import escape


def explain(
    video: Annotated[Path, typer.Argument(help="The video file or frame folder to explain.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="OUT.mp4 or OUT.gif; the contact sheet is written as OUT.png. Existing files are kept unless --force.",
            show_default=False,
        ),
    ] = None,
    save_map: Annotated[
        Path | None,
        typer.Option(
            "--save-map",
            help="Also (or only) write the maps as data: FILE.safetensors (tensors raw and upsampled, metadata), or"
            " FILE.npy (upsampled \\[T, S, S]) with FILE.raw.npy (raw \\[T', H', W']) and FILE.json (metadata).",
            show_default=False,
        ),
    ] = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    target: Annotated[
        str | None,
        typer.Option("--class", "-c", help="Class to explain, by name or index (default: the predicted one)."),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            "--stage",
            min=1,
            help="Layer whose output map Grad-CAM uses. UniFormer: stage 1-4 (default 2, the last convolutional "
            "one; 3-4 attend globally, which spreads the map). UniFormerV2: backbone block 1-12 (B/16) or 1-24 "
            "(L/14), default the model's (docs/MODEL.md).",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Opacity of the heat map.")] = 0.5,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    size: SizeOption = None,
    channel_order: ChannelOrderOption = None,
    device: DeviceOption = "auto",
    decoder: DecoderOption = "auto",
    force: ForceFlag = False,
    revision: RevisionOption = None,
    head_dim: HeadDimOption = None,
    json_output: JsonFlag = False,
) -> None:
    r"""Show where the model looks: Grad-CAM over space and time on a layer's feature map.

    One clip of the video (the model's temporal sampling, centre crop) is classified; the class activation
    map of the predicted class (or --class) on a layer's output map (--layer) is upsampled to the sampled
    frames and overlaid as a heat map. Writes the clip with the overlay (OUT.mp4 or OUT.gif) and a PNG
    contact sheet (OUT.png) with the class and its score in the title. Needs the plot extra (matplotlib).

    With --save-map the maps are also written as data: the raw Grad-CAM map of the layer \[T', H', W'] (as
    computed: not upsampled or scaled, for pytorch-grad-cam-style post-processing) and the upsampled one
    \[T, S, S] that the overlay draws; -o is then optional.

    Examples:
    `uniformer explain examples/yoga.mp4 --model s-k400 -o yoga.mp4`
    `uniformer explain clip.mp4 --weights mine.safetensors --class 3 -o clip.gif`
    `uniformer explain clip.mp4 --model s-k400 --save-map clip_cam.safetensors`
    """
    if output is None and save_map is None:
        raise typer.BadParameter("name the file to write: -o OUT.mp4, -o OUT.gif or --save-map FILE", param_hint="'-o'")
    request = engine.explain.ExplainRequest(
        **fields_from(engine.explain.ExplainRequest, locals(), inference=inference_request(locals()))
    )
    with ProgressBars(stderr_console.is_terminal) as bars:
        result = engine.explain.explain_video(request, bars)
    found = result.explanation
    record = {
        "video": str(video),
        "model": found.model,
        "explained_index": found.index,
        "explained_label": found.label,
        "score": round(found.score, 6),
        "protocol_text": found.protocol,
        "layer": found.layer,
        "heatmap_video": None if result.video is None else str(result.video),
        "sheet": None if result.sheet is None else str(result.sheet),
        "map_files": [str(path) for path in result.maps],
    }
    Output(json_output).finish(
        Result([record], document=record),
        lambda console: console.print(
            "\n".join(
                escape(line)
                for line in [
                    f"{found.label} (class {found.index}) {found.score:.1%} · {found.model} · {found.protocol}",
                    *_written(result),
                ]
            ),
            highlight=False,
            soft_wrap=True,
        ),
    )


def _written(result: engine.explain.ExplainResult) -> list[str]:
    """The files written, a line each (escaped one by one: a file name may hold a newline)."""
    lines = [] if result.video is None else [f"heat map: {result.video}, contact sheet: {result.sheet}"]
    if result.maps:
        lines.append(f"maps: {', '.join(map(str, result.maps))}")
    return lines
