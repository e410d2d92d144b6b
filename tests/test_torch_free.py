"""The torch-free predict route (issue 22, `engine.torch_free`): a model OpenVINO already runs from the
cache scores videos without importing torch, with the torch OpenVINO route's scores (numpy views of the
same rules) and records; anything missing or damaged in the cache, and anything the route does not
serve, takes the usual route."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from synthetic_video import write_video

from uniformer_cli.data.paths import find_videos
from uniformer_cli.engine import openvino_cache, openvino_engine, torch_free
from uniformer_cli.engine.inference import open_model
from uniformer_cli.engine.predict import Predictor, open_predictor, run_predict
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.models import create_model
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.protocol import ProtocolOverrides, ViewProtocol
from uniformer_cli.runtime import torch_threads
from uniformer_cli.weights import resolve_model, save_weights

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "yoga.mp4"
TINY = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=10)
LABELS = [f"class-{index}" for index in range(10)]
DENSE_RGB = ViewProtocol(frames=4, stride=2, clips=2, crops=1, size=32)
# The same clip shape (so the same cached model), another protocol family: segment sampling, 3 crops, BGR.
SEGMENT_BGR = ProtocolOverrides(sampling="segment", crops=3, channel_order="bgr")
IMPORTED_TORCH = re.compile(r"\|\s+torch$", re.M)  # `python -X importtime`'s line for `import torch`


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Hugging Face home of its own, holding the OpenVINO cache of `weights` (converted once)."""
    folder = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def weights(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, create_model(TINY), TINY, LABELS, DENSE_RGB.as_dict())
    open_predictor(request(path))  # converts for OpenVINO and compiles (the blob is kept)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    rng = np.random.default_rng(0)
    generated = tmp_path_factory.mktemp("clips") / "generated.mp4"
    write_video(generated, 37, frame=lambda index: rng.integers(0, 255, (48, 60, 3), np.uint8))
    return [EXAMPLE, generated]


def request(weights: Path, protocol: ProtocolOverrides | None = None, **settings: object) -> InferenceRequest:
    fields = {"device": "cpu", "engine": "openvino", "precision": "fp32", **settings}
    return InferenceRequest(weights=weights, protocol=protocol or ProtocolOverrides(), **fields)  # type: ignore[arg-type]


def planned(weights: Path, protocol: ProtocolOverrides | None = None, **settings: object) -> torch_free.Plan:
    plan = torch_free.plan(request(weights, protocol, **settings))
    assert plan is not None
    return plan


@pytest.mark.parametrize("protocol", [None, SEGMENT_BGR], ids=["dense-rgb", "segment-bgr"])
def test_scores_and_ranking_are_the_torch_openvino_routes(
    weights: Path, clips: list[Path], protocol: ProtocolOverrides | None
) -> None:
    reference = open_predictor(request(weights, protocol))
    light = torch_free.open_predictor(planned(weights, protocol))
    assert light is not None and light.protocol == reference.protocol
    assert (light.protocol.channel_order, light.protocol.views) == (
        ("rgb", 2) if protocol is None else ("bgr", 3 * reference.protocol.clips)
    )
    for clip in clips:
        views, arrays = reference.load(clip).views, light.load(clip).views
        assert isinstance(arrays, np.ndarray) and arrays.shape == tuple(views.shape)
        np.testing.assert_allclose(arrays, views.numpy(), atol=1e-5, rtol=0)
        expected = reference.probabilities(views).numpy()
        np.testing.assert_allclose(light.probabilities(arrays), expected, atol=1e-5, rtol=0)
        assert [p.index for p in light.ranked(arrays, 5)] == [p.index for p in reference.ranked(views, 5)]
        assert [p.label for p in light.ranked(arrays, 5)] == [p.label for p in reference.ranked(views, 5)]


def _cli(home: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """`uniformer -v ARGS` in a fresh process that reports its imports (`python -X importtime`)."""
    command = [sys.executable, "-X", "importtime", "-m", "uniformer_cli.cli.app", "-v", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HOME": str(home)})


def _comparable(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """Records without their timings, and with their scores rounded past the engines' last bits."""
    kept = []
    for record in records:
        record = {key: value for key, value in record.items() if key != "elapsed_s"}
        if record["score"] is not None:
            record["score"] = round(float(record["score"]), 4)  # type: ignore[arg-type]
            record["top_k"] = [{**top, "score": round(top["score"], 4)} for top in record["top_k"]]  # type: ignore[attr-defined]
        kept.append(record)
    return kept


def test_the_cli_route_imports_no_torch_and_writes_the_usual_records(
    home: Path, weights: Path, clips: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    paths = [*clips, broken]
    done = _cli(home, "predict", *paths, "--weights", weights, "--engine", "openvino", "--precision", "fp32", "--json")
    assert done.returncode == 3, done.stderr[-3000:]  # one input failed, the others were predicted
    assert "predict route: torch-free" in done.stderr
    assert not IMPORTED_TORCH.search(done.stderr), "the torch-free route imported torch"
    assert IMPORTED_TORCH.search(_cli(home, "predict", "--help").stderr) is None  # the pattern is not vacuous:
    assert IMPORTED_TORCH.search(_cli(home, "predict", clips[0], "--weights", weights, "--engine", "torch").stderr)
    reference = run_predict(open_predictor(request(weights)), find_videos([str(path) for path in paths]))
    assert _comparable(json.loads(done.stdout)) == _comparable(reference.records())


def test_a_damaged_or_missing_cache_takes_the_usual_route(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="uniformer_cli")
    folder = openvino_cache.ir_folder(weights, DENSE_RGB)
    assert torch_free.plan(request(weights)) is not None
    for asked in ({"engine": "torch"}, {"compile": True}, {"device": "cuda"}, {"precision": "fp16"}):
        assert torch_free.plan(request(weights, **asked)) is None
    assert torch_free.plan(request(weights, ProtocolOverrides(size=48))) is None  # no model at that shape
    assert "no such" not in caplog.text and "at 4x48: missing" in caplog.text
    copy = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HOME", str(copy))
    assert torch_free.plan(request(weights)) is None  # an empty cache
    copied = openvino_cache.ir_folder(weights, DENSE_RGB)
    shutil.copytree(folder, copied)
    assert torch_free.plan(request(weights)) is not None
    for blob in openvino_cache.blob_folder(copied, "fp32").glob("*.blob"):
        blob.unlink()
    assert torch_free.plan(request(weights)) is None and "no compiled fp32 blob" in caplog.text
    blobs = openvino_cache.blob_folder(folder, "fp32")
    shutil.copytree(blobs, openvino_cache.blob_folder(copied, "fp32"), dirs_exist_ok=True)
    assert torch_free.plan(request(weights)) is not None
    xml = copied / openvino_cache.IR_FILES[0]
    xml.write_text(xml.read_text().replace("<net ", "<net damaged='1' ", 1))
    assert torch_free.plan(request(weights)) is None and "is damaged" in caplog.text
    # The usual route converts it again, after which this route serves it again.
    light = open_predictor(request(weights))
    assert isinstance(light, Predictor) and torch_free.plan(request(weights)) is not None


def test_auto_follows_this_machines_measurement(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = resolve_model(weights, device="cpu")
    key = openvino_engine.measurement_key(loaded, DENSE_RGB, "auto", openvino_engine.MEASURED_BATCH)
    record = openvino_cache.tuning_file()
    try:
        assert torch_free.plan(request(weights, engine="auto", precision="auto")) is None  # not measured
        openvino_cache.record_measurement(key, {"engine": "torch"})
        assert torch_free.plan(request(weights, engine="auto", precision="auto")) is None
        openvino_cache.record_measurement(key, {"engine": "openvino"})
        plan = planned(weights, engine="auto", precision="auto")  # the key `auto` keeps, computed torch-free
        assert plan.precision == "fp32"
        record.write_text(record.read_text().replace('"openvino"', '"torch"   '))  # damaged: sidecar differs
        assert torch_free.plan(request(weights, engine="auto", precision="auto")) is None
    finally:
        record.unlink(missing_ok=True)


def test_a_zoo_file_named_by_its_entry_must_be_that_entrys(weights: Path) -> None:
    # TINY is no zoo architecture: naming an entry for it is for the loader to refuse, not this route.
    assert torch_free.plan(request(weights, model="s16x4-k400")) is None
    assert planned(weights).name == str(weights) and planned(weights).labels == LABELS


@pytest.mark.parametrize(
    "environment",
    [{}, {"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "64"}, {"MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "2"}],
)
def test_torch_threads_are_known_before_torch_loads(environment: dict[str, str]) -> None:
    script = "from uniformer_cli.runtime import torch_threads; known = torch_threads(); import torch; "
    script += "print(known, torch.get_num_threads())"
    clean = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={**clean, **environment}
    )
    known, actual = done.stdout.split()
    assert known == actual
    assert torch_threads() == torch.get_num_threads() or "OMP_NUM_THREADS" in os.environ


@pytest.mark.parametrize(
    "changes",
    [ProtocolOverrides(clips=3, sampling="sparse"), ProtocolOverrides(stride=1, crops=3), SEGMENT_BGR],
    ids=["sparse", "dense-3-crops", "segment-bgr"],
)
def test_the_route_runs_the_protocol_the_model_opens_with(weights: Path, changes: ProtocolOverrides) -> None:
    assert planned(weights, changes).protocol == open_model(request(weights, changes), exact=True).protocol
