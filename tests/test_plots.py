"""PNG figures: each test opens the PNG and checks it is a non-blank image of the size asked for; without
matplotlib the commands that plot fail with one line before doing any work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from eval_data import colour_model, flat_video, level
from matplotlib.image import imread
from synthetic_video import write_video

from uniformer_cli import plots
from uniformer_cli.engine.train import MetricsLog
from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights


def assert_picture(path: Path, width: int, height: int) -> np.ndarray:
    """The PNG's pixels, after checking its size and that it shows something (many distinct colours,
    not one flat field)."""
    image = imread(path)
    assert image.shape[:2] == (height, width), image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std(axis=0).max() > 0.05
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20
    return image


def test_timeline_per_class_confusion_curves_and_sheet_have_their_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(6), size=5)
    windows = [(2.0 * i, 2.0 * i + 2) for i in range(5)]
    labels = [f"class {i}" for i in range(6)]
    assert_picture(plots.timeline_plot(tmp_path / "t.png", windows, probabilities, labels, "clip"), 1000, 450)
    truth = list(rng.integers(0, 6, 60))
    guesses = [t if rng.random() < 0.6 else int(rng.integers(0, 6)) for t in truth]
    assert_picture(plots.per_class_plot(tmp_path / "p.png", labels, truth, guesses), 1000, 300)
    assert_picture(plots.confusion_plot(tmp_path / "c.png", labels, truth, guesses), 600, 500)
    # Many classes: sorted bars with the worst named, and the most confused pairs instead of a matrix.
    many = [f"action number {i}" for i in range(80)]
    truth = list(rng.integers(0, 80, 400))
    guesses = [t if rng.random() < 0.7 else int(rng.integers(0, 81)) for t in truth]  # 80: an unnamed output
    assert_picture(plots.per_class_plot(tmp_path / "pm.png", many, truth, guesses), 1200, 600)
    assert_picture(plots.confusion_plot(tmp_path / "cm.png", many, truth, guesses), 1000, 600)
    records = [{"event": "step", "step": s, "loss": 2 / s, "lr": 1e-3 * s / 10} for s in range(1, 11)]
    records += [{"event": "epoch", "step": 10, "train_loss": 0.5, "val_top1": 62.5}]
    assert_picture(plots.training_curves(tmp_path / "curves.png", records), 1200, 400)
    frames = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    assert_picture(plots.contact_sheet(tmp_path / "s.png", frames, [0.1 * i for i in range(6)], "title"), 1200, 660)


def test_training_writes_curves_at_the_end_and_on_resume(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl", True, None, tensorboard=False)
    for step in range(1, 5):
        log.write({"event": "step", "epoch": 1, "step": step, "loss": 1.0 / step, "lr": 0.001})
    log.write({"event": "epoch", "epoch": 1, "step": 4, "train_loss": 0.5, "val_top1": 50.0})
    log.close()
    first = assert_picture(tmp_path / "curves.png", 1200, 400)
    (tmp_path / "curves.png").unlink()
    MetricsLog(tmp_path / "metrics.jsonl", True, 2, tensorboard=False)  # a run resumed from step 2
    assert not np.array_equal(assert_picture(tmp_path / "curves.png", 1200, 400), first)


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    config = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 64), head_dim=16, num_classes=4)
    torch.manual_seed(0)
    protocol = ViewProtocol(frames=4, stride=2, size=32)
    model = create_model(config).eval()
    return save_weights(tmp_path / "tiny.safetensors", model, config, ["w", "x", "y", "z"], protocol.as_dict())


def test_predict_timeline_plot(capsys: pytest.CaptureFixture[str], tiny_weights: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 90)
    other = write_video(tmp_path / "other.mp4", 60)
    code, _, err = run_cli(capsys, "predict", clip, "-w", tiny_weights, "--timeline", "1", "--plot", tmp_path / "t.png")
    assert code == 0, err
    assert_picture(tmp_path / "t.png", 1000, 450)
    code, _, err = run_cli(
        capsys, "predict", clip, other, "-w", tiny_weights, "--timeline", "1", "--plot", tmp_path / "many.png"
    )
    assert code == 0, err
    for name in ("many-clip.png", "many-other.png"):
        assert_picture(tmp_path / name, 1000, 450)
    code, _, err = run_cli(capsys, "predict", clip, "-w", tiny_weights, "--plot", tmp_path / "x.png")
    assert code == 2 and "--timeline" in err


def test_eval_plot_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`eval --plot DIR` on a folder dataset of flat-colour clips and the colour-forced tiny model."""
    classes = [f"c{i}" for i in range(8)]
    for label, value in [(0, -1.5), (1, -1.0), (2, -0.5), (3, 0.0), (3, 1.0), (5, 1.0)]:
        folder = tmp_path / "data" / "val" / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        grey = level(value)
        flat_video(folder / f"{len(list(folder.iterdir()))}.mp4", (grey, grey, grey), 8, size=(64, 48))
    for name in classes:
        (tmp_path / "data" / "val" / name).mkdir(parents=True, exist_ok=True)
    protocol = ViewProtocol(frames=4, stride=2, size=32)
    model = colour_model()
    weights = save_weights(tmp_path / "colour.safetensors", model, model.config, classes, protocol.as_dict())
    code, _, err = run_cli(
        capsys, "eval", "--dataset", "folder", "--root", tmp_path / "data", "-w", weights, "--workers", "0",
        "--plot", tmp_path / "plots",
    )  # fmt: skip
    assert code == 0, err
    assert_picture(tmp_path / "plots" / "per_class.png", 1000, 300)
    assert_picture(tmp_path / "plots" / "confusion.png", 600, 500)


def test_without_matplotlib_plots_fail_with_one_line_before_any_work(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what an absent package looks like to import
    clip = write_video(tmp_path / "clip.mp4", 30)
    plot = ["--timeline", "1", "--plot", tmp_path / "t.png"]
    code, out, err = run_cli(capsys, "predict", clip, "-w", tiny_weights, *plot)
    assert code == 1 and out == ""
    assert err.strip() == f"error: {plots.MISSING}"
    code, _, err = run_cli(capsys, "eval", "--dataset", "folder", "--root", tmp_path, "--plot", tmp_path / "p")
    assert code == 1 and err.strip() == f"error: {plots.MISSING}"
    # Training goes on and says why there is no curves.png.
    log = MetricsLog(tmp_path / "metrics.jsonl", True, None, tensorboard=False)
    log.write({"event": "step", "epoch": 1, "step": 1, "loss": 1.0, "lr": 0.001})
    log.close()
    assert not (tmp_path / "curves.png").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["step"] == 1
