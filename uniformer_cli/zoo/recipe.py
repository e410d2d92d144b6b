"""A released training recipe: what a zoo entry's official run did, after its run.sh overrides.

Shared by both families' entries (`zoo.ZooEntry`, `zoo.v2.V2ZooEntry`); `engine.train_config` turns the
recipe of the entry a run starts from into the run's defaults. The fields after `flip` default to what
every UniFormer (v1) recipe does (PROTOCOLS.md 7.1-7.4); the UniFormerV2 recipes set them to theirs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """The released training recipe after the official run.sh overrides (PROTOCOLS.md 7.4)."""

    init: str  # "imagenet", "clip", or the zoo name of the video checkpoint it was fine-tuned from
    batch_size: int  # videos per optimiser step (UniFormer: on one 8-GPU machine)
    lr: float  # for `batch_size` videos per step
    epochs: int
    warmup_epochs: int
    weight_decay: float
    randaug: str
    flip: bool
    gpus: int = 8  # the released run's GPUs: the default batch per process is `batch_size // gpus`
    mixup: bool = True  # mixup / cutmix with the official augmentation
    erase_prob: float = 0.25  # random erasing
    repeats: int = 2  # clips drawn per video and step
    label_smoothing: float = 0.1
