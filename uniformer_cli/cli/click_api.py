"""The Click exceptions Typer raises: recent Typer releases carry their own copy of Click (`typer._click`)
and no longer install the `click` package; older ones raise `click`'s."""

from __future__ import annotations

from typing import Any

try:
    from typer._click import exceptions  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Typer before it vendored Click
    from click import exceptions  # type: ignore[no-redef,unused-ignore]

# Typed Any: which module they come from depends on the Typer release.
ClickException: Any = exceptions.ClickException
UsageError: Any = exceptions.UsageError
MissingParameter: Any = exceptions.MissingParameter
# `uniformer` with no command: Click >= 8.2 raises this (its message is the help), older ones print the help.
NoArgsIsHelpError: Any = getattr(exceptions, "NoArgsIsHelpError", ())
