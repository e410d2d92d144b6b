"""`uniformer models`: the zoo as a table or JSON."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from uniformer_cli.cli.options import JsonFlag
from uniformer_cli.zoo import ALIASES, ZOO


def models(json_output: JsonFlag = False) -> None:
    """List every released checkpoint with its protocol, Hub file, accuracy and cost.

    Example: `uniformer models --json | jq '.[] | select(.dataset == "k400") | .name'`
    """
    if json_output:
        typer.echo(json.dumps([entry.as_dict() for entry in ZOO.values()], indent=2))
        return
    aliases: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    table = Table(title="UniFormer model zoo", header_style="bold")
    for column in ("name", "aliases", "data", "frames", "sampling", "views", "size", "top-1", "GFLOPs", "weights"):
        table.add_column(
            column, justify="right" if column in ("frames", "views", "size", "top-1", "GFLOPs") else "left"
        )
    for entry in ZOO.values():
        sampling = f"dense x{entry.stride}" if entry.stride else entry.sampling
        where = f"{entry.hub_repo}" if entry.on_hub else "[dim]Drive only[/]"
        table.add_row(
            entry.name,
            ", ".join(aliases.get(entry.name, [])),
            entry.dataset,
            str(entry.frames),
            sampling,
            f"{entry.clips}x{entry.crops}",
            str(entry.size),
            f"{entry.top1:.1f}",
            f"{entry.gflops:g}",
            where,
        )
    Console().print(table)
