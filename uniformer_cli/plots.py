"""PNG figures: prediction timelines, per-class accuracy and confusions, training curves, Grad-CAM sheets.

matplotlib is the optional `plot` extra (`pip install 'uniformer[plot]'`), imported on first use. Figures
are drawn on `matplotlib.figure.Figure` objects (no pyplot, no global backend switch: a user's own
matplotlib session is left alone) at a fixed size and 100 dpi, so each PNG has a known pixel size, and
written atomically.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from uniformer_cli.errors import UniformerError
from uniformer_cli.files import write_with_fallback

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MISSING = "plots need matplotlib, which is not installed: pip install 'uniformer[plot]'"
MATRIX_CLASSES = 30  # above this, a confusion matrix is unreadable: list the most confused pairs instead
NAMED_BARS = 40  # above this, per-class bars carry no names: the worst classes are listed beside them


def require_matplotlib() -> None:
    """Fail with one clear line when the `plot` extra is missing (before any work is done)."""
    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        raise UniformerError(MISSING) from None


def figure(width: float, height: float, **options: Any) -> Figure:
    """A `width` x `height` inch figure (pixels: x100)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained", **options)


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG, atomically (a failed write leaves any previous file in place, and the figure
    goes to the temporary folder instead: `write_with_fallback`)."""
    path = Path(path)
    write_with_fallback(path, lambda temporary: fig.savefig(temporary, format="png", dpi=DPI), "plot")
    return path


Params = ParamSpec("Params")
Result = TypeVar("Result")


def plain_text(draw: Callable[Params, Result]) -> Callable[Params, Result]:
    """Run a plotting function with every text taken literally: class names, file names and titles come
    from files and users, and matplotlib would otherwise read `$...$` in them as mathtext (a parse error
    for most such strings) and warn about each glyph its font lacks (control characters)."""

    @functools.wraps(draw)
    def drawn(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        require_matplotlib()
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return draw(*args, **kwargs)

    return drawn


def _shorten(name: str, length: int = 32) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def _name(classes: Sequence[str], index: int, length: int = 32) -> str:
    """A class's name, shortened; outputs past the named ones (HMDB51's 101-row head) as `class N`."""
    return _shorten(classes[index] if 0 <= index < len(classes) else f"class {index}", length)


@plain_text
def timeline_plot(
    path: str | Path,
    windows: Sequence[tuple[float, float]],
    probabilities: np.ndarray,
    labels: Sequence[str],
    title: str,
    top: int = 5,
) -> Path:
    """The scores of the `top` classes (highest peak over the windows) across the video's time: one step
    line per class over `windows` (start, end seconds); `probabilities` is `[windows, classes]`."""
    fig = figure(10, 4.5)
    ax = fig.subplots()
    scores = np.asarray(probabilities, dtype=np.float64)
    chosen = np.argsort(-scores.max(axis=0), kind="stable")[: min(top, scores.shape[1])]
    edges = [start for start, _ in windows] + [windows[-1][1]]
    for index in chosen:
        values = [*scores[:, index], scores[-1, index]]
        ax.step(edges, values, where="post", linewidth=2, label=_shorten(labels[index]))
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    return save(fig, path)


@plain_text
def per_class_plot(path: str | Path, classes: Sequence[str], labels: Sequence[int], predicted: Sequence[int]) -> Path:
    """Top-1 accuracy of each class that has videos, as bars (sorted, worst first when names do not fit)."""
    totals = Counter(labels)
    hits = Counter(label for label, guess in zip(labels, predicted, strict=True) if label == guess)
    present = sorted(totals)
    accuracy = {label: 100.0 * hits[label] / totals[label] for label in present}
    if len(present) <= NAMED_BARS:
        fig = figure(10, max(3.0, 0.25 * len(present) + 1.2))
        ax = fig.subplots()
        names = [f"{_name(classes, label)} ({totals[label]})" for label in present]
        ax.barh(range(len(present)), [accuracy[label] for label in present], color="tab:blue")
        ax.set_yticks(range(len(present)), names, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("top-1 accuracy (%)")
        ax.set_title(f"per-class top-1 accuracy ({len(labels)} videos)")
        return save(fig, path)
    fig = figure(12, 6)
    bars, worst = fig.subplots(1, 2, width_ratios=(3, 2))
    ranked = sorted(present, key=lambda label: (accuracy[label], label))
    bars.bar(range(len(ranked)), [accuracy[label] for label in ranked], width=1.0, color="tab:blue")
    bars.set_xlim(-0.5, len(ranked) - 0.5)
    bars.set_ylim(0, 100)
    bars.set_xlabel(f"{len(ranked)} classes, sorted by accuracy")
    bars.set_ylabel("top-1 accuracy (%)")
    bars.set_title(f"per-class top-1 accuracy ({len(labels)} videos)")
    shown = ranked[:20]
    worst.barh(range(len(shown)), [accuracy[label] for label in shown], color="tab:red")
    worst.set_yticks(range(len(shown)), [_name(classes, label, 28) for label in shown], fontsize="small")
    worst.invert_yaxis()
    worst.set_xlim(0, 100)
    worst.set_title("the 20 worst classes")
    return save(fig, path)


@plain_text
def confusion_plot(path: str | Path, classes: Sequence[str], labels: Sequence[int], predicted: Sequence[int]) -> Path:
    """A row-normalised confusion matrix over the classes that occur; with more than `MATRIX_CLASSES`
    of them, the 20 most frequent (true -> predicted) confusions as bars."""
    present = sorted(set(labels) | set(predicted))
    if len(present) <= MATRIX_CLASSES:
        position = {label: i for i, label in enumerate(present)}
        counts = np.zeros((len(present), len(present)))
        for label, guess in zip(labels, predicted, strict=True):
            counts[position[label], position[guess]] += 1
        rows = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        side = max(5.0, 0.3 * len(present) + 3)
        fig = figure(side + 1, side)
        ax = fig.subplots()
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        names = [_name(classes, label, 24) for label in present]
        ax.set_xticks(range(len(present)), names, rotation=90, fontsize="small")
        ax.set_yticks(range(len(present)), names, fontsize="small")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("confusion matrix (share of each true class)")
        fig.colorbar(image, ax=ax, shrink=0.8)
        return save(fig, path)
    pairs = Counter((label, guess) for label, guess in zip(labels, predicted, strict=True) if label != guess)
    common = pairs.most_common(20)
    fig = figure(10, 6)
    ax = fig.subplots()
    names = [f"{_name(classes, a, 28)} → {_name(classes, b, 28)}" for (a, b), _ in common]
    ax.barh(range(len(common)), [count for _, count in common], color="tab:orange")
    ax.set_yticks(range(len(common)), names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("videos")
    ax.set_title(f"the most confused pairs (true → predicted) among {len(present)} classes")
    return save(fig, path)


@plain_text
def training_curves(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Loss, learning rate and validation top-1 against the optimiser step, from `metrics.jsonl` records
    (`event` "step" with `loss` and `lr`; "epoch" with `train_loss` and, when validated, `val_top1`)."""
    steps = [r for r in records if r.get("event") == "step"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    validated = [r for r in epochs if "val_top1" in r]
    fig = figure(12, 4)
    loss, rate, top1 = fig.subplots(1, 3)
    loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train (logged steps)")
    loss.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", label="epoch mean")
    loss.set_title("loss")
    loss.legend(fontsize="small")
    rate.plot([r["step"] for r in steps], [r["lr"] for r in steps], color="tab:green")
    rate.set_title("learning rate")
    rate.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    top1.plot([r["step"] for r in validated], [r["val_top1"] for r in validated], "o-", color="tab:red")
    top1.set_ylim(0, 100)
    top1.set_title("validation top-1 (%)")
    for ax in (loss, rate, top1):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return save(fig, path)


@plain_text
def contact_sheet(path: str | Path, frames: np.ndarray, times: Sequence[float], title: str, columns: int = 4) -> Path:
    """uint8 RGB `frames` `[T, H, W, 3]` in a grid, each captioned with its time in seconds."""
    count = len(frames)
    columns = min(columns, count)
    rows = -(-count // columns)
    fig = figure(3 * columns, 3 * rows + 0.6)
    fig.suptitle(title)
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    for ax, frame, time in zip(axes, frames, times, strict=False):
        ax.imshow(frame)
        ax.set_title(f"{time:.2f} s", fontsize="small")
    for ax in axes:
        ax.axis("off")
    return save(fig, path)


def colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """uint8 RGB colours `[..., 3]` of `values` in [0, 1] under a matplotlib colormap."""
    require_matplotlib()
    from matplotlib import colormaps

    return (colormaps[name](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)
