"""`uniformer convert SRC DST.safetensors`: thin layer over `engine.convert`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.options import HeadDimOption, JsonFlag, ModelOption


def convert(
    source: Annotated[Path, typer.Argument(help="Official .pth, PySlowFast .pyth or 2-D ImageNet checkpoint.")],
    destination: Annotated[Path, typer.Argument(help="Output .safetensors file (config and labels in metadata).")],
    model: ModelOption = None,
    head_dim: HeadDimOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Convert a checkpoint to safetensors that rebuilds its model on its own.

    The architecture is read from the tensors; `--model` names the zoo entry the file is (a
    Drive-only download, say) so its labels and test protocol are recorded too. Files that need code
    to unpickle are refused.

    Example: `uniformer convert uniformer_small_k400_16x8.pth s16x8.safetensors --model s16x8-k400`
    """
    summary = engine.convert.conversion_summary(
        engine.convert.convert(source, destination, model=model, head_dim=head_dim)
    )
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=escape(f"Converted to {destination}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in summary.items():
        table.add_row(name.replace("_", " "), escape(_shown(value)))
    Console().print(table)


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "-".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
