"""How every command reads on a terminal: help that fits 80 columns and global flags that work anywhere.

- Help is Click's plain layout (the `hf` CLI's habit): each option's description takes the rest of the
  line after a short name column, so it stays readable at 80 columns, nothing is cut with "…", and a
  flag shows no value. Help strings are written once, with rich markup escapes (`\\[default: ...]`); they
  are turned into plain text here (`plain`), and options get short metavars by type (`N`, `FILE`,
  `[a|b]`), so the option column stays narrow.
- A command's docstring ends with an `Examples:` paragraph, one backquoted command per line; it is
  shown as the help's epilog, one example per line, never reflowed (`help_text`).
- Options in a help panel (`rich_help_panel`, as `train` groups its many options) get a section each.
- `-q/--quiet`, `-v/--verbose` and `--wide` belong to the top-level command, but also work after any
  command, even a nested one (`uniformer predict x.mp4 -q`, `uniformer cache ls --wide`): `GlobalFlagsGroup`
  takes them out of the command's arguments before the command parses them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any, get_args, get_origin

from typer.core import TyperCommand, TyperGroup

# The top-level flags that may also follow the command, and the parameter each sets.
GLOBAL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose", "--wide": "wide"}
GLOBAL_NOTE = "-q/--quiet, -v/--verbose and --wide (see `uniformer -h`) also work after the command."
EXAMPLES = "Examples:"


def plain(text: str | None) -> str | None:
    """Help text written for rich markup (`\\[`, `[bold]...[/]`) as the plain text a terminal shows."""
    if not text:
        return text
    from rich.text import Text  # help is printed rarely: rich loads only then

    # "\b" alone on a line tells Click to keep the next paragraph's lines as they are: kept too.
    return "\n".join(line if line == "\b" else Text.from_markup(line).plain for line in text.split("\n"))


def help_text(docstring: str | None) -> tuple[str, str | None]:
    """A command's docstring as (help, examples epilog). The help keeps its paragraphs (Click reflows
    them to the terminal); the `Examples:` paragraph, one backquoted command per line, becomes an
    epilog that Click shows verbatim (`\\b`), one example per line."""
    paragraphs = inspect.cleandoc(docstring or "").split("\n\n")
    kept, examples = [], []
    for paragraph in paragraphs:
        lines = [line.strip() for line in paragraph.splitlines()]
        if lines and lines[0].startswith(("Example:", EXAMPLES)):
            examples += re.findall(r"`([^`]+)`", paragraph)
        else:
            kept.append(" ".join(lines))
    epilog = "\b\n" + "\n".join([EXAMPLES, *(f"  {example}" for example in examples)]) if examples else None
    return "\n\n".join(kept), epilog


def _metavar(parameter: Any) -> str | None:
    """A short value name by the option's type: `[a|b]` for choices, `N` for whole numbers, `NUMBER`,
    `FILE`, `DIR`, `PATH`, `TEXT`. None for flags."""
    if getattr(parameter, "is_flag", False) or getattr(parameter, "count", False):
        return None
    descriptor = getattr(parameter, "type_descriptor", None)
    if descriptor is not None:  # Typer >= 0.20 describes types itself
        choices = descriptor.choices
        if descriptor.is_path:
            kind = {"file": "FILE", "dir": "DIR"}.get(descriptor.path_type, "PATH")
            return kind
        annotation = descriptor.annotation
        if get_origin(annotation) in (list, tuple):
            annotation = get_args(annotation)[0]
    else:  # a Click parameter type
        kind = parameter.type
        choices = getattr(kind, "choices", None)
        name = getattr(kind, "name", "")
        if name == "path":
            dir_okay, file_okay = getattr(kind, "dir_okay", True), getattr(kind, "file_okay", True)
            return "FILE" if not dir_okay else "DIR" if not file_okay else "PATH"
        annotation = int if name.startswith("integer") else float if name.startswith("float") else str
    if choices is not None:
        return "[" + "|".join(str(getattr(choice, "value", choice)) for choice in choices) + "]"
    return {int: "N", float: "NUMBER"}.get(annotation, "TEXT")


def _plain_parameters(parameters: Sequence[Any]) -> None:
    for parameter in parameters:
        if getattr(parameter, "help", None):
            parameter.help = plain(parameter.help)
        if parameter.param_type_name == "option" and parameter.metavar is None:
            parameter.metavar = _metavar(parameter)
        elif parameter.param_type_name == "argument":
            if parameter.metavar is None:
                parameter.metavar = (parameter.name or "").upper()
            # Recent Typer releases print an argument's Python type (`<list[str]>`) beside its name.
            if hasattr(parameter, "display_type_rich"):
                setattr(parameter, "display_type_rich", lambda ctx: None)  # noqa: B010 (a method, on one object)


class PlainCommand(TyperCommand):
    """A command whose help is plain text at the terminal's width (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = plain(self.help)
        self.short_help = plain(self.short_help)
        self.epilog = "\n\n".join(part for part in (plain(self.epilog), GLOBAL_NOTE) if part)
        _plain_parameters(self.params)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments, then options, then each help panel's options under its own heading."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for parameter in self.get_params(ctx):
            record = parameter.get_help_record(ctx)
            if record is None:
                continue
            if parameter.param_type_name == "argument":
                heading = "Arguments"
            else:
                heading = getattr(parameter, "rich_help_panel", None) or "Options"
            sections.setdefault(heading, []).append(record)
        order = ["Arguments", *(name for name in sections if name not in ("Arguments", "Options")), "Options"]
        for heading in order:
            if heading in sections:
                with formatter.section(heading):
                    formatter.write_dl(sections[heading])


class GlobalFlagsGroup(TyperGroup):
    """A group whose global flags (`GLOBAL_FLAGS`) may also come after its command (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = plain(self.help)
        self.epilog = plain(self.epilog)
        _plain_parameters(self.params)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if ctx.parent is None:  # the top-level group: its callback has not run yet
            taken = take_global_flags(rest)
            for parameter in taken:
                ctx.params[parameter] = True
        return name, command, rest


def take_global_flags(args: list[str]) -> set[str]:
    """Remove the global flags from `args` (in place; nothing after `--`); the parameters they set."""
    taken = set()
    position = 0
    while position < len(args) and args[position] != "--":
        if args[position] in GLOBAL_FLAGS:
            taken.add(GLOBAL_FLAGS[args.pop(position)])
        else:
            position += 1
    return taken
