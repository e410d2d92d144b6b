"""Exports that stand alone (issue 23, 2): the `preprocess.py` written beside an exported model computes the
package's own views with numpy and PyAV only, and the README's ten lines, run in a fresh virtual environment
without torch or this package, give `uniformer predict --json`'s scores."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from cli_runner import run_cli
from hub_server import LocalHub, serve_tiny_zoo_model
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_video import numbered_frame, write_video
from test_api import FAMILIES, VIDEO

from uniformer_cli.data import portable, transforms
from uniformer_cli.data.video import open_video
from uniformer_cli.data.views import load_views
from uniformer_cli.engine.standalone import RULES, preprocess_source
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import resolve_model

VIEW_TOLERANCE = 2e-6  # numpy's resize against PyTorch's kernel: float32 rounding order (measured 5e-7)
SCORE_TOLERANCE = 1e-4  # the bound on the scores of the whole chain


def generated(protocol: ViewProtocol, folder: Path, name: str = "preprocess") -> ModuleType:
    """`preprocess.py` for `protocol`, written to `folder` and imported from there."""
    path = folder / f"{name}.py"
    path.write_text(preprocess_source(protocol, "tiny"))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The example clip (426x320, 300 frames), a portrait clip (top/bottom crops), a clip shorter than a
    dense clip (repeated frames) and a clip smaller than the crop (upsampled)."""
    folder = tmp_path_factory.mktemp("videos")
    return [
        VIDEO,
        write_video(folder / "portrait.mp4", 40, frame=lambda i: numbered_frame(i, 96, 54)),
        write_video(folder / "short.mp4", 5, frame=lambda i: numbered_frame(i, 72, 128)),
        write_video(folder / "small.mp4", 24, frame=lambda i: numbered_frame(i, 36, 44)),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_preprocess_computes_the_packages_views(family: str, videos: list[Path], tmp_path: Path) -> None:
    protocol = FAMILIES[family]
    module = generated(protocol, tmp_path)
    for video in videos:
        ours = module.views(str(video))
        expected = load_views(video, protocol, decoder="pyav").numpy()
        assert ours.dtype == np.float32 and ours.shape == expected.shape, video
        assert float(np.abs(ours - expected).max()) < VIEW_TOLERANCE, video
        assert module.frame_count(str(video)) == open_video(video).num_frames


def test_the_file_carries_the_packages_rules_and_nothing_of_the_package(tmp_path: Path) -> None:
    protocol = FAMILIES["three-crop"]
    text = preprocess_source(protocol, "tiny")
    for rule in RULES:  # the package's own code, as it stands
        assert inspect.getsource(rule) in text, rule.__name__
    assert not re.search(r"^\s*(from|import) (uniformer_cli|torch)\b", text, re.MULTILINE)
    module = generated(protocol, tmp_path)
    assert module.PROTOCOL._asdict() == protocol.as_dict()
    assert (module.MEAN, module.STD) == (transforms.MEAN, transforms.STD)
    assert np.array_equal(module.LEVELS, transforms._LEVELS)  # the normalisation table, bit for bit
    np.save(tmp_path / "direct.npy", module.views(str(VIDEO)))
    subprocess.run(
        [sys.executable, str(tmp_path / "preprocess.py"), str(VIDEO), str(tmp_path / "views.npy")], check=True
    )
    assert np.array_equal(np.load(tmp_path / "views.npy"), np.load(tmp_path / "direct.npy"))


@settings(max_examples=60, deadline=None)
@given(
    source=st.tuples(st.integers(1, 120), st.integers(1, 120)),
    target=st.tuples(st.integers(1, 120), st.integers(1, 120)),
    seed=st.integers(0, 2**16),
)
def test_numpy_resize_is_pytorchs_bilinear(source: tuple[int, int], target: tuple[int, int], seed: int) -> None:
    image = np.random.default_rng(seed).uniform(-2.0, 2.5, (*source, 3)).astype(np.float32)
    ours = portable.resize(image, *target)
    theirs = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=target, mode="bilinear", align_corners=False
    )
    assert float(np.abs(ours - theirs[0].permute(1, 2, 0).numpy()).max()) < VIEW_TOLERANCE


# --- the export, run where neither torch nor this package is ------------------------------------------------


CLEAN_CHECK = "import importlib.util as u; assert u.find_spec('torch') is None and u.find_spec('uniformer_cli') is None"
# Runs the README's Python block in the export folder (clip.mp4 there) and prints every class's score.
DRIVER = """
import json, pathlib, re
readme = pathlib.Path("README.md").read_text()
code = re.search(r"```python\\n(.*?)```", readme, re.S).group(1)
scope = {}
exec(code, scope)
print(json.dumps({"scores": scope["scores"].tolist(), "ranked": scope["ranked"]}))
"""


def clean_environment(folder: Path) -> Path:
    """A new virtual environment with numpy, PyAV and onnxruntime (this machine's versions, from its pip
    cache or package index), and neither torch nor this package: its python."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("numpy", "av", "onnxruntime")]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True, capture_output=True)
    subprocess.run([str(python), "-s", "-c", CLEAN_CHECK], check=True, cwd=folder, env=outside_environment())
    return python


def outside_environment() -> dict[str, str]:
    """This process's environment without the variables that point Python at other packages."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}


def readme_scores(python: Path | str, folder: Path) -> dict[str, object]:
    (folder / "clip.mp4").symlink_to(VIDEO)
    (folder / "run_readme.py").write_text(DRIVER)
    done = subprocess.run(
        [str(python), "-s", "run_readme.py"], cwd=folder, env=outside_environment(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def predict_scores(capsys: pytest.CaptureFixture[str], model: str) -> list[float]:
    code, out, err = run_cli(capsys, "predict", VIDEO, "--model", model, "--top-k", "400", "--json")
    assert code == 0, err
    [record] = json.loads(out)
    scores = [0.0] * 400
    for ranked in record["top_k"]:
        scores[ranked["index"]] = ranked["score"]
    return scores


@pytest.mark.slow
def test_exports_run_without_torch_and_give_predicts_scores(
    capsys: pytest.CaptureFixture[str], local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    python = clean_environment(tmp_path / "venv")
    for index, (family, protocol) in enumerate(FAMILIES.items()):
        served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name=f"tiny-{family}", protocol=protocol)
        folder = tmp_path / family
        if index == 0:  # a file named with its zoo entry: the metadata names the entry, not the file
            weights = resolve_model(served.entry.name, device="cpu").path  # the converted file in the cache
            args = [weights, "--model", served.entry.name, "-o", folder / "model.onnx"]
        else:
            args = [served.entry.name, "-o", folder / "model.onnx"]
        code, out, err = run_cli(capsys, "export", *args, "--json")
        assert code == 0, err
        record = json.loads(out)
        assert record["file"] == str(folder / "model.onnx")
        assert sorted(path.name for path in folder.iterdir()) == ["README.md", "model.onnx", "preprocess.py"]
        metadata = {entry.key: entry.value for entry in onnx.load(str(folder / "model.onnx")).metadata_props}
        assert metadata["model"] == served.entry.name
        got = readme_scores(python, folder)
        expected = predict_scores(capsys, served.entry.name)
        assert np.abs(np.array(got["scores"]) - np.array(expected)).max() < SCORE_TOLERANCE, family
        best = int(np.argmax(expected))
        assert got["ranked"][0] == [served.entry.labels()[best], pytest.approx(expected[best], abs=SCORE_TOLERANCE)]
