"""`uniformer data pack|check`: datasets as shards, and what is wrong with a dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.framework import GlobalFlagsGroup
from uniformer_cli.cli.options import (
    Dataset,
    Decoder,
    DecoderOption,
    ListFileOption,
    ModelOption,
    WorkersOption,
    fields_from,
)
from uniformer_cli.cli.output import (
    EXIT_PARTIAL,
    Column,
    JsonFlag,
    Output,
    OutputOption,
    Result,
    dropped_note,
    fitted_table,
)
from uniformer_cli.cli.text import escape

app = typer.Typer(
    name="data",
    cls=GlobalFlagsGroup,
    help="Pack a dataset into tar shards, or check one for broken, short and duplicated videos.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as every command's (cli.framework)
    context_settings={"help_option_names": ["-h", "--help"]},
)

DatasetChoice = Annotated[
    Dataset | None,
    typer.Option(
        "--dataset",
        "-D",
        case_sensitive=False,
        help="The layout of SOURCE (default: class folders SOURCE/train/<class>/<video>, SOURCE/val/...).",
        show_default=False,
    ),
]


def _splits(splits: list[str] | None, list_file: str | None) -> tuple[str, ...]:
    """The splits asked for: train and val by default, the one split of a `--list` (val unless named)."""
    return tuple(splits or (["val"] if list_file is not None else ["train", "val"]))


def pack(
    source: Annotated[Path, typer.Argument(help="Dataset root, in any layout `uniformer eval` reads.")],
    destination: Annotated[str, typer.Argument(help="Folder (or s3://, gs://... URL) for the shards and index.")],
    shard_size: Annotated[str, typer.Option("--shard-size", help="Largest shard, e.g. 1GB, 500MB, 2GiB.")] = "1GB",
    resize: Annotated[
        int | None,
        typer.Option("--resize", metavar="SHORT_SIDE", help="Re-encode with this short side (default: copy as is)."),
    ] = None,
    dataset: DatasetChoice = None,
    splits: Annotated[
        list[str] | None, typer.Option("--split", help="Split to pack; repeat for more. [default: train, val]")
    ] = None,
    list_file: ListFileOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Order of the training samples in the shards.")] = 0,
    workers: WorkersOption = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace a packed dataset in DESTINATION.")] = False,
    json_output: JsonFlag = False,
    output: OutputOption = None,
) -> None:
    """Pack a dataset into WebDataset tar shards with an index, for `train`, `eval` and `features`.

    Each sample holds the video as stored (or re-encoded with `--resize`) and its label; the training
    split is shuffled once so that every shard mixes the classes. Unreadable videos are left out and
    listed (exit status 3).

    Example:
    `uniformer data pack ./k400 ./k400-shards --dataset k400 --shard-size 1GB`
    """
    from uniformer_cli.data.storage import local_or_url

    out = Output(json_output, output)
    request = engine.packing.PackRequest(
        **fields_from(
            engine.packing.PackRequest,
            locals(),
            source=source.expanduser(),
            destination=local_or_url(destination),
            splits=_splits(splits, list_file),
            shard_bytes=engine.packing.parse_size(shard_size),
            overwrite=force,
        )
    )
    report = engine.packing.pack(request)
    summary = report.summary()
    records = [video.record() for video in report.videos]
    out.finish(Result(records, document={**summary, "records": records}), lambda console: _print_pack(console, report))


def _print_pack(console: Console, report: Any) -> None:
    table = Table(title=escape(f"Packed {report.dataset} into {report.destination}"))
    for header in ("split", "videos", "shards", "size", "left out"):
        table.add_column(header, justify="left" if header == "split" else "right", no_wrap=True)
    for name, split in report.splits.items():
        size = f"{split['bytes'] / 2**20:,.1f} MiB"
        table.add_row(name, f"{split['samples']:,}", str(split["shards"]), size, str(split["failures"]))
    console.print(table)
    for video in report.videos:
        if video.error is not None:
            console.print(f"[yellow]left out[/] {escape(video.video)}: {escape(video.error)}")


def check(
    root: Annotated[str, typer.Argument(help="Dataset root (any layout), a packed dataset, or its URL.")],
    dataset: DatasetChoice = None,
    splits: Annotated[
        list[str] | None, typer.Option("--split", help="Split to check; repeat for more. [default: train, val]")
    ] = None,
    list_file: ListFileOption = None,
    model: ModelOption = None,
    min_frames: Annotated[
        int | None,
        typer.Option("--min-frames", min=1, help="Shortest usable video in frames [default: the model's clip span]."),
    ] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Decode every frame of every video (slow).")] = False,
    decoder: DecoderOption = Decoder.auto,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, max=256, help="Videos probed at once.")] = 8,
    fix_list: Annotated[
        Path | None,
        typer.Option("--fix-list", metavar="OUT.csv", help="Write the videos without problems as a csv layout list."),
    ] = None,
    json_output: JsonFlag = False,
    output: OutputOption = None,
) -> None:
    """Check a dataset: counts per split and class, unreadable, empty, too-short and duplicated videos,
    labels that disagree with the model's classes, and how long decoding will take.

    Containers are probed, not decoded (`--deep` decodes every frame). Exit status 3 when a problem was
    found; `--fix-list OUT.csv` writes the other videos as a list for `--dataset csv --list OUT.csv`.

    Example:
    `uniformer data check ./k400 --dataset k400 --fix-list k400-clean.csv`
    """
    from uniformer_cli.data.storage import local_or_url

    out = Output(json_output, output)
    request = engine.doctor.CheckRequest(
        **fields_from(engine.doctor.CheckRequest, locals(), root=local_or_url(root), splits=_splits(splits, list_file))
    )
    report = engine.doctor.check(request)
    records = [video.record() for video in report.videos]
    result = Result(records, document={**report.summary(), "records": records})
    code = out.emit(result, lambda console: _print_check(console, report))
    if code or report.class_mismatch is not None:
        raise typer.Exit(EXIT_PARTIAL)


SHOWN_PROBLEMS = 20


def _print_check(console: Console, report: Any) -> None:
    summary = report.summary()
    columns = [
        Column("split"),
        Column("videos", "right"),
        Column("classes", "right"),
        Column("smallest class", drop=1, wrap=True),
        *(Column(kind, "right") for kind in engine.doctor.PROBLEMS),
    ]
    rows = []
    for name, split in report.splits.items():
        counts = split["classes"]
        smallest = min(counts, key=counts.get) if counts else "-"
        found = [str(split["problems"][kind]) for kind in engine.doctor.PROBLEMS]
        rows.append([name, f"{split['videos']:,}", str(len(counts)), f"{escape(smallest)} ({counts.get(smallest, 0)})"])
        rows[-1].extend(found)
    table, dropped = fitted_table(console, columns, rows, title=escape(f"{report.dataset} at {report.root}"))
    console.print(table)
    if dropped:
        console.print(dropped_note(dropped))
    problems = [video for video in report.videos if video.problem is not None]
    for video in problems[:SHOWN_PROBLEMS]:
        console.print(f"[yellow]{video.problem}[/] {escape(video.error or video.video)}")
    if len(problems) > SHOWN_PROBLEMS:
        console.print(f"... and {len(problems) - SHOWN_PROBLEMS} more (--json or -o lists them all)")
    if report.class_mismatch:
        console.print(f"[yellow]labels[/] {escape(report.class_mismatch)}")
    if summary["decode_seconds_per_video"] is not None:
        console.print(
            f"decoding: {summary['decode_seconds_per_video']:.2f} s per training clip on one core "
            f"(from {summary['decoded_videos']} videos), about {summary['decode_hours_estimate']:.2f} h "
            f"per epoch for {summary['videos']:,} videos"
        )
    if report.fix_list:
        console.print(
            f"wrote {escape(report.fix_list)}: the {summary['videos'] - len(problems):,} videos without problems"
        )


COMMANDS: dict[str, Callable[..., None]] = {
    "pack": pack,
    "check": check,
}  # registered by cli/app.py, like the top-level commands
