"""`uniformer convert SRC DST.safetensors`: thin layer over `engine.convert`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.options import ForceFlag, FramesOption, HeadDimOption, ModelOption
from uniformer_cli.cli.output import JsonFlag, Output, OutputOption, Result
from uniformer_cli.cli.text import escape


def convert(
    source: Annotated[
        Path,
        typer.Argument(help="Official .pth, PySlowFast .pyth, MMAction2 UniFormerV2 .pth or 2-D ImageNet checkpoint."),
    ],
    destination: Annotated[Path, typer.Argument(help="Output .safetensors file (config and labels in metadata).")],
    model: ModelOption = None,
    head_dim: HeadDimOption = None,
    frames: FramesOption = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="UniFormerV2 without --model: the head's label set (k400, k400-mmaction, k600-mmaction, k700, "
            "k710, mit); a Kinetics-710 head given k400-mmaction, k600-mmaction or k700 keeps that set's rows.",
            show_default=False,
        ),
    ] = None,
    force: ForceFlag = False,
    json_output: JsonFlag = False,
    output: OutputOption = None,
) -> None:
    """Convert a checkpoint to safetensors that rebuilds its model on its own.

    The architecture is read from the tensors (UniFormer or UniFormerV2; official, PySlowFast or MMAction2
    layout); `--model` names the zoo entry the file is (a file downloaded by hand, say) so its labels and
    test protocol are recorded too. A UniFormerV2 file without an entry needs no flag; `--frames T` records
    a test protocol and `--labels SET` its class names. Files that need code to unpickle are refused; an
    existing DESTINATION is kept unless --force.

    Examples:
    `uniformer convert downloaded.pth s16x8.safetensors --model s16x8-k400`
    `uniformer convert k400_uniformerv2_b16_8x224.pyth b16.safetensors --frames 8`
    """
    conversion = engine.convert.convert(
        source, destination, model=model, head_dim=head_dim, overwrite=force, frames=frames, labels=labels
    )
    summary = engine.convert.conversion_summary(conversion)
    Output(json_output, output).finish(Result([summary], document=summary), lambda console: _print(console, summary))


def _print(console: Console, summary: dict[str, object]) -> None:
    table = Table(title=escape(f"Converted to {summary['destination']}"), show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in summary.items():
        if name != "destination":
            table.add_row(name.replace("_", " "), escape(_shown(value)))
    console.print(table)


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(item)}" for key, item in value.items() if item is not None)
    if isinstance(value, list):
        return "-".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
