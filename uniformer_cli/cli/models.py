"""`uniformer models`: the zoo as a table or JSON."""

from __future__ import annotations

import json

import typer
from rich import box
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
    table = Table(
        title="UniFormer model zoo",
        caption="dense: T frames x stride; views: clips x crops; GFLOPs: all views\n"
        "Drive: Google Drive only, use --weights FILE; --json lists the Hub files",
        header_style="bold",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    # Every column but the Hub repo keeps its text on one line: names must stay copy-pastable.
    table.add_column("name", style="cyan", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("sampling", no_wrap=True)
    for numeric in ("views", "size", "top-1", "GFLOPs"):
        table.add_column(numeric, justify="right", no_wrap=True)
    table.add_column("weights", overflow="fold")
    entries = list(ZOO.values())
    for entry, following in zip(entries, [*entries[1:], None], strict=True):
        table.add_row(
            entry.name,
            ", ".join(aliases.get(entry.name, [])),
            f"{entry.sampling} {entry.frames}x{entry.stride}" if entry.stride else f"{entry.sampling} {entry.frames}",
            f"{entry.clips}x{entry.crops}",
            str(entry.size),
            f"{entry.top1:.1f}",
            f"{entry.gflops:g}",
            entry.hub_repo if entry.on_hub else "[dim]Drive[/]",
            end_section=following is None or following.dataset != entry.dataset,
        )
    Console().print(table)
