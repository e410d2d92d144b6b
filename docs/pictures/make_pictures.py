"""Make the pictures of this folder again, with the `uniformer` commands themselves (README.md here).

    python docs/pictures/make_pictures.py WORK     # WORK: a scratch folder; about 8 minutes on 2 CPU cores

Only the inputs are made here, from numbers: a motion dataset (a square moving in one of eight directions,
at its own speed, over noise with two still squares as distractors) and a clip whose square turns every
1.5 s. A tiny UniFormer is trained on them by `uniformer train`, and `uniformer eval --plot`,
`uniformer predict --timeline --plot` and `uniformer explain` draw the pictures. No pretrained weights
are needed, and each picture shows what its feature is for: the curves of a run that learns, per-class
accuracy that differs between classes, a confusion matrix whose errors are neighbouring directions, a
timeline that follows the turns, and a heat map on the moving square rather than on the still ones.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
from synthetic_video import write_video  # noqa: E402 (the tests' video writer)

# Eight directions, 45 degrees apart (image coordinates: y grows downwards).
DIRECTIONS = {
    "right": 0,
    "down-right": 45,
    "down": 90,
    "down-left": 135,
    "left": 180,
    "up-left": 225,
    "up": 270,
    "up-right": 315,
}
SIZE, SQUARE, FRAMES = 96, 14, 16
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 12
TURNS = ("right", "down", "left", "up-right")  # the timeline clip's directions, 1 s each
FPS = 30
MODEL = [
    "--scratch",
    "--depth", "1,1,1,1",
    "--embed-dim", "16,32,64,64",
    "--head-dim", "16",
    "--frames", "8",
    "--stride", "2",
    "--size", "64",
]  # fmt: skip
TRAINING = [
    "--no-flip",  # a flipped clip moves the other way: another class
    "--workers", "0",
    "--drop-path", "0",
    "--weight-decay", "0.01",
    "--epochs", "24",
    "--batch-size", "8",
    "--lr", "3e-3",
    "--warmup-epochs", "2",
    "--label-smoothing", "0",
]  # fmt: skip


def scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]:
    """A noisy background and two still squares coloured like the moving one."""
    background = rng.integers(0, 72, (SIZE, SIZE, 3))
    still = [
        (int(rng.integers(0, SIZE - SQUARE)), int(rng.integers(0, SIZE - SQUARE)), rng.integers(110, 256, 3))
        for _ in range(2)
    ]
    return background, still


def draw(background: np.ndarray, still: list[tuple[int, int, np.ndarray]], x: float, y: float, colour: np.ndarray):
    image = background.copy()
    for sx, sy, grey in still:
        image[sy : sy + SQUARE, sx : sx + SQUARE] = grey
    left, top = round(x), round(y)
    image[max(top, 0) : max(top + SQUARE, 0), max(left, 0) : max(left + SQUARE, 0)] = colour
    return image.astype(np.uint8)


def motion_clip(path: Path, direction: str, rng: np.random.Generator, slowest: float) -> Path:
    """The square crosses the frame in `direction` at a speed of its own, from `slowest` to 3.5 pixels a
    frame (the slow ones are the hard ones to tell from the neighbouring directions)."""
    angle = math.radians(DIRECTIONS[direction])
    speed = float(rng.uniform(slowest, 3.5))
    dx, dy = speed * math.cos(angle), speed * math.sin(angle)
    travel_x, travel_y = dx * (FRAMES - 1), dy * (FRAMES - 1)
    x0 = rng.uniform(max(0, -travel_x), SIZE - SQUARE - max(0, travel_x))
    y0 = rng.uniform(max(0, -travel_y), SIZE - SQUARE - max(0, travel_y))
    background, still = scene(rng)
    colour = rng.integers(110, 256, 3)
    return write_video(
        path, FRAMES, fps=FPS, frame=lambda i: draw(background, still, x0 + dx * i, y0 + dy * i, colour), b_frames=0
    )


def dataset(root: Path, seed: int = 0) -> Path:
    """`root/{train,val}/{direction}/{i}.mp4`, the layout `--dataset folder` reads. The validation clips
    also move slower than any training clip: the model meets cases it was not taught, as models do."""
    rng = np.random.default_rng(seed)
    for split, count, slowest in (("train", TRAIN_PER_CLASS, 1.5), ("val", VAL_PER_CLASS, 0.5)):
        for direction in DIRECTIONS:
            (root / split / direction).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                motion_clip(root / split / direction / f"{index}.mp4", direction, rng, slowest)
    return root


def turning_clip(path: Path, seed: int = 1) -> Path:
    """A square that moves `TURNS[0]`, then turns to each next direction every second (45 pixels a
    side: it never reaches an edge)."""
    rng = np.random.default_rng(seed)
    background, still = scene(rng)
    colour = np.array([240, 200, 60])
    x, y, speed = 15.0, 15.0, 1.5
    positions = []
    for direction in TURNS:
        angle = math.radians(DIRECTIONS[direction])
        for _ in range(FPS):
            positions.append((x, y))
            x, y = x + speed * math.cos(angle), y + speed * math.sin(angle)
    return write_video(
        path, len(positions), fps=FPS, frame=lambda i: draw(background, still, *positions[i], colour), b_frames=0
    )


def uniformer(work: Path, *args: object) -> None:
    """`uniformer ARGS` run in `work`, so the pictures name the model and the clips by short paths."""
    command = [sys.executable, "-m", "uniformer_cli.cli.app", *map(str, args)]
    print("$", " ".join(["uniformer", *map(str, args)]), flush=True)
    subprocess.run(command, check=True, cwd=work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="scratch folder for the data and the run")
    work = parser.parse_args().work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    dataset(work / "motion8")
    turning_clip(work / "turns.mp4")
    uniformer(work, "train", "--data", "motion8", "-o", "run", *MODEL, *TRAINING)
    shutil.copyfile(work / "run" / "best.safetensors", work / "motion8-tiny.safetensors")
    shutil.copyfile(work / "run" / "curves.png", HERE / "train_curves.png")
    weights = "motion8-tiny.safetensors"
    evaluation = ("--dataset", "folder", "--root", "motion8", "--plot", HERE, "-o", "eval.json")
    uniformer(work, "eval", *evaluation, "-w", weights)
    uniformer(work, "predict", "turns.mp4", "-w", weights, "--timeline", "0.5", "--plot", HERE / "predict_timeline.png")
    # The heat map of the validation clip the model is surest of, among those it gets right.
    videos = json.loads((work / "eval.json").read_text())["videos"]
    surest = max((video for video in videos if video["correct"]), key=lambda video: video["score"])
    uniformer(work, "explain", Path("motion8") / surest["video"], "-w", weights, "-o", HERE / "explain.mp4", "--force")


if __name__ == "__main__":
    main()
