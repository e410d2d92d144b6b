"""Option types shared by several subcommands, so each flag is spelled and documented once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Zoo name or alias (see `uniformer models`), e.g. b-k400, s16x8-k400."),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="Local .safetensors or official .pth file instead of a zoo download."),
]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) of the zoo file.")
]
DeviceOption = Annotated[str, typer.Option("--device", "-d", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps.")]
DecoderOption = Annotated[
    str, typer.Option("--decoder", help="Video decoder: auto (decord if installed), decord or pyav.")
]
ClipsOption = Annotated[
    int | None, typer.Option("--clips", min=1, help="Temporal clips per video (default: the model's protocol).")
]
CropsOption = Annotated[
    int | None,
    typer.Option("--crops", min=1, max=3, help="Spatial crops per clip, 1 or 3 (default: the model's protocol)."),
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Views per forward pass.")]
WorkersOption = Annotated[
    int, typer.Option("--workers", "-j", min=0, help="DataLoader worker processes that decode videos.")
]
CompileFlag = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the inference model: a slow first call, then faster; pays off over many videos.",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]
HeadDimOption = Annotated[
    int | None,
    typer.Option("--head-dim", min=1, help="Attention head width for a custom checkpoint (S/B 64, XXS 28, XS 32)."),
]
FramesOption = Annotated[
    int | None, typer.Option("--frames", min=1, help="Frames per clip (default: the model's protocol).")
]
StrideOption = Annotated[
    int | None, typer.Option("--stride", min=1, help="Dense sampling rate, frames apart (default: the model's).")
]
SamplingOption = Annotated[
    str | None,
    typer.Option(
        "--sampling",
        help="dense (--stride apart), segment (one frame per segment) or sparse (default: the model's; "
        "dense when only --stride is given).",
    ),
]
SizeOption = Annotated[
    int | None, typer.Option("--size", min=32, help="Crop side in pixels (default: the model's, else 224).")
]
ChannelOrderOption = Annotated[
    str | None,
    typer.Option(
        "--channel-order", help="rgb, or bgr for models trained on BGR frames (default: the model's, else rgb)."
    ),
]
