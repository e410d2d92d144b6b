"""List, check and free what the zoo's downloads occupy: downloads, converted copies, OpenVINO builds.

`hf cache` sees only the Hub's files; these commands see every zoo download (Hub, MMAction2, Google
Drive) and what was made from it under $HF_HOME/uniformer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich import box
from rich.console import Console

from uniformer_cli import engine
from uniformer_cli.cli.framework import GlobalFlagsGroup
from uniformer_cli.cli.output import (
    Column,
    JsonFlag,
    Output,
    OutputOption,
    Result,
    dropped_note,
    fitted_table,
)
from uniformer_cli.cli.progress import ProgressBars, print_error, stderr_console
from uniformer_cli.cli.text import escape

NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Zoo names or aliases (default: every cached model).", show_default=False, metavar="NAME"),
]
DryRunFlag = Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")]
YesFlag = Annotated[
    bool, typer.Option("--yes", "-y", help="Remove without asking (needed when stdin is not a terminal).")
]
COMPACT = {"box": box.SIMPLE_HEAD, "pad_edge": False, "header_style": "bold"}


def human_size(size: int) -> str:
    """Bytes as a person reads them: 284.1 MB, 1.2 GB (powers of 1000, as `hf cache ls`)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def ls(names: NamesArgument = None, json_output: JsonFlag = False, output: OutputOption = None) -> None:
    """List the zoo models in the cache: where each came from, its sha256, size and last use.

    One row per download: its zoo name, source (hub, mmaction2, drive), Hub revision (commit), the
    download's sha256, the size on disk of the download, its converted copy and OpenVINO builds, and when
    a command last used it. --json has the paths of every file.

    Examples:
    `uniformer cache ls`
    `uniformer cache ls --json | jq -r '.[] | [.model, .size_bytes] | @tsv'`
    """
    destination = Output(json_output, output)
    models = engine.cache.cached_models(names or ())
    records = [model.record() for model in models]
    destination.finish(Result(records), lambda console: _print_models(console, records))


LS_COLUMNS = (
    Column("model", wrap=True),
    Column("source"),
    Column("revision", drop=2),
    Column("sha256", drop=3),
    Column("size", justify="right"),
    Column("converted", drop=1),
    Column("OpenVINO", wrap=True, drop=4),
    Column("last used", drop=5),
)


def _print_models(console: Console, records: list[dict[str, object]]) -> None:
    home = engine.cache.cache_home()
    if not records:
        console.print(escape(f"No zoo model in the cache ({home} and the Hub cache)."), highlight=False)
        return
    rows = [
        [
            escape(str(record["model"])),
            str(record["source"]),
            str(record["revision"] or "-")[:8],
            str(record["sha256"] or "-")[:12],
            human_size(int(record["size_bytes"])),  # type: ignore[call-overload]
            "yes" if record["weights"] else "no",
            escape(", ".join(record["openvino"]) or "-"),  # type: ignore[arg-type]
            str(record["last_used"] or "-").replace("T", " ")[:16],
        ]
        for record in records
    ]
    table, dropped = fitted_table(console, LS_COLUMNS, rows, title="Zoo models in the cache", **COMPACT)
    total = sum(int(record["size_bytes"]) for record in records)  # type: ignore[call-overload]
    count = f"{len(records)} download" + ("s" if len(records) != 1 else "")
    table.caption = escape(f"{count}, {human_size(total)} on disk (--json: the paths)")
    table.caption += dropped_note(dropped)
    console.print(table)


def rm(
    names: NamesArgument = None,
    everything: Annotated[bool, typer.Option("--all", help="Remove every zoo model in the cache.")] = False,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    json_output: JsonFlag = False,
    output: OutputOption = None,
) -> None:
    """Remove zoo models from the cache: their downloads, converted copies and OpenVINO builds.

    The next command that needs one downloads and converts it again. The sha256 recorded at a Google
    Drive or MMAction2 file's first download is kept, so a later download must still match it.

    Examples:
    `uniformer cache rm b32x4-k400`
    `uniformer cache rm --all --dry-run`
    """
    destination = Output(json_output, output)
    if names and everything:
        raise typer.BadParameter("name models or pass --all, not both", param_hint="'--all'")
    plan = engine.cache.removal(names or (), everything=everything)
    _remove(destination, plan, dry_run, yes, "remove")


def prune(
    dry_run: DryRunFlag = False, yes: YesFlag = False, json_output: JsonFlag = False, output: OutputOption = None
) -> None:
    """Remove what no zoo entry or record points at.

    Converted copies whose download is gone, downloads no zoo entry names, OpenVINO builds of weights
    that no converted copy or live record has, records of files that are gone or changed, and what
    killed runs left behind (temporary files, export scratch folders, Hub downloads untouched for an hour).

    Examples:
    `uniformer cache prune --dry-run`
    `uniformer cache prune --yes`
    """
    destination = Output(json_output, output)
    _remove(destination, engine.cache.prune_plan(), dry_run, yes, "prune")


def _remove(destination: Output, plan: list[engine.cache.Removal], dry_run: bool, yes: bool, verb: str) -> None:
    total = sum(item.size for item in plan)
    if plan and not dry_run and not yes:
        if not sys.stdin.isatty():
            raise typer.BadParameter(
                f"{len(plan)} files or folders ({human_size(total)}) would be removed: add --yes to remove them "
                "without asking, or --dry-run to list them",
                param_hint="'--yes'",
            )
        _print_removals(stderr_console, [item.record(False) for item in plan], f"To {verb}")
        typer.confirm(f"Remove these {len(plan)} ({human_size(total)})?", abort=True, err=True)
    if dry_run:
        records = [item.record(False) for item in plan]
        title = f"Would {verb} ({human_size(total)}; nothing removed: --dry-run)"
    else:
        records = []
        for item, problem in engine.cache.delete(plan):
            record = item.record(problem is None)
            record["error"] = None if problem is None else f"cannot remove {item.path}: {problem}"
            records.append(record)
        freed = sum(int(r["size_bytes"]) for r in records if r["removed"])  # type: ignore[call-overload]
        title = f"Removed ({human_size(freed)} freed)"
    destination.finish(Result(records), lambda console: _print_removals(console, records, title))


REMOVAL_COLUMNS = (
    Column("path", wrap=True),
    Column("kind"),
    Column("model", wrap=True, drop=2),
    Column("size", justify="right"),
    Column("reason", wrap=True, drop=1),
)


def _print_removals(console: Console, records: list[dict[str, object]], title: str) -> None:
    if not records:
        console.print("Nothing to remove.")
        return
    rows = [
        [
            escape(str(record["path"])),
            str(record["kind"]),
            escape(str(record["model"] or "-")),
            human_size(int(record["size_bytes"])),  # type: ignore[call-overload]
            escape(str(record["error"] or record["reason"])),
        ]
        for record in records
    ]
    table, dropped = fitted_table(console, REMOVAL_COLUMNS, rows, title=title, **COMPACT)
    table.caption = dropped_note(dropped).strip() or None
    console.print(table)


def verify(names: NamesArgument = None, json_output: JsonFlag = False, output: OutputOption = None) -> None:
    """Hash every cached file again and compare it with its record.

    Downloads from the Hub against the Hub's sha256 (the name of its blob), Google Drive and MMAction2
    downloads against the sha256 recorded (and pinned) at their first download, converted copies and
    OpenVINO builds against the sha256 recorded when they were written. Every file is read, whatever its
    time stamps say. A damaged file is a record with an `error` (exit status 3).

    Examples:
    `uniformer cache verify`
    `uniformer cache verify s16x4-k400 --json`
    """
    destination = Output(json_output, output)
    started = time.perf_counter()
    with ProgressBars(stderr_console.is_terminal) as bars:
        checks = engine.cache.verify(names or (), progress=bars)
    records = [check.record() for check in checks]
    seconds = time.perf_counter() - started
    code = destination.emit(Result(records), lambda console: _print_checks(console, checks, seconds))
    for check in checks:
        if check.problem is not None:
            print_error(check.problem)
    if code:
        raise typer.Exit(code)


CHECK_COLUMNS = (
    Column("model", wrap=True),
    Column("kind"),
    Column("file", wrap=True, drop=1),
    Column("sha256", drop=2),
    Column("result", wrap=True),
)


def _print_checks(console: Console, checks: list[engine.cache.Check], seconds: float) -> None:
    if not checks:
        console.print("No zoo model in the cache: nothing to verify.")
        return
    rows = [
        [
            escape(check.model),
            check.kind,
            escape(check.path.name),
            (check.actual or "-")[:12],
            "[green]ok[/]" if check.problem is None else f"[red]{escape(check.problem)}[/]",
        ]
        for check in checks
    ]
    table, dropped = fitted_table(console, CHECK_COLUMNS, rows, title="Cache verified", **COMPACT)
    damaged = sum(check.problem is not None for check in checks)
    table.caption = f"{len(checks)} files in {seconds:.1f} s: " + (f"{damaged} damaged" if damaged else "all match")
    table.caption += dropped_note(dropped)
    console.print(table)


COMMANDS: dict[str, Callable[..., None]] = {"ls": ls, "rm": rm, "verify": verify, "prune": prune}
app = typer.Typer(
    name="cache",
    cls=GlobalFlagsGroup,
    help="\n\n".join(" ".join(paragraph.split()) for paragraph in (__doc__ or "").split("\n\n")),
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as every command's (cli.framework)
    context_settings={"help_option_names": ["-h", "--help"]},
)
