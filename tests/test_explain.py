"""`uniformer explain`: Grad-CAM that points at what decides the class, and the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_runner import run_cli
from matplotlib.image import imread
from safetensors import safe_open
from synthetic_video import write_video
from tiny_training import TINY_CONFIG, TINY_V2_CONFIG, train_tiny

from uniformer_cli.data import transforms
from uniformer_cli.data.views import load_views
from uniformer_cli.engine.explain import explain_clip, resolve_target
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.models.config_v2 import V2Config
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import resolve_model, save_weights

SIDE, FRAMES = 64, 8
HALF = SIDE // 2
DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # left, right, up, down


def quadrant_clip(direction: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 frames `[T, S, S, 3]`: static noise everywhere, and in the top-left quadrant only a square
    moving in `direction` (the class)."""
    dx, dy = direction
    square, speed = HALF // 3, 2
    travel = speed * (FRAMES - 1)
    x0 = int(rng.integers(travel if dx < 0 else 0, HALF - square - (travel if dx > 0 else 0) + 1))
    y0 = int(rng.integers(travel if dy < 0 else 0, HALF - square - (travel if dy > 0 else 0) + 1))
    colour = rng.integers(128, 256, 3)
    background = rng.integers(0, 64, (SIDE, SIDE, 3))
    frames = np.empty((FRAMES, SIDE, SIDE, 3), np.uint8)
    for t in range(FRAMES):
        image = background.copy()
        x, y = x0 + dx * speed * t, y0 + dy * speed * t
        image[y : y + square, x : x + square] = colour
        frames[t] = image
    return frames


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "epochs", "lr"), [(TINY_CONFIG, 30, 2e-3), (TINY_V2_CONFIG, 40, 1e-3)], ids=["uniformer", "v2"]
)
def test_the_map_concentrates_in_the_quadrant_that_decides_the_class(
    config: ModelConfig | V2Config, epochs: int, lr: float
) -> None:
    """Train a tiny model for seconds on clips whose class only the top-left quadrant's motion decides;
    on new clips, most of the map's mass on the network's default layer must lie in that quadrant (a
    uniform map puts 25% there). The shares of every layer are printed: the measurement behind each
    family's `default_map_layer`."""
    rng = np.random.default_rng(0)
    train = [(quadrant_clip(d, rng), label) for label, d in enumerate(DIRECTIONS) for _ in range(32)]
    clips = torch.stack([transforms.normalise(frames) for frames, _ in train])
    labels = torch.tensor([label for _, label in train])
    model = train_tiny(clips, labels, len(DIRECTIONS), epochs=epochs, lr=lr, config=config)
    protocol = ViewProtocol(frames=FRAMES, stride=1, size=SIDE)
    positions = np.arange(FRAMES)[None]
    shares: dict[int, list[float]] = {layer: [] for layer in range(1, model.map_layers + 1)}
    correct = 0
    for label, direction in enumerate(DIRECTIONS):
        for _ in range(6):
            frames = quadrant_clip(direction, rng)
            for layer, found in shares.items():
                explained = explain_clip(model, frames, positions, protocol, [0.0] * FRAMES, None, layer=layer)
                found.append(float(explained.cam[:, :HALF, :HALF].sum() / explained.cam.sum().clamp(min=1e-12)))
            correct += explained.index == label
            assert explained.cam.shape == (FRAMES, SIDE, SIDE) and float(explained.cam.max()) == pytest.approx(1.0)
    means = {layer: float(np.mean(found)) for layer, found in shares.items()}
    print(f"model accuracy {correct}/24; mean share of the map in the deciding quadrant by layer: {means}")
    assert correct >= 20
    assert means[model.default_map_layer] >= 0.5


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("explain")
    protocol = ViewProtocol(frames=8, stride=2, size=64).as_dict()
    light = ModelConfig(
        arch="light",
        depth=(1, 1, 2, 1),
        embed_dim=(16, 32, 64, 64),
        head_dim=16,
        num_classes=3,
        keep_ratio3=(1.0, 0.5),
        keep_ratio4=(0.5,),
    )
    found = {}
    for name, config in (("tiny", TINY_CONFIG.replace(num_classes=3)), ("light", light)):
        torch.manual_seed(0)
        model = create_model(config).eval()
        found[name] = save_weights(folder / f"{name}.safetensors", model, config, ["run", "jump", "sit"], protocol)
    found["clip"] = write_video(folder / "clip.mp4", 40)
    return found


@pytest.mark.parametrize("model", ["tiny", "light"])
def test_explain_writes_the_overlay_clip_and_the_contact_sheet(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path, model: str
) -> None:
    output = tmp_path / "out.mp4"
    code, out, err = run_cli(capsys, "explain", weights["clip"], "-w", weights[model], "-o", output, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["explained_label"] in ("run", "jump", "sit") and 0 <= record["score"] <= 1
    assert (record["sheet"], record["heatmap_video"]) == (str(tmp_path / "out.png"), str(output))
    assert record["video"] == str(weights["clip"])
    with av.open(str(output)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 8 and decoded[0].shape == (256, 256, 3)  # 64 px crops enlarged 4x
    sheet = imread(tmp_path / "out.png")
    assert sheet.shape[:2] == (660, 1200) and sheet[..., :3].std() > 0.05
    # A chosen class by name or index, and a GIF.
    code, out, err = run_cli(
        capsys, "explain", weights["clip"], "-w", weights[model], "-o", tmp_path / "a.gif", "--class", "sit", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["explained_index"] == 2
    with av.open(str(tmp_path / "a.gif")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8


def reference_grad_cam(weights: Path, video: Path, stage: int) -> tuple[torch.Tensor, int]:
    """Grad-CAM written out here from its definition, on the model's first view: the stage's output map A,
    the gradient of the top logit, ReLU(sum_c mean(dy/dA_c) A_c); and the top class."""
    loaded = resolve_model(weights, device="cpu")
    model = loaded.model
    assert loaded.protocol is not None
    view = load_views(video, loaded.protocol, clips=1, crops=1)[:1]
    maps: list[torch.Tensor] = []
    hook = model.stages()[stage - 1][-1].register_forward_hook(lambda module, inputs, output: maps.append(output))
    logits = model(view)[0]
    hook.remove()
    top = int(logits.argmax())
    (gradient,) = torch.autograd.grad(logits[top], maps[0])
    weights_per_channel = gradient[0].mean(dim=(1, 2, 3))
    return torch.relu(torch.einsum("c,cthw->thw", weights_per_channel, maps[0][0])).detach(), top


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_save_map_writes_the_raw_and_the_upsampled_maps(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    target = tmp_path / f"maps{suffix}"
    arguments = ["--stage", "3", "--save-map", target, "--json"] + (
        ["-o", tmp_path / "out.gif"] if suffix == ".npy" else []
    )
    code, out, err = run_cli(capsys, "explain", weights["clip"], "-w", weights["tiny"], *arguments)
    assert code == 0, err
    record = json.loads(out)
    if suffix == ".safetensors":  # the maps alone: no overlay, no matplotlib needed
        assert record["map_files"] == [str(target)] and record["heatmap_video"] is None
        with safe_open(str(target), framework="np") as handle:
            raw, upsampled = handle.get_tensor("raw"), handle.get_tensor("upsampled")
            metadata = {key: json.loads(value) for key, value in handle.metadata().items()}
    else:
        files = [target, tmp_path / "maps.raw.npy", tmp_path / "maps.json"]
        assert record["map_files"] == list(map(str, files)) and record["heatmap_video"] == str(tmp_path / "out.gif")
        upsampled, raw = np.load(files[0]), np.load(files[1])
        metadata = json.loads(files[2].read_text())
    expected, top = reference_grad_cam(weights["tiny"], weights["clip"], stage=3)
    assert raw.dtype == upsampled.dtype == np.float32
    assert raw.shape == tuple(expected.shape) == (4, 4, 4)  # T/2 x H/16 x W/16 at stage 3
    np.testing.assert_allclose(raw, expected.numpy(), rtol=1e-5, atol=1e-7)  # as computed: not scaled
    assert upsampled.shape == (8, 64, 64) and float(upsampled.max()) == pytest.approx(1.0)
    resized = F.interpolate(torch.from_numpy(raw)[None, None], size=(8, 64, 64), mode="trilinear")[0, 0]
    np.testing.assert_allclose(upsampled, (resized / resized.max()).numpy(), atol=1e-6)
    assert (metadata["explained_index"], metadata["layer"]) == (top, 3) == (record["explained_index"], record["layer"])
    assert metadata["explained_label"] == ["run", "jump", "sit"][top] and len(metadata["times"]) == 8
    assert metadata["protocol"]["frames"] == 8 and metadata["video"] == str(weights["clip"])


def test_explain_mistakes_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path
) -> None:
    for arguments, message in [
        (["-o", tmp_path / "out.avi"], "name an .mp4 or .gif file"),
        (["--save-map", tmp_path / "maps.pt"], "name a .npy or .safetensors file"),
        (["-o", tmp_path / "out.mp4", "--class", "swim"], "not a class of this model"),
        (["-o", tmp_path / "out.mp4", "--class", "7"], "out of range"),
    ]:
        code, _, err = run_cli(capsys, "explain", weights["clip"], "-w", weights["tiny"], *arguments)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert resolve_target("Jump", ["run", "jump"], 2) == 1 and resolve_target(None, None, 5) is None
    with pytest.raises(UniformerError, match="no class names"):
        resolve_target("jump", None, 2)
