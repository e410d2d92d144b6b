"""`uniformer export` (issue 12): ONNX and OpenVINO files with a dynamic batch axis that reproduce
PyTorch's logits when reloaded by their engines, and carry the protocol and class names as metadata."""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import openvino
import pytest
import torch
from cli_runner import run_cli
from parity import FIXTURES, fixture_model
from test_output import documented_schema

from uniformer_cli.engine import export as export_engine
from uniformer_cli.engine import openvino_cache
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights

VIDEO = Path(__file__).resolve().parent.parent / "examples" / "yoga.mp4"
PROTOCOL = ViewProtocol(frames=8, stride=4, clips=2, crops=3, size=64, channel_order="bgr")
LABELS = [f"action {index}" for index in range(10)]
TOLERANCE = 1e-4  # float32 engines against PyTorch; measured 1-2e-6 on these models


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    return {
        name: save_weights(
            folder / f"{name}.safetensors", fixture_model(name), FIXTURES[name], LABELS, PROTOCOL.as_dict()
        )
        for name in ("small", "small_light")
    }


def reference_logits(name: str, clips: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return fixture_model(name)(torch.from_numpy(clips)).numpy()


def export_json(capsys: pytest.CaptureFixture[str], *args: object) -> dict[str, object]:
    code, out, err = run_cli(capsys, "export", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def check_metadata(metadata: dict[str, str]) -> None:
    assert ViewProtocol.from_dict(json.loads(metadata["protocol"])) == PROTOCOL
    assert json.loads(metadata["labels"]) == LABELS
    assert json.loads(metadata["normalisation"]) == {"scale": 1 / 255, "mean": 0.45, "std": 0.225}
    assert json.loads(metadata["config"])["num_classes"] == 10


@pytest.mark.parametrize(("name", "output"), [("small", "deploy"), ("small_light", "deploy/light.onnx")])
def test_onnx_export_reloads_with_onnxruntime_at_any_batch(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path, name: str, output: str
) -> None:
    summary = export_json(capsys, weights[name], "-o", tmp_path / output)
    # -o names the folder (the file is named after the model), or the file itself.
    path = tmp_path / output if output.endswith(".onnx") else tmp_path / output / f"{name}.onnx"
    assert summary["file"] == str(path) and summary["input_shape"] == ["batch", 3, 8, 64, 64]
    companions = [path.parent / "preprocess.py", path.parent / "README.md"]
    assert summary["files"] == [str(path), *map(str, companions)] and summary["error"] is None
    assert set(summary) == documented_schema()["export"]  # docs/OUTPUT.md
    assert 0 <= float(summary["max_error"]) < TOLERANCE  # type: ignore[arg-type]
    assert sorted(path.parent.iterdir()) == sorted([path, *companions])  # no leftovers
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "video" and isinstance(session.get_inputs()[0].shape[0], str)
    clips = np.random.default_rng(0).standard_normal((2, 3, 8, 64, 64), dtype=np.float32)
    logits = session.run(["logits"], {"video": clips})[0]
    np.testing.assert_allclose(logits, reference_logits(name, clips), atol=TOLERANCE)
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    check_metadata(metadata)
    assert metadata["model"] == str(weights[name])  # no zoo entry: the path as given
    card = companions[1].read_text()
    assert f'InferenceSession("{path.name}")' in card and all(f"| {label} |" in card for label in LABELS)
    if name == "small":  # an export is a product: kept unless --force (issue 25), refused before exporting
        written = path.stat().st_mtime_ns
        code, out, err = run_cli(capsys, "export", weights[name], "-o", tmp_path / "deploy")
        assert (code, out) == (1, "") and f"{path} already exists: pass --force" in err
        assert path.stat().st_mtime_ns == written


def readme_scores(folder: Path, video: Path) -> np.ndarray:
    """The scores of the Python lines of an export's README.md, run in `folder` on `video` as clip.mp4."""
    (folder / "clip.mp4").symlink_to(video)
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)  # type: ignore[union-attr]
    scope: dict[str, object] = {}
    with contextlib.chdir(folder):
        sys.path.insert(0, str(folder))
        try:
            exec(code, scope)
        finally:
            sys.path.remove(str(folder))
            sys.modules.pop("preprocess", None)
    return np.asarray(scope["scores"])


def test_openvino_export_reloads_with_openvino(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path
) -> None:
    summary = export_json(capsys, weights["small"], "--format", "openvino", "-o", tmp_path)
    assert float(summary["max_error"]) < TOLERANCE  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "preprocess.py", "small.bin", "small.xml"]
    assert summary["files"][:2] == [str(tmp_path / "small.xml"), str(tmp_path / "small.bin")]
    core = openvino.Core()
    model = core.read_model(str(tmp_path / "small.xml"))
    assert model.input(0).get_partial_shape()[0].is_dynamic
    check_metadata({key: model.get_rt_info(["uniformer", key]).astype(str) for key in summary["metadata"]})  # type: ignore[union-attr]
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    clips = np.random.default_rng(1).standard_normal((2, 3, 8, 64, 64), dtype=np.float32)
    np.testing.assert_allclose(compiled(clips)[0], reference_logits("small", clips), atol=TOLERANCE)
    # The README's lines (OpenVINO's, here) give predict's scores.
    code, out, err = run_cli(capsys, "predict", VIDEO, "-w", weights["small"], "--top-k", "10", "--json")
    assert code == 0, err
    expected = np.zeros(10)
    for ranked in json.loads(out)[0]["top_k"]:
        expected[ranked["index"]] = ranked["score"]
    np.testing.assert_allclose(readme_scores(tmp_path, VIDEO), expected, atol=1e-4)


def test_export_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*args: object) -> tuple[int, str]:
        code, out, err = run_cli(capsys, "export", *map(str, args))
        assert out == "" and len(err.strip().splitlines()) == 1, err
        return code, err

    code, err = fails(weights["small"], "--format", "tflite", "-o", tmp_path)
    assert code == 2 and "tflite" in err and "onnx" in err  # a usage error naming the valid values
    (tmp_path / "file").write_text("")
    code, err = fails(weights["small"], "-o", tmp_path / "file")
    assert code == 1 and "exists and is not a folder" in err
    bare = save_weights(tmp_path / "bare.safetensors", fixture_model("small"), FIXTURES["small"])
    code, err = fails(bare, "-o", tmp_path / "out")
    assert code == 1 and "carries no test protocol" in err

    real_import = importlib.import_module

    def without_openvino(name: str, *args: object) -> object:
        if name == "openvino":
            raise ImportError(name)
        return real_import(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(openvino_cache.importlib, "import_module", without_openvino)
    code, err = fails(weights["small"], "--format", "openvino", "-o", tmp_path / "out")
    assert code == 1 and "pip install 'uniformer[openvino]'" in err


def test_a_failed_check_leaves_no_files(
    capsys: pytest.CaptureFixture[str], weights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_engine(path: Path, modules: object) -> object:
        return lambda clips: np.zeros((len(clips), 7), dtype=np.float32)  # wrong class count

    monkeypatch.setattr(export_engine, "onnx_runner", broken_engine)
    code, _, err = run_cli(capsys, "export", str(weights["small"]), "-o", str(tmp_path))
    assert code == 1 and "returns (1, 7) for (1, 10) logits" in err
    assert list(tmp_path.iterdir()) == []
