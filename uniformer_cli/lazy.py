"""Package attributes imported on first use (PEP 562), so that `uniformer --help` and `uniformer models`
start without importing torch; only the commands that compute pay for it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(
    package: str, names: Mapping[str, Iterable[str]] | None = None, submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`: `names` maps a relative module to the names it
    exports through the package; `submodules` become attributes without an explicit import."""
    owners = {name: module for module, exported in (names or {}).items() for name in exported}
    modules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in modules:
            return importlib.import_module(f".{name}", package)
        if name not in owners:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(owners[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *owners, *modules})

    return __getattr__, __dir__
