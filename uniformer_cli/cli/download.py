"""`uniformer download NAME...`: thin layer over `engine.download`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.options import RevisionOption
from uniformer_cli.cli.output import JsonFlag, Output, OutputOption, Result
from uniformer_cli.cli.progress import ProgressBars, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.errors import UniformerError
from uniformer_cli.zoo.sources import SOURCE_NAMES


def download(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Zoo names or aliases (`uniformer models`), or Hub model repositories NAMESPACE/NAME.",
            show_default=False,
            metavar="NAME",
        ),
    ] = None,
    everything: Annotated[
        bool,
        typer.Option(
            "--all", help="Every zoo entry (both families) whose checkpoint was released (`uniformer models`)."
        ),
    ] = False,
    revision: RevisionOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            "-f",
            help="Download a Google Drive / MMAction2 file afresh and accept it even when its sha256 differs "
            "from the one recorded at its first download.",
        ),
    ] = False,
    json_output: JsonFlag = False,
    output: OutputOption = None,
) -> None:
    """Download zoo checkpoints into the cache and convert them, once, or Hub models (NAMESPACE/NAME); print
    where each came from and its sha256.

    Every command downloads what it needs by itself: this one fetches ahead (to prepare a machine
    before it goes offline: then HF_HUB_OFFLINE=1 uses the cache alone), and with --force accepts a
    Google Drive or MMAction2 file that changed since its first download (which is refused otherwise).
    Nothing runs a model. `uniformer cache ls` lists what is there.

    Examples:
    `uniformer download s16x4-k400 b-k400`
    `uniformer download xxs16-128-k400 --force`
    `uniformer download --all`
    """
    if bool(names) == everything:
        raise typer.BadParameter("name the models to download, or pass --all", param_hint="'--all'")
    if everything:
        names = [entry.name for entry in engine.cache.zoo_entries() if entry.sources]
    with ProgressBars(stderr_console.is_terminal) as bars:
        records = engine.download.download(names or [], revision=revision, force=force, progress=bars)
    if all(record["error"] is not None for record in records):
        raise UniformerError(str(records[0]["error"]))
    Output(json_output, output).finish(Result(records), lambda console: _print(console, records))


def _print(console: Console, records: list[dict[str, object]]) -> None:
    table = Table(title="Downloaded", show_header=True, header_style="bold")
    for header in ("model", "from", "sha256 of the download", "converted weights"):
        table.add_column(header, overflow="fold")
    for record in records:
        if record["error"] is None:
            source = SOURCE_NAMES[record["source"]].full  # type: ignore[index]
            table.add_row(str(record["model"]), source, str(record["sha256"] or "-"), escape(str(record["weights"])))
        else:
            table.add_row(str(record["model"]), "[red]failed[/]", "-", escape(str(record["error"])))
    console.print(table)
