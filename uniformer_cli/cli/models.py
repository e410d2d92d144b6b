"""`uniformer models`: the zoo as a table, JSON, JSONL or CSV."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console

from uniformer_cli.cli.output import Column, JsonFlag, Output, OutputOption, Result, dropped_note, fitted_table
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.zoo import ZOO, ZooEntry
from uniformer_cli.zoo.sources import SOURCE_NAMES
from uniformer_cli.zoo.v2 import V2_ZOO, V2ZooEntry

# Left out first when the terminal is narrow: the crop size, the views, the sampling, the aliases, the
# GFLOPs; the name, the accuracy and the source of the weights are always shown.
COLUMNS = (
    Column("name", style="cyan"),
    Column("aliases", drop=5),
    Column("sampling", drop=4),
    Column("views", justify="right", drop=2),
    Column("size", justify="right", drop=1),
    Column("top-1", justify="right"),
    Column("GFLOPs", justify="right", drop=6),
    Column("source"),
)


def models(json_output: JsonFlag = False, output: OutputOption = None) -> None:
    """List every released checkpoint, UniFormer and UniFormerV2, with its protocol, accuracy, cost and
    where its weights come from.

    Examples:
    `uniformer models`
    `uniformer models --json | jq '.[] | select(.dataset == "k400") | .model'`
    `uniformer models -o zoo.csv`
    """
    entries: list[ZooEntry | V2ZooEntry] = [*ZOO.values(), *V2_ZOO.values()]
    Output(json_output, output).finish(Result([entry.as_dict() for entry in entries]), lambda c: _print(c, entries))


def _print(console: Console, entries: list[ZooEntry | V2ZooEntry]) -> None:
    """One table per family, each fitted to the terminal on its own."""
    v1 = [entry for entry in entries if isinstance(entry, ZooEntry)]
    v2 = [entry for entry in entries if isinstance(entry, V2ZooEntry)]
    _print_table(
        console,
        v1,
        "UniFormer model zoo",
        "source: where --model downloads the weights from: Hub (Hugging Face), MMAction2 (its converted "
        "copy), Drive (the authors' Google Drive); none: no checkpoint released. The others follow when it "
        "fails (--json: sources)",
    )
    _print_table(
        console,
        v2,
        "UniFormerV2 model zoo",
        "source: Hub (the authors' copy, pinned), MMAction2 (its copy); none: no copy left, use --weights FILE; "
        "top-1: the official model zoo's",
    )


def _print_table(console: Console, entries: Sequence[ZooEntry | V2ZooEntry], title: str, source_note: str) -> None:
    rows = []
    for entry in entries:
        record = entry.as_dict()
        top1, gflops = record["paper_top1"], record["paper_gflops"]
        rows.append(
            [
                entry.name,
                ", ".join(record["aliases"]),  # type: ignore[arg-type]
                _temporal(entry.protocol),
                f"{entry.protocol.clips}x{entry.protocol.crops}",
                str(entry.protocol.size),
                f"{top1:.1f}" if isinstance(top1, float) else "-",
                f"{gflops:g}" if isinstance(gflops, int | float) else "-",
                SOURCE_NAMES[entry.sources[0]].label if entry.sources else "[dim]none[/]",
            ]
        )
    table, dropped = fitted_table(
        console,
        COLUMNS,
        rows,
        title=title,
        header_style="bold",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    for index, (entry, following) in enumerate(zip(entries, [*entries[1:], None], strict=True)):
        if following is None or following.dataset != entry.dataset:
            table.rows[index].end_section = True
    table.caption = (
        "dense: T frames x stride; views: clips x crops; top-1 (%) and GFLOPs (all views): paper\n"
        + source_note
        + dropped_note(dropped)
    )
    console.print(table)


def _temporal(protocol: ViewProtocol) -> str:
    if protocol.stride:
        return f"{protocol.sampling} {protocol.frames}x{protocol.stride}"
    return f"{protocol.sampling} {protocol.frames}"
