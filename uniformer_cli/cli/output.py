"""The one output layer of every command: `--json`, `-o/--output FILE`, tables, exit codes.

A command builds a `Result` (one record per input, failures included as records with an `error`
field) and hands it to `Output.emit` with a function that prints its tables. The schema of the records
is in docs/OUTPUT.md; this module only decides where they go and how they are encoded:

- `--json`: the JSON document on stdout, and no tables;
- `-o FILE`: the records in FILE, encoded by its extension (`.json`, `.jsonl`, `.csv`); `-o -` is
  `--json`; the tables still print unless stdout carries the JSON;
- the exit status: `EXIT_OK` when every input was processed, `EXIT_PARTIAL` when some records carry an
  `error` (the others were still written), `EXIT_ERROR` when the command stopped on an error and
  `EXIT_USAGE` for a command line Click refused.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from uniformer_cli.data import storage
from uniformer_cli.errors import UniformerError, WriteError
from uniformer_cli.files import destination_problem, ensure_writable, write_reason, write_with_fallback
from uniformer_cli.jsonio import dump_json

EXIT_OK = 0  # every input processed
EXIT_ERROR = 1  # stopped on an error (one `error:` line): nothing, or only a resumable part, written
EXIT_USAGE = 2  # the command line was refused (one `error:` line), nothing done
EXIT_PARTIAL = 3  # finished, but some inputs failed: their records carry `error`, the others are complete
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM

STDOUT = "-"
FORMATS = ("json", "jsonl", "csv")
WIDE_COLUMNS = 10_000  # `--wide`: tables are as wide as their content, up to this

_SETTINGS = {"wide": False}


def set_wide(wide: bool) -> None:
    """`uniformer --wide`: tables at their full width (`table_console`)."""
    _SETTINGS["wide"] = wide


def table_console() -> Console:
    """The console that tables print to: the terminal's width (tables fold names and leave columns out to
    fit it, `fitted_table`), or with `--wide` their full width, every column, nothing folded."""
    return Console(width=WIDE_COLUMNS, emoji=False) if _SETTINGS["wide"] else Console(emoji=False)


Record = dict[str, Any]


def output_format(path: str) -> str:
    """The encoding that the extension of an `-o` path names; `-` (stdout) is JSON."""
    if path == STDOUT:
        return "json"
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UniformerError(
            f"cannot tell the format of {path!r} from its extension: use .json, .jsonl or .csv (or - for stdout)"
        )
    return suffix


def _check_output_path(value: str | None) -> str | None:
    """`-o` is checked while parsing, so a typo costs no model download and exits with EXIT_USAGE."""
    if value is None:
        return None
    try:
        output_format(value)
    except UniformerError as error:
        raise typer.BadParameter(str(error)) from None
    problem = None if value == STDOUT else destination_problem(value)
    if problem is not None:
        raise typer.BadParameter(f"cannot write {value}: {problem}")
    return value


JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the results as JSON on stdout instead of tables (docs/OUTPUT.md).")
]
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        callback=_check_output_path,
        help="Also write the results to FILE, encoded by its extension: .json, .jsonl or .csv ('-': JSON on "
        "stdout, like --json). An existing FILE is replaced, atomically.",
        show_default=False,
    ),
]


@dataclass
class Result:
    """What a command produced.

    `records`: one flat-ish dict per input (video, model, zoo entry...), failures included, each with
    an `error` key (None when it worked); they are what `.jsonl` and `.csv` hold. `document`: the JSON
    document when it is more than the list of records (eval's summary, convert's single object).
    """

    records: list[Record] = field(default_factory=list)
    document: Any = None

    @property
    def failed(self) -> int:
        return sum(1 for record in self.records if record.get("error") is not None)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def json_document(self) -> Any:
        return self.records if self.document is None else self.document


def encode(result: Result, fmt: str) -> str:
    """The text of `result` in one of `FORMATS`."""
    if fmt == "json":
        return dump_json(result.json_document(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(dump_json(record, ensure_ascii=False) + "\n" for record in result.records)
    if fmt == "csv":
        return csv_text(result.records)
    raise ValueError(f"unknown format {fmt!r}")


def flatten(record: Mapping[str, Any], prefix: str = "") -> Record:
    """A CSV row: nested objects become `parent.child` columns, lists become JSON text, None an empty cell."""
    row: Record = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            row.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            row[name] = dump_json(value, ensure_ascii=False)
        else:
            row[name] = value
    return row


def csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    """Records as CSV; the columns are every flattened key, in order of first appearance."""
    rows = [flatten(record) for record in records]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class Output:
    """Where a command's results go, from its `--json` and `-o` options (and legacy aliases that force
    a format, such as `--csv FILE`)."""

    json: bool = False
    path: str | None = None
    forced_format: str | None = None

    def __post_init__(self) -> None:
        if self.path is not None and self.forced_format is None:
            output_format(self.path)  # refused early (the option callback did it for the CLI)
        if isinstance(self.file, Path):  # before the command's work, not after it
            ensure_writable(self.file, f"{self.file_format.upper()} output")
        if self.json and self.path == STDOUT and self.file_format != "json":
            raise UniformerError(f"--json and {self.file_format.upper()} on stdout both write to stdout: pick one")

    @property
    def file_format(self) -> str:
        assert self.path is not None
        return self.forced_format or output_format(self.path)

    @property
    def to_stdout(self) -> bool:
        """Whether stdout carries machine-readable output (then no table is printed)."""
        return self.json or self.path == STDOUT

    @property
    def file(self) -> Path | str | None:
        """The file `-o` names: a path, or a storage URL as given (None for stdout or no `-o`)."""
        if self.path is None or self.path == STDOUT:
            return None
        return self.path if storage.is_url(self.path) else Path(self.path)

    def emit(
        self,
        result: Result,
        tables: Callable[[Console], None] | None = None,
        *,
        file_written: bool = False,
    ) -> int:
        """Print the tables or the JSON, write `-o FILE` (unless the engine already did: `file_written`)
        and return the exit status the records call for."""
        if self.json:
            write_stdout(encode(result, "json"))
        if self.path == STDOUT and not self.json:
            write_stdout(encode(result, self.file_format))
        if not self.to_stdout and tables is not None:
            if sys.stdout is None and self.file is None:  # the tables are the only output: they must show
                write_stdout("")
            tables(table_console())
        if self.file is not None and not file_written:
            write_text(self.file, encode(result, self.file_format))
        return result.exit_code

    def finish(self, result: Result, tables: Callable[[Console], None] | None = None, **kwargs: Any) -> None:
        """`emit`, then end the command with its exit status."""
        code = self.emit(result, tables, **kwargs)
        if code:
            raise typer.Exit(code)


def write_stdout(text: str) -> None:
    """Machine-readable output (or a stream's lines) on stdout. A stdout that is closed, full or whose reader
    went away (`| head`) is a `WriteError` line, never output lost without a word."""
    stream = sys.stdout
    if stream is None:  # the process started with its stdout closed
        raise WriteError("cannot write the results to stdout: it is closed")
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:  # a CSV naming a file that is not UTF-8: its bytes, as in a file
            stream.flush()
            stream.buffer.write(encoded(text))
        stream.flush()
    except OSError as error:
        if isinstance(error, BrokenPipeError):  # nothing more reaches the reader: not at exit either
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        reason = "the reader closed the pipe" if isinstance(error, BrokenPipeError) else write_reason(error)
        raise WriteError(f"cannot write the results to stdout: {reason}") from None


def write_text(path: Path | str, text: str) -> None:
    """Write an output file atomically: a failed write leaves the previous file, never a partial one, and
    the results go to the temporary folder instead (the one error line says where). A storage URL gets
    the whole object at once."""
    if isinstance(path, str):
        storage.write_bytes(path, encoded(text))
        return
    write_with_fallback(path, lambda temporary: temporary.write_bytes(encoded(text)), "output")


def encoded(text: str) -> bytes:
    """UTF-8 bytes of an output; a file name that is not UTF-8 (lone surrogates, as `os.fsdecode` keeps
    its bytes) is written as the bytes it has on disk. JSON never holds one (`dump_json` escapes them)."""
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Column:
    """A table column. Numbers never wrap (a cut number is a wrong number); text with `wrap` folds.
    `drop`: columns that may be left out when the table does not fit, lowest first (0: always kept)."""

    header: str
    justify: Literal["left", "right", "center"] = "left"
    drop: int = 0
    wrap: bool = False
    style: str | None = None


def fitted_table(
    console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], **table_options: Any
) -> tuple[Table, list[str]]:
    """A rich Table of `rows` that fits `console.width` without cutting a cell that may not wrap:
    droppable columns go, lowest `drop` first, until it fits. Returns the table and the headers left out
    (say so in a caption: `--json` has them all)."""
    kept = list(range(len(columns)))
    droppable = sorted((index for index, column in enumerate(columns) if column.drop), key=lambda i: columns[i].drop)
    dropped: list[int] = []
    while not _fits(console, columns, rows, kept, table_options) and droppable:
        dropped.append(droppable.pop(0))
        kept.remove(dropped[-1])
    # Then take back, most valuable first, the dropped columns that still fit beside the others.
    for index in reversed(list(dropped)):
        trial = sorted([*kept, index])
        if _fits(console, columns, rows, trial, table_options):
            kept = trial
            dropped.remove(index)
    headers = [columns[index].header.replace("\n", " ") for index in sorted(dropped)]
    return _table(columns, rows, kept, table_options), headers


def _table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], kept: Sequence[int], options: dict[str, Any]
) -> Table:
    table = Table(**options)
    for index in kept:
        column = columns[index]
        # Rich measures a no-wrap cell by its longest word: its whole width must be the minimum.
        whole = max(_width(text) for text in [column.header, *(row[index] for row in rows)])
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=not column.wrap,
            overflow="fold" if column.wrap else "ellipsis",
            style=column.style,
            min_width=None if column.wrap else whole,
        )
    for row in rows:
        table.add_row(*(row[index] for index in kept))
    return table


def _fits(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    kept: Sequence[int],
    options: dict[str, Any],
) -> bool:
    # Measured without the console's limit, which would clamp the answer to its width.
    unbounded = console.options.update_width(1_000_000)
    return Measurement.get(console, unbounded, _table(columns, rows, kept, options)).minimum <= console.width


def _width(markup: str) -> int:
    return max(Text.from_markup(line).cell_len for line in markup.split("\n"))


def dropped_note(dropped: Sequence[str]) -> str:
    return f"\nnot shown at this width: {', '.join(dropped)} (--json has every field)" if dropped else ""
