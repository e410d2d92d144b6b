"""Pieces of the output schema (docs/OUTPUT.md) that several commands' records share, so that the same
thing has the same field names everywhere. The engine builds records with them; `cli.output` encodes
and writes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def class_record(index: int, label: str | None, score: float | None = None) -> Record:
    """One ranked class: `index` (the model's output row), `label` (its name), `score` (a probability)."""
    return {"index": index, "label": label, "score": None if score is None else round(score, 6)}


def model_fields(name: str | None, weights: str | Path | None) -> Record:
    """`model`: the zoo name when the weights are a zoo entry's, else the weights path as given (never a
    bare file name); `weights`: the path of the file that was loaded."""
    return {
        "model": name if name is not None else None if weights is None else str(weights),
        "weights": None if weights is None else str(weights),
    }


@dataclass(frozen=True)
class Failure:
    """An input that gave no result (a path that named no video, a video that could not be read) and why:
    every command keeps it as a record with an `error` (docs/OUTPUT.md)."""

    file: str
    error: str
