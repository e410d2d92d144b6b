"""Where zoo checkpoints download from: the names of the sources, shared by both families' entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["hub", "mmaction2", "drive"]


@dataclass(frozen=True)
class SourceName:
    """How the output names a weights source: `label` in tables (`uniformer models`), `full` in sentences."""

    label: str
    full: str


SOURCE_NAMES: dict[Source, SourceName] = {
    "hub": SourceName("Hub", "the Hugging Face Hub"),
    "mmaction2": SourceName("MMAction2", "MMAction2"),
    "drive": SourceName("Drive", "Google Drive"),
}
