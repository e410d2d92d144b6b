"""JSON in and out, the one way the package does it: strict on the way out, bounded on the way in.

- `dump_json`: standard JSON only. Python's encoder writes `NaN` and `Infinity`, which no JSON parser
  but Python's accepts; here a non-finite float becomes `null` (the inputs that produce one are
  reported as errors where they arise: this is the last guard, not the rule).
- `load_json` / `read_json`: a document larger than `MAX_JSON_BYTES` or nested deeper than
  `MAX_JSON_DEPTH` is refused with a `ValueError` (deep nesting would otherwise end in a
  `RecursionError`, or in the recursion of whatever walks the result); `read_json` reads only regular
  files (`files.read_text_file`). Every reader of JSON (weights metadata, label files, resume files,
  caches, configs) goes through them, and catches `ValueError` as it does for malformed JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uniformer_cli.files import read_text_file

# Far above anything the package writes or reads (a resume file of 10**6 videos is about 300 MB... of
# which the deepest value is 4 levels down); low enough that a hostile document fails fast.
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 1 << 30
_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (containers copied only where needed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def dump_json(
    value: Any,
    *,
    indent: int | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """`json.dumps` that writes standard JSON only: NaN and infinities become null."""
    options: dict[str, Any] = {"indent": indent, "sort_keys": sort_keys, "ensure_ascii": ensure_ascii}
    options["default"] = default
    try:
        text = json.dumps(value, allow_nan=False, **options)
    except ValueError:  # a non-finite float somewhere: the rare case pays for the copy
        text = json.dumps(_finite(value), allow_nan=False, **options)
    # A file name that is not UTF-8 reaches Python as lone surrogates (`os.fsdecode`), which no UTF-8 text
    # can hold: `\udcXX` escapes keep them, and give the same name back to `json.loads`.
    return _SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", text) if not ensure_ascii else text


def _depth_problem(value: Any) -> str | None:
    """Whether a parsed document nests deeper than `MAX_JSON_DEPTH`, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            return f"it nests more than {MAX_JSON_DEPTH} levels deep"
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of the range of a float")
    return value


def load_json(text: str | bytes, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """`json.loads` of standard JSON, bounded: `ValueError` for malformed text, `NaN` / `Infinity`
    tokens (not JSON), more than `max_bytes`, or nesting deeper than `MAX_JSON_DEPTH`."""
    if len(text) > max_bytes:
        raise ValueError(f"it is larger than {max_bytes:,} bytes")

    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"it nests more than {MAX_JSON_DEPTH} levels deep") from None
    problem = _depth_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """`load_json` of a file's UTF-8 text; `OSError` or `ValueError` (not a regular file, too large,
    not UTF-8, not JSON)."""
    return load_json(read_text_file(path, max_bytes=max_bytes), max_bytes=max_bytes)
