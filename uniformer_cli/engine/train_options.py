"""What a user can ask of `uniformer train`, before any default is resolved (no torch needed: the CLI's
help text reads the choices)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
AUG_CHOICES = ("auto", "official", "basic")


@dataclass
class TrainOptions:
    """What the user asked for; None means "the default" (mostly from the zoo recipe)."""

    data: str | Path | None = None
    output: str | Path | None = None
    dataset: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    train_list: str | Path | None = None
    val_list: str | Path | None = None
    model: str | None = None
    weights: Path | None = None
    revision: str | None = None
    recipe: str | None = None
    init: str | None = None
    arch: str | None = None
    frames: int | None = None
    stride: int | None = None
    sampling: str | None = None
    size: int | None = None
    depth: tuple[int, int, int, int] | None = None
    embed_dim: tuple[int, int, int, int] | None = None
    head_dim: int | None = None
    epochs: int | None = None
    warmup_epochs: float | None = None
    lr: float | None = None
    min_lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    accum_steps: int | None = None
    clip_grad: float | None = None
    drop_path: float | None = None
    label_smoothing: float | None = None
    aug: str | None = None
    randaug: str | None = None
    flip: bool | None = None
    mixup: bool | None = None
    repeats: int | None = None
    erase_prob: float | None = None
    amp: str | None = None
    seed: int | None = None
    val_every: int | None = None
    val_clips: int | None = None
    val_crops: int | None = None
    save_every: int | None = None
