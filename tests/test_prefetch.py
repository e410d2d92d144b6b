"""`uniformer predict`'s first video decoded while torch loads and the model opens (`engine.prefetch`):
the protocol planned from the weights' header is the one the model opens with, and the views, scores and
failures are those of the ordinary decode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_video import write_video

from uniformer_cli.data.paths import find_videos
from uniformer_cli.engine import prefetch
from uniformer_cli.engine.inference import open_model
from uniformer_cli.engine.predict import failed_video, open_predictor, run_predict
from uniformer_cli.engine.request import InferenceRequest, planned_protocol
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import create_model
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.protocol import ProtocolOverrides, ViewProtocol
from uniformer_cli.records import Record
from uniformer_cli.zoo import find_entry, get_entry

CLIP = Path(__file__).parent / "fixtures" / "preprocess" / "carphone_pristine.mp4"
TINY = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=3)
PROTOCOL = ViewProtocol(frames=4, stride=2, clips=2, crops=1, size=32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uniformer_cli.weights import save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    return save_weights(folder / "tiny.safetensors", create_model(TINY), TINY, ["x", "y", "z"], PROTOCOL.as_dict())


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    second = write_video(folder / "noisy.mp4", 24, frame=lambda index: rng.integers(0, 255, (40, 56, 3), np.uint8))
    return [CLIP, second]


def _without_times(records: list[Record]) -> list[Record]:
    return [{key: value for key, value in record.items() if key != "elapsed_s"} for record in records]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.none() | st.integers(1, 8),
    stride=st.none() | st.integers(1, 4),
    sampling=st.none() | st.sampled_from(["dense", "segment", "sparse"]),
    clips=st.none() | st.integers(1, 3),
    crops=st.none() | st.integers(1, 3),
    channel_order=st.none() | st.sampled_from(["rgb", "bgr"]),
)
def test_the_planned_protocol_is_the_one_the_model_opens_with(
    weights: Path,
    frames: int | None,
    stride: int | None,
    sampling: str | None,
    clips: int | None,
    crops: int | None,
    channel_order: str | None,
) -> None:
    changes = ProtocolOverrides(frames, stride, sampling, clips, crops, None, channel_order)
    request = InferenceRequest(weights=weights, device="cpu", protocol=changes)
    try:
        opened = open_model(request, exact=True).protocol
    except UniformerError:
        opened = None
    assert planned_protocol(request) == opened


def test_a_protocol_known_only_after_loading_is_not_planned(weights: Path, tmp_path: Path) -> None:
    assert planned_protocol(InferenceRequest(model="s16x4-k400")) == get_entry("s16x4-k400").protocol
    assert planned_protocol(InferenceRequest(model="someone/their-model")) is None  # a Hub repository
    assert planned_protocol(InferenceRequest(model="v2-b16x8-k710")) == find_entry("v2-b16x8-k710").protocol
    assert planned_protocol(InferenceRequest(weights="s3://bucket/model.safetensors")) is None  # read once fetched
    (tmp_path / "broken.safetensors").write_bytes(b"\xff" * 64)
    for unreadable in (tmp_path / "broken.safetensors", tmp_path / "missing.safetensors", tmp_path):
        assert planned_protocol(InferenceRequest(weights=unreadable)) is None
    bare = tmp_path / "bare.pth"  # records no protocol: the flags make one, or nothing does
    assert planned_protocol(InferenceRequest(weights=bare)) is None
    flags = ProtocolOverrides(frames=4, stride=2)
    assert planned_protocol(InferenceRequest(weights=bare, protocol=flags)) == ViewProtocol(frames=4, stride=2)


def test_planning_and_starting_import_no_torch(weights: Path) -> None:
    probe = (
        "import sys; from pathlib import Path; from uniformer_cli.engine import prefetch, request; "
        f"print(request.planned_protocol(request.InferenceRequest(weights=Path({str(weights)!r}))).frames, "
        "'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == [str(PROTOCOL.frames), "False"]


@pytest.mark.parametrize("read_ahead", [1, prefetch.READ_AHEAD_BYTES])
def test_the_first_video_decoded_early_gives_the_views_and_records_of_an_ordinary_decode(
    weights: Path, clips: list[Path], read_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "READ_AHEAD_BYTES", read_ahead)  # 1: one frame ahead, the rest after torch
    request = InferenceRequest(weights=weights, device="cpu")
    videos = find_videos([str(path) for path in clips])
    predictor = open_predictor(request)
    with prefetch.first_video(request, videos.paths, "auto") as first:
        assert first is not None and first.serves(videos.paths[0], predictor.protocol, "auto")
        early = first.result()
        ordinary = predictor.load(videos.paths[0])
        assert torch.equal(early.views, ordinary.views)
        assert (early.num_frames, early.fps) == (ordinary.num_frames, ordinary.fps)
    with prefetch.first_video(request, videos.paths, "auto") as first:
        overlapped = run_predict(predictor, videos, first=first).records()
    plain = run_predict(predictor, videos).records()
    assert _without_times(overlapped) == _without_times(plain)
    assert [record["error"] for record in plain] == [None, None]


def test_a_first_video_under_another_protocol_is_dropped(weights: Path, clips: list[Path]) -> None:
    videos = find_videos([str(path) for path in clips])
    predictor = open_predictor(InferenceRequest(weights=weights, device="cpu", protocol=ProtocolOverrides(clips=1)))
    with prefetch.first_video(InferenceRequest(weights=weights), videos.paths, "auto") as first:
        assert first is not None and not first.serves(videos.paths[0], predictor.protocol, "auto")
        overlapped = run_predict(predictor, videos, first=first).records()
    assert _without_times(overlapped) == _without_times(run_predict(predictor, videos).records())
    assert overlapped[0]["protocol"]["clips"] == 1


def test_a_bad_first_video_fails_with_the_ordinary_message_and_exit_code(
    weights: Path, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(1).bytes(20_000))
    predictor = open_predictor(InferenceRequest(weights=weights, device="cpu"))
    with pytest.raises(UniformerError) as raised:
        predictor.load(noise)
    expected = failed_video(noise, raised.value).error
    code, out, err = run_cli(capsys, "predict", noise, clips[0], "--weights", weights, "--device", "cpu", "--json")
    assert code == 3
    assert err.strip().splitlines() == [f"error: {expected}"]
    assert "Traceback" not in err
    assert '"error": null' in out  # the second video was predicted
