"""`uniformer export MODEL --format onnx|openvino -o DIR`: thin layer over `engine.export`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from uniformer_cli import engine
from uniformer_cli.cli.options import (
    FORCE_HELP,
    ChannelOrderOption,
    FramesOption,
    HeadDimOption,
    RevisionOption,
    SamplingOption,
    SizeOption,
    StrideOption,
    derived_choice,
    fields_from,
)
from uniformer_cli.cli.output import JsonFlag, Output, Result
from uniformer_cli.cli.progress import ProgressBars, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.protocol import ProtocolOverrides
from uniformer_cli.settings import EXPORT_FORMATS

ExportFormat = derived_choice("ExportFormat", EXPORT_FORMATS)
if TYPE_CHECKING:
    FormatOption = str
else:
    FormatOption = Annotated[
        ExportFormat,
        typer.Option("--format", "-f", case_sensitive=False, help="onnx (one .onnx file) or openvino (.xml + .bin)."),
    ]


def export(
    source: Annotated[
        str,
        typer.Argument(
            help="Zoo name or alias, Hub model NAMESPACE/NAME, or a .safetensors / official .pth file.",
            metavar="NAME|FILE",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The model file to write (NAME.onnx, or NAME.xml with --format openvino), or a folder to write it "
            "into, named after the model (unlike other commands' -o FILE). preprocess.py and README.md go beside it."
            " An existing model file is kept unless --force.",
        ),
    ],
    format: FormatOption = "onnx",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="The zoo entry a local .pth belongs to (labels, protocol).")
    ] = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    size: SizeOption = None,
    channel_order: ChannelOrderOption = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,  # -f is --format here
    revision: RevisionOption = None,
    head_dim: HeadDimOption = None,
    json_output: JsonFlag = False,
) -> None:
    r"""Write a model as an ONNX or OpenVINO file for deployment without this package.

    Input float32 \[batch, 3, T, H, W] (normalised clips of the test protocol; the batch axis is dynamic),
    output \[batch, classes] logits. The file carries the protocol, the normalisation, the class names and
    the config as metadata. It is run once after writing (onnxruntime or OpenVINO, batches of 1 and 3)
    and its largest logit difference to PyTorch is printed. Beside it: preprocess.py, whose views(video)
    computes the model's input with numpy and PyAV alone, and README.md, the model card with ten lines
    that run it. Needs `pip install 'uniformer\[onnx]'` or `'uniformer\[openvino]'`.

    Examples:
    `uniformer export s16x4-k400 -o deploy/`
    `uniformer export b-k400 -o deploy/b.onnx`
    `uniformer export mine.safetensors --format openvino -o deploy/`
    """
    request = engine.inference.request_for(
        source,
        model,
        revision=revision,
        head_dim=head_dim,
        protocol=ProtocolOverrides(**fields_from(ProtocolOverrides, locals())),
    )
    with ProgressBars(stderr_console.is_terminal) as bars:
        report = engine.export.export_model(request, format, output, force=force, progress=bars)
    record = {
        "model": report.model,
        "weights": str(report.weights),
        "format": report.format,
        "file": str(report.path),
        "files": [str(path) for path in report.files],
        "input_shape": list(report.input_shape),
        "max_error": report.max_error,
        "logit_std": report.logit_std,
        "metadata": sorted(report.metadata),
        "error": None,
    }
    Output(json_output).finish(Result([record], document=record), lambda console: _print(console, report))


def _print(console: Console, report: engine.export.ExportReport) -> None:
    shape = "x".join(map(str, report.input_shape))
    console.print(escape(f"wrote {report.path} ({report.format}, input {shape}, dynamic batch)"))
    console.print(f"max logit error against PyTorch {report.max_error:.2e} (logit std {report.logit_std:.3g})")
    console.print(escape(f"metadata: {', '.join(sorted(report.metadata))}"))
