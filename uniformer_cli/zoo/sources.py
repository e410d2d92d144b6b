"""Where zoo checkpoints download from: the names of the sources, shared by both families' entries."""

from __future__ import annotations

from typing import Literal

Source = Literal["hub", "mmaction2", "drive"]
SOURCE_NAMES: dict[Source, str] = {"hub": "the Hugging Face Hub", "mmaction2": "MMAction2", "drive": "Google Drive"}
