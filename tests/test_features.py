"""`model.forward_features` and `uniformer features`: the representation the head reads, on the exact and
the fast model; files that name their rows; failures kept; --resume; and a linear probe on the features of
the motion dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from motion_data import DIRECTIONS, motion_dataset
from parity import fixture_input, fixture_model
from safetensors.torch import load_file
from synthetic_video import numbered_frame, write_video
from tiny_training import TINY_CONFIG, train_tiny

from uniformer_cli.data.views import load_views
from uniformer_cli.engine.features import read_features
from uniformer_cli.models import create_model
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights

PROTOCOL = ViewProtocol(frames=8, stride=2, clips=2, size=32)
CLASSES = list(DIRECTIONS)


@pytest.mark.parametrize("name", ["small", "small_light_ls"])
def test_forward_features_is_what_the_head_reads_on_the_exact_and_the_fast_model(name: str) -> None:
    model = fixture_model(name)
    x = fixture_input()
    fast = optimize_for_inference(model, channels_last=True)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (len(x), model.config.embed_dim[3])
        assert torch.allclose(model.head(features), model(x), atol=1e-5)
        assert torch.allclose(fast.forward_features(x), features, atol=1e-3)
        for stage in (1, 2, 3):
            early = model.forward_features(x, layer=stage)
            assert early.shape == (len(x), model.config.embed_dim[stage - 1])
            assert torch.allclose(fast.forward_features(x, layer=stage), early, atol=1e-3)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny UniFormer saved with labels and a 2-clip protocol."""
    torch.manual_seed(0)
    config = TINY_CONFIG.replace(num_classes=3)
    folder = tmp_path_factory.mktemp("tiny")
    return save_weights(
        folder / "tiny.safetensors", create_model(config).eval(), config, ["a", "b", "c"], PROTOCOL.as_dict()
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    first = write_video(folder / "first.mp4", 24)
    second = write_video(folder / "second.mp4", 24, frame=lambda i: numbered_frame(i)[::-1].copy())
    copy = folder / "copy" / "first_again.mp4"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    return {"first": first, "second": second, "copy": copy}


def test_features_of_different_videos_differ_and_of_the_same_video_are_equal(
    capsys: pytest.CaptureFixture[str], tiny_weights: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    output = tmp_path / "out.safetensors"
    code, out, err = run_cli(
        capsys, "features", clips["first"], clips["second"], clips["copy"].parent, "-w", tiny_weights, "-o", output
    )
    assert code == 0, err
    assert "3 videos" in out
    saved = read_features(output)
    assert saved.videos == [str(clips["first"]), str(clips["second"]), str(clips["copy"])]
    assert saved.features.shape == (3, TINY_CONFIG.embed_dim[3])
    assert saved.failures == [] and saved.labels is None
    assert saved.meta["protocol"] == PROTOCOL.as_dict() and saved.meta["layer"] == 4
    first, second, copy = saved.features
    assert torch.equal(first, copy)
    assert (first - second).abs().max() > 1e-3
    # The rows are the mean over the protocol's views of the exact model's forward_features.
    model = create_model(TINY_CONFIG.replace(num_classes=3))
    model.load_state_dict(load_file(tiny_weights))
    views = load_views(clips["first"], frames=8, stride=2, clips=2, size=32)
    with torch.no_grad():
        assert torch.allclose(first, model.eval().forward_features(views).mean(0), atol=1e-4)


def test_npy_per_view_earlier_layer_failures_and_resume(
    capsys: pytest.CaptureFixture[str], tiny_weights: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 50)
    output = tmp_path / "out.npy"
    arguments = ["features", clips["first"], broken, tmp_path / "missing.mp4", "-w", tiny_weights, "-o", output]
    code, _, err = run_cli(capsys, *arguments, "--per-view", "--layer", "2", "--json")
    assert code == 3  # some videos failed, the others were written (docs/OUTPUT.md)
    assert "Traceback" not in err and len(err.strip().splitlines()) >= 2
    array = np.load(output)
    index = json.loads(output.with_suffix(".json").read_text())
    assert array.shape == (1, PROTOCOL.views, TINY_CONFIG.embed_dim[1])
    assert index["videos"] == [str(clips["first"])]
    assert {failure["video"] for failure in index["failures"]} == {str(broken), str(tmp_path / "missing.mp4")}
    # Resume keeps the rows done and retries the failures; another layer is refused.
    broken.unlink()
    shutil.copy(clips["second"], broken)
    code, out, err = run_cli(capsys, *arguments, "--per-view", "--layer", "2", "--resume", "--json")
    record = json.loads(out)
    assert code == 3 and record["videos"] == 2 and record["computed"] == 1
    assert record["failures"][0] == {"video": str(tmp_path / "missing.mp4"), "error": record["failures"][0]["error"]}
    assert len(record["failures"]) == 1 and record["output"] == str(output)
    resumed = read_features(output)
    assert torch.equal(resumed.features[0], torch.from_numpy(array[0]))
    code, _, err = run_cli(capsys, *arguments, "--resume")
    assert code == 1 and "another layer, per_view" in err


def test_output_and_input_mistakes_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tiny_weights: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    for arguments, message in [
        ([clips["first"], "-o", tmp_path / "out.txt"], "name a .safetensors or .npy file"),
        (["-o", tmp_path / "out.npy"], "no videos given"),
        ([clips["first"], "--dataset", "folder", "-o", tmp_path / "out.npy"], "not both"),
        ([tmp_path / "nothing", "-o", tmp_path / "out.npy"], "no such file"),
    ]:
        code, _, err = run_cli(capsys, "features", *arguments, "-w", tiny_weights)
        assert code != 0 and message in err and "Traceback" not in err


def _clips_of(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    views, labels = [], []
    for label, direction in enumerate(CLASSES):
        for path in sorted((root / split / direction).glob("*.mp4")):
            views.append(load_views(path, frames=8, stride=2, size=32)[0])
            labels.append(label)
    return torch.stack(views), torch.tensor(labels)


def _linear_probe(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Multinomial logistic regression on standardised features (L-BFGS, small L2): predicted classes."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    probe = torch.nn.Linear(train.shape[1], len(CLASSES))
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=200)
    inputs = (train - mean) / std

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(inputs), labels) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return probe((test - mean) / std).argmax(1)


def test_a_linear_probe_on_the_features_separates_the_motion_classes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A tiny model trained for a few seconds on one half of the motion dataset; features of the other
    half (unseen by the model) through the command; a probe fit on part of them classifies the rest."""
    root = motion_dataset(tmp_path / "motion", 24, 16, seed=3)
    clips, labels = _clips_of(root, "train")
    model = train_tiny(clips, labels, len(CLASSES), epochs=30)
    protocol = ViewProtocol(frames=8, stride=2, size=32)
    weights = save_weights(tmp_path / "motion.safetensors", model, model.config, CLASSES, protocol.as_dict())
    output = tmp_path / "val.safetensors"
    code, _, err = run_cli(
        capsys, "features", "--dataset", "folder", "--root", root, "--split", "val", "-w", weights, "-o", output
    )
    assert code == 0, err
    saved = read_features(output)
    assert saved.labels is not None and len(saved.videos) == 16 * len(CLASSES)
    assert saved.meta["classes"] == CLASSES
    features, targets = saved.features, torch.tensor(saved.labels)
    fit = torch.arange(len(targets)) % 2 == 0  # every other video fits the probe, the rest test it
    predicted = _linear_probe(features[fit], targets[fit], features[~fit])
    accuracy = (predicted == targets[~fit]).float().mean().item()
    print(f"linear probe accuracy on held-out motion videos: {accuracy:.1%}")
    assert accuracy >= 0.8
