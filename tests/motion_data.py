"""A tiny action dataset for the training tests: a square moving left, right, up or down over a noisy
background. Any single frame is ambiguous (start positions are random), so only motion tells the class."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from synthetic_video import write_video

from uniformer_cli.data.datasets import Sample, open_sample

DIRECTIONS = {"down": (0, 1), "left": (-1, 0), "right": (1, 0), "up": (0, -1)}
# A UniFormer small enough to train on two CPU cores in about a minute (`TrainOptions` fields).
TINY: dict[str, object] = {
    "init": "scratch",
    "depth": (1, 1, 1, 1),
    "embed_dim": (16, 32, 64, 64),
    "head_dim": 16,
    "frames": 8,
    "stride": 2,
    "size": 32,
}


def tiny_flags() -> list[str]:
    """`TINY` as `uniformer train` flags."""
    flags = ["--scratch"]
    for name, value in TINY.items():
        if name != "init":
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            flags += [f"--{name.replace('_', '-')}", text]
    return flags


def motion_video(path: Path, direction: str, rng: np.random.Generator, frames: int = 16, size: int = 64) -> Path:
    dx, dy = DIRECTIONS[direction]
    square, speed = 12, 3
    travel = speed * (frames - 1)
    x0 = int(rng.integers(travel if dx < 0 else 0, size - square - (travel if dx > 0 else 0) + 1))
    y0 = int(rng.integers(travel if dy < 0 else 0, size - square - (travel if dy > 0 else 0) + 1))
    colour = rng.integers(128, 256, 3)
    background = rng.integers(0, 64, (size, size, 3))

    def frame(index: int) -> np.ndarray:
        image = background.copy()
        x, y = x0 + dx * speed * index, y0 + dy * speed * index
        image[y : y + square, x : x + square] = colour
        return image.astype(np.uint8)

    return write_video(path, frames, frame=frame, gop=8, b_frames=0)


def motion_dataset(root: Path, train_per_class: int, val_per_class: int, seed: int = 0) -> Path:
    """`root/{train,val}/{direction}/{i}.mp4`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for direction in DIRECTIONS:
            folder = root / split / direction
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                motion_video(folder / f"{index}.mp4", direction, rng)
    return root


def listed_motion_dataset(root: Path, train_per_class: int, protocol: dict[str, object]) -> Path:
    """`motion_dataset` with one validation video per class, `val.csv` listing those and a video that does
    not exist (`val/up/gone.mp4`), and `tiny.safetensors` beside `root`: a random tiny UniFormer for the
    four classes with `protocol`."""
    from tiny_training import TINY_CONFIG

    from uniformer_cli.models import create_model
    from uniformer_cli.weights import save_weights

    motion_dataset(root, train_per_class, 1)
    classes = sorted(DIRECTIONS)
    with (root / "val.csv").open("w", newline="") as file:
        rows = csv.writer(file)
        for name in classes:
            rows.writerow([f"val/{name}/0.mp4", name])
        rows.writerow(["val/up/gone.mp4", "up"])
    torch.manual_seed(3)
    model = create_model(TINY_CONFIG.replace(num_classes=len(classes)))
    save_weights(root.parent / "tiny.safetensors", model, model.config, labels=classes, protocol=protocol)
    return root


def all_frames(samples: Sequence[Sample]) -> list[np.ndarray]:
    """Every frame of each sample, decoded with PyAV."""
    out = []
    for sample in samples:
        with open_sample(sample, "pyav") as video:
            out.append(video.read(list(range(video.num_frames))))
    return out


def same_frames(samples: Sequence[Sample], others: Sequence[Sample]) -> bool:
    """Whether two lists of samples decode to the same frames, sample for sample."""
    pairs = zip(all_frames(samples), all_frames(others), strict=True)
    return len(samples) == len(others) and all(np.array_equal(a, b) for a, b in pairs)
