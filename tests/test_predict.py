"""`uniformer predict`: scores, batching, timelines, path expansion, output formats and bad input,
through the engine and the CLI, and end to end from the (local) Hub."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import serve_tiny_zoo_model
from rich.console import Console
from synthetic_video import write_audio_only, write_frame_folder, write_video
from torch import nn

from uniformer_cli.cli import predict as predict_cli
from uniformer_cli.cli.app import main
from uniformer_cli.data import load_views, open_video, views_from_video
from uniformer_cli.data.paths import expand_paths, find_videos
from uniformer_cli.data.windows import window_bounds
from uniformer_cli.engine import inference
from uniformer_cli.engine.predict import Prediction, Predictor, VideoPrediction, run_predict
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import create_model
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.records import Failure
from uniformer_cli.weights import LoadedModel, save_weights
from uniformer_cli.zoo import DEFAULT_MODEL, get_entry, load_labels

FIXTURES = Path(__file__).parent / "fixtures" / "preprocess"
CLIP = FIXTURES / "carphone_pristine.mp4"
RED, BLUE = (220, 20, 20), (20, 20, 220)
COLOURS = ["red", "blue"]
PROTOCOL = ViewProtocol(frames=4, stride=2, clips=2, crops=1, size=32)


class ColourModel(VideoNetwork):
    """Logits read the mean colour: class 0 ("red") when red dominates blue, class 1 otherwise."""

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        red = clip[:, 0].mean(dim=(1, 2, 3))
        blue = clip[:, 2].mean(dim=(1, 2, 3))
        return torch.stack([red - blue, blue - red], dim=1) * 4


def _solid(colour: tuple[int, int, int]):
    return lambda index: np.full((36, 48, 3), colour, np.uint8)


def _colour_predictor(**options: object) -> Predictor:
    return Predictor(ColourModel(), options.pop("protocol", PROTOCOL), labels=COLOURS, name="colour", **options)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    half = 100  # 10 s red then 10 s blue at 10 fps
    return {
        "red": write_video(folder / "red.mp4", 30, frame=_solid(RED), b_frames=0),
        "blue": write_video(folder / "blue.mp4", 30, frame=_solid(BLUE), b_frames=0),
        "long": write_video(
            folder / "long.mp4", 2 * half, fps=10, frame=lambda i: _solid(RED if i < half else BLUE)(i), b_frames=0
        ),
    }


# ---------------------------------------------------------------------------------------------------
# Engine


def test_colour_videos_are_recognised_and_bgr_reaches_the_model(videos: dict[str, Path]) -> None:
    predictor = _colour_predictor()
    red = predictor.predict(videos["red"], top_k=2)
    assert [p.label for p in red.predictions] == ["red", "blue"]
    assert red.predictions[0].score > 0.99
    assert predictor.predict(videos["blue"]).predictions[0].label == "blue"
    bgr = _colour_predictor(protocol=ViewProtocol(**{**PROTOCOL.as_dict(), "channel_order": "bgr"}))
    assert bgr.predict(videos["red"]).predictions[0].label == "blue"


def test_score_is_the_softmax_of_the_mean_logit_and_batching_does_not_matter() -> None:
    protocol = ViewProtocol(frames=8, stride=4, clips=3, crops=3, size=48)
    model = ColourModel()
    views = load_views(CLIP, frames=8, stride=4, clips=3, crops=3, size=48)
    expected = model(views).mean(dim=0).softmax(dim=0)
    for batch_size in (1, 4, 9):
        result = Predictor(model, protocol, labels=COLOURS, batch_size=batch_size).predict(CLIP, top_k=2)
        assert result.views == 9
        scores = {p.index: p.score for p in result.predictions}
        assert scores == pytest.approx({0: float(expected[0]), 1: float(expected[1])}, abs=1e-6)


def test_only_labelled_outputs_are_ranked() -> None:
    class ThreeOutputs(nn.Module):
        def forward(self, clip: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, 1.0, 9.0]]).expand(len(clip), 3)

    # Like the HMDB51 head: more rows than labels; the extra row must never be ranked.
    result = Predictor(ThreeOutputs(), PROTOCOL, labels=["a", "b"]).predict(CLIP, top_k=5)
    assert [p.label for p in result.predictions] == ["b", "a"]
    assert sum(p.score for p in result.predictions) == pytest.approx(1.0)
    unlabelled = Predictor(ThreeOutputs(), PROTOCOL).predict(CLIP, top_k=1)
    assert unlabelled.predictions[0].label == "class 2"


def test_predict_many_keeps_order_and_reports_failures(videos: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    paths = [videos["red"], tmp_path / "broken.mp4", videos["blue"], tmp_path / "gone.mp4"]
    outcomes = list(_colour_predictor().predict_many(paths))
    assert [type(o).__name__ for o in outcomes] == ["VideoPrediction", "Failure", "VideoPrediction", "Failure"]
    assert [o.predictions[0].label for o in outcomes if not isinstance(o, Failure)] == ["red", "blue"]
    assert "broken.mp4" in outcomes[1].error


def test_timeline_follows_the_colour_change(videos: dict[str, Path]) -> None:
    timeline = _colour_predictor().timeline(videos["long"], 2.0)
    assert [(w.start, w.end) for w in timeline.windows] == [(2.0 * i, 2.0 * i + 2) for i in range(10)]
    assert [w.label for w in timeline.windows] == ["red"] * 5 + ["blue"] * 5
    assert all(w.score > 0.99 for w in timeline.windows)


def test_timeline_window_bounds() -> None:
    assert window_bounds(200, 10, 3) == [(0, 30), (30, 60), (60, 90), (90, 120), (120, 150), (150, 180), (180, 200)]
    # A tail shorter than half a window joins the previous window.
    assert window_bounds(200, 10, 4.5)[-1] == (135, 200)
    assert window_bounds(20, 10, 5) == [(0, 20)]  # the window is longer than the video
    with pytest.raises(UniformerError, match="positive"):
        window_bounds(200, 10, 0)


def test_expand_paths(tmp_path: Path, videos: dict[str, Path]) -> None:
    root = tmp_path / "tree"
    (root / "class_a").mkdir(parents=True)
    (root / "class_b" / "deeper").mkdir(parents=True)
    first = root / "class_a" / "one.mp4"
    second = root / "class_b" / "deeper" / "two.WEBM"
    for video in (first, second):
        video.write_bytes(videos["red"].read_bytes())
    (root / "class_a" / "notes.txt").write_text("skip me")
    frames = write_frame_folder(root / "class_b" / "frames_0001", np.zeros((3, 8, 8, 3), np.uint8))
    found, failures = expand_paths([root])
    assert found == [first, second, frames]  # depth first, sorted: class_b/deeper before class_b/frames_0001
    assert failures == []
    found, failures = expand_paths([str(root / "**" / "*.mp4"), first, frames, tmp_path / "nowhere.mp4"])
    assert found == [first, frames]  # duplicates dropped, frame folders accepted as given
    assert [f.file for f in failures] == [str(tmp_path / "nowhere.mp4")]
    _, failures = expand_paths([str(tmp_path / "*.avi"), tmp_path / "tree" / "class_a" / "notes.txt"])
    assert "no videos match" in failures[0].error
    assert failures[1:] == []  # a file named explicitly is handed to the decoder, which decides


def test_run_predict_reports_unmatched_patterns(videos: dict[str, Path], tmp_path: Path) -> None:
    report = run_predict(_colour_predictor(), find_videos([videos["red"], tmp_path / "missing"]))
    assert [r.file for r in report.results] == [str(videos["red"])]
    assert report.failures == [Failure(str(tmp_path / "missing"), f"no such file or folder: {tmp_path / 'missing'}")]


def test_default_model_is_downloadable() -> None:
    assert get_entry(DEFAULT_MODEL).on_hub


# ---------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def colour_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, object]:
    """Make `--model colour` load the colour model with `PROTOCOL` (and record what was asked)."""
    asked: dict[str, object] = {}

    def fake_resolve(name_or_path: object, **options: object) -> LoadedModel:
        asked.update(options, name=name_or_path, path=tmp_path / "colour.safetensors")
        path = tmp_path / "colour.safetensors"
        return LoadedModel(ColourModel(), ModelConfig(), COLOURS, None, path, PROTOCOL, str(path))

    def fake_optimize(model: nn.Module, **options: object) -> nn.Module:
        asked.update(optimized=options)
        return model  # the colour model has no UniFormer layers to fuse

    monkeypatch.setattr(inference, "resolve_model", fake_resolve)
    monkeypatch.setattr(inference, "optimize_for_inference", fake_optimize)  # the PyTorch engine
    return asked


def _run(capsys: pytest.CaptureFixture[str], *arguments: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["predict", *map(str, arguments)])
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_paths_that_name_no_video_fail_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], colour_cli: dict, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = _run(capsys, tmp_path / "typo.mp4", tmp_path / "empty", "--model", "colour")
    assert (code, out) == (1, "")
    assert err.strip() == (
        f"error: no such file or folder: {tmp_path / 'typo.mp4'}; no videos or frame folders found under "
        f"{tmp_path / 'empty'}"
    )
    assert "name" not in colour_cli  # the model was never resolved (no download for a typo)


def test_brackets_in_paths_and_labels_are_printed_verbatim(
    capsys: pytest.CaptureFixture[str], colour_cli: dict, tmp_path: Path
) -> None:
    missing = tmp_path / "clip[v2].mp4"  # brackets: rich markup to rich, a pattern to glob
    code, _, err = _run(capsys, missing, "--model", "colour")
    assert (code, err.strip()) == (1, f"error: no videos match {missing}")
    # Something-Something class names are templates such as "Putting [something] on a surface".
    labels = ["Putting [something] on a surface", "Pushing [something] from left to right"]
    result = VideoPrediction(
        file=str(missing), model="m[1].pth", predictions=[Prediction(label, i, 0.5) for i, label in enumerate(labels)],
        seconds=1.0, protocol="8x8", num_frames=8,
    )  # fmt: skip
    console = Console(record=True, width=200)
    console.print(predict_cli._table(result))
    text = console.export_text()
    assert all(label in text for label in labels)
    assert str(missing) in text and "m[1].pth" in text


def test_cli_json_schema(capsys: pytest.CaptureFixture[str], colour_cli: dict, videos: dict[str, Path]) -> None:
    code, out, err = _run(capsys, videos["red"], videos["blue"], "--model", "colour", "--json", "--top-k", "2")
    assert code == 0
    assert not err.strip()  # nothing but, with rich < 15, the newline that ends even a disabled progress bar
    records = json.loads(out)
    assert [record["video"] for record in records] == [str(videos["red"]), str(videos["blue"])]
    for record, colour in zip(records, COLOURS, strict=True):
        assert record["error"] is None
        # A file that is no zoo entry's is named by its path, never by an ambiguous bare file name.
        assert record["model"] == record["weights"] == str(colour_cli["path"])
        assert record["protocol"] == PROTOCOL.as_dict()
        assert isinstance(record["elapsed_s"], float)
        assert record["elapsed_s"] >= 0
        assert [set(p) for p in record["top_k"]] == [{"label", "index", "score"}] * 2
        assert (record["predicted_label"], record["predicted_index"]) == (colour, COLOURS.index(colour))
        assert record["top_k"][0] == {
            "label": colour, "index": COLOURS.index(colour), "score": record["score"]
        }  # fmt: skip
        scores = [p["score"] for p in record["top_k"]]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0)
    assert colour_cli["name"] == "colour"


def test_cli_table_and_csv(
    capsys: pytest.CaptureFixture[str], colour_cli: dict, videos: dict[str, Path], tmp_path: Path
) -> None:
    table_file = tmp_path / "out.csv"
    code, out, _ = _run(capsys, videos["blue"], "--model", "colour", "-o", table_file, "--top-k", "2")
    assert code == 0
    assert "blue" in out and "red" in out  # the ranked labels (the caption's wrapping follows the temp path)
    with table_file.open() as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["video"], row["predicted_label"], row["protocol.frames"]) == (str(videos["blue"]), "blue", "4")
    assert row["model"] == str(colour_cli["path"])  # a file that is no zoo entry's is named by its path
    assert (row["protocol.clips"], row["protocol.crops"], row["protocol.size"]) == ("2", "1", "32")
    assert [p["label"] for p in json.loads(row["top_k"])] == ["blue", "red"]
    # --csv FILE: the old spelling, the same file.
    old = tmp_path / "old.csv"
    assert _run(capsys, videos["blue"], "--model", "colour", "--csv", old, "--top-k", "2")[0] == 0
    assert next(iter(csv.DictReader(old.open()))).keys() == row.keys()


def test_cli_options_reach_the_engine(
    capsys: pytest.CaptureFixture[str], colour_cli: dict, videos: dict[str, Path]
) -> None:
    code, out, _ = _run(
        capsys,
        *(videos["red"], "--model", "colour", "--clips", "3", "--crops", "3", "--device", "cpu", "--head-dim", "8"),
        "--json",
    )
    assert code == 0
    protocol = json.loads(out)[0]["protocol"]
    assert (protocol["frames"], protocol["clips"], protocol["crops"], protocol["size"]) == (4, 3, 3, 32)
    assert colour_cli["device"] == torch.device("cpu")
    assert colour_cli["head_dim"] == 8
    assert colour_cli["optimized"] == {"inplace": True, "compile": False, "precision": "auto"}
    assert _run(capsys, videos["red"], "--model", "colour", "--compile", "--precision", "fp32")[0] == 0
    assert colour_cli["optimized"] == {"inplace": True, "compile": True, "precision": "fp32"}


def test_cli_timeline(capsys: pytest.CaptureFixture[str], colour_cli: dict, videos: dict[str, Path]) -> None:
    code, out, _ = _run(capsys, videos["long"], "--model", "colour", "--timeline", "5", "--json")
    assert code == 0
    [record] = json.loads(out)
    assert [(w["start"], w["end"], w["label"]) for w in record["windows"]] == [
        (0.0, 5.0, "red"),
        (5.0, 10.0, "red"),
        (10.0, 15.0, "blue"),
        (15.0, 20.0, "blue"),
    ]
    code, out, _ = _run(capsys, videos["long"], "--model", "colour", "--timeline", "10")
    assert code == 0
    assert "0:10.0" in out
    assert "red" in out
    assert "blue" in out


def test_cli_bad_inputs_fail_one_line_each_and_the_rest_is_predicted(
    capsys: pytest.CaptureFixture[str], colour_cli: dict, videos: dict[str, Path], tmp_path: Path
) -> None:
    data = videos["red"].read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    bad = [
        tmp_path / "missing.mp4",
        tmp_path / "empty.mp4",
        tmp_path / "noise.mp4",
        write_audio_only(tmp_path / "audio.m4a"),
        tmp_path / "cut.mp4",
    ]
    code, out, err = _run(capsys, bad[0], videos["red"], *bad[1:], videos["blue"], "--model", "colour", "--json")
    assert code == 3  # some inputs failed, the others were written
    records = json.loads(out)
    # Every input has its record, in input order (a path that named nothing first); failures carry `error`.
    assert [record["video"] for record in records] == [
        str(p) for p in [bad[0], videos["red"], *bad[1:], videos["blue"]]
    ]
    assert [record["error"] is None for record in records] == [False, True, False, False, False, False, True]
    assert all(record["predicted_label"] is None and record["top_k"] is None for record in records if record["error"])
    assert {len(record) for record in records} == {len(records[1])}  # the same fields, for CSV columns
    lines = err.strip().splitlines()
    assert len(lines) == len(bad)
    for line, path in zip(lines, bad, strict=True):
        assert line.startswith("error: ")
        assert path.name in line
    assert "Traceback" not in err
    for path in bad:  # alone, each is exactly one line on stderr: 1 if nothing ran, else 3 (its record failed)
        code, out, err = _run(capsys, path, "--model", "colour")
        assert (code, out) == (3 if path.exists() else 1, "")
        assert len(err.strip().splitlines()) == 1


def test_cli_protocol_flags_override_the_models_protocol(
    capsys: pytest.CaptureFixture[str], colour_cli: dict, videos: dict[str, Path]
) -> None:
    flags = ("--frames", "3", "--sampling", "sparse", "--size", "48", "--channel-order", "bgr")
    code, out, err = _run(capsys, videos["red"], "--model", "colour", *flags, "--json")
    assert code == 0, err
    [record] = json.loads(out)
    protocol = record["protocol"]
    assert (protocol["frames"], protocol["sampling"], protocol["stride"]) == (3, "sparse", None)
    assert (protocol["clips"], protocol["size"], protocol["channel_order"]) == (2, 48, "bgr")  # clips: the model's
    assert record["predicted_label"] == "blue"  # BGR frames swap the colour model's classes


TINY_CONFIG = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=3)


def _expected_json(model: nn.Module, protocol: ViewProtocol) -> dict[str, float]:
    """`class N` -> probability of the model on the clip's views under `protocol`."""
    with open_video(CLIP) as video, torch.inference_mode():
        probabilities = model(views_from_video(video, protocol)).mean(dim=0).softmax(dim=0)
    return {f"class {index}": score for index, score in enumerate(probabilities.tolist())}


def test_cli_weights_without_a_protocol_ask_for_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    weights = save_weights(tmp_path / "bare.safetensors", create_model(TINY_CONFIG), TINY_CONFIG)
    for flags in ((), ("--frames", "4"), ("--stride", "2")):
        code, out, err = _run(capsys, CLIP, "--weights", weights, "--device", "cpu", *flags)
        assert (code, out) == (1, "")
        assert "bare.safetensors carries no test protocol" in err
        assert all(flag in err for flag in ("--frames", "--stride", "--sampling", "--model")), err
        assert len(err.strip().splitlines()) == 1


def test_cli_weights_without_a_protocol_or_labels_predict_with_the_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A custom architecture, as safetensors without metadata and as an official-layout `.pth`: the
    flags give the protocol (clips 1, crops 1, size 224 and RGB when not given), classes are `class N`."""
    torch.manual_seed(0)
    model = create_model(TINY_CONFIG).eval()
    safetensors = save_weights(tmp_path / "bare.safetensors", model, TINY_CONFIG)
    official = tmp_path / "custom.pth"
    torch.save({"model": model.state_dict()}, official)
    cases = [
        (safetensors, ("--frames", "4", "--stride", "2"), ViewProtocol(frames=4, stride=2)),
        (
            official,
            ("--frames", "4", "--sampling", "segment", "--size", "64", "--crops", "3", "--channel-order", "bgr"),
            ViewProtocol(frames=4, sampling="segment", size=64, crops=3, channel_order="bgr"),
        ),
    ]
    for weights, flags, protocol in cases:
        code, out, err = _run(capsys, CLIP, "--weights", weights, "--head-dim", "16", "--json", *flags)
        assert code == 0, err
        [record] = json.loads(out)
        assert record["model"] == str(weights)
        scores = {p["label"]: p["score"] for p in record["top_k"]}
        assert scores == pytest.approx(_expected_json(model, protocol), abs=1e-5)
        assert [p["label"] for p in record["top_k"]] == [f"class {p['index']}" for p in record["top_k"]]


def test_console_script_with_saved_weights(tmp_path: Path) -> None:
    """The installed command on a real (tiny, random) UniFormer with its protocol in the metadata."""
    config = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=3)
    torch.manual_seed(0)
    model = create_model(config).eval()
    labels = ["x", "y", "z"]
    weights = save_weights(tmp_path / "tiny.safetensors", model, config, labels=labels, protocol=PROTOCOL.as_dict())
    (tmp_path / "noise.mp4").write_bytes(b"\x00garbage" * 100)
    command = [sys.executable, "-m", "uniformer_cli.cli.app", "predict", str(CLIP), str(tmp_path / "noise.mp4")]
    result = subprocess.run(
        [*command, "--weights", str(weights), "--json", "--device", "cpu"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot open")
    record, failed = json.loads(result.stdout)
    assert failed["error"].startswith("cannot open") and failed["video"].endswith("noise.mp4")
    views = load_views(CLIP, frames=4, stride=2, clips=2, size=32)
    with torch.inference_mode():
        expected = model(views).mean(dim=0).softmax(dim=0)
    assert {p["label"]: p["score"] for p in record["top_k"]} == pytest.approx(
        dict(zip(labels, expected.tolist(), strict=True)), abs=1e-5
    )


def test_predict_a_zoo_model_from_the_hub(
    capsys: pytest.CaptureFixture[str], local_hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Download -> convert -> predict with a zoo name, against the local Hub server."""
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    code, out, err = _run(capsys, CLIP, "--model", served.entry.name, "--json", "--device", "cpu", "--top-k", "3")
    assert code == 0, err
    [record] = json.loads(out)
    assert record["model"] == served.entry.name
    protocol = served.entry.protocol
    views = load_views(
        CLIP,
        frames=protocol.frames,
        stride=protocol.stride,
        clips=protocol.clips,
        crops=protocol.crops,
        size=protocol.size,
    )
    with torch.inference_mode():
        expected = served.model(views).mean(dim=0).softmax(dim=0)
    scores, indices = expected.topk(3)
    labels = load_labels("k400")
    assert [p["index"] for p in record["top_k"]] == indices.tolist()
    assert [p["label"] for p in record["top_k"]] == [labels[i] for i in indices.tolist()]
    assert [p["score"] for p in record["top_k"]] == pytest.approx(scores.tolist(), abs=1e-5)
    assert local_hub.count("GET", served.entry.hub_file) == 1
    code, _, _ = _run(capsys, CLIP, "--model", served.entry.name, "--json", "--device", "cpu")
    assert code == 0
    assert local_hub.count("GET", served.entry.hub_file) == 1  # converted once, reused
