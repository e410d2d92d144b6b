"""The OpenVINO engine (issue 12): PyTorch's logits at fp32, PyTorch's ranking at bf16, the IR converted
once and cached by weights, clip shape and precision (a damaged copy converted again), `--engine auto`
running the engine measured faster on this machine (measured once, kept and verified), and one-line
errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from huggingface_hub import constants
from parity import FIXTURES, fixture_model
from test_eval import MIXED, assert_metrics, eval_json, expected, kinetics_release

from uniformer_cli.engine import openvino_engine
from uniformer_cli.engine.openvino_engine import OpenVinoModel, choose_engine
from uniformer_cli.engine.predict import Predictor, load_predictor
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import fast as fast_module
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.models.layers import StagedModel
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import resolve_model, save_weights

PROTOCOL = ViewProtocol(frames=8, stride=2, clips=2, crops=1, size=64)
CLIP = Path(__file__).parent / "fixtures" / "preprocess" / "carphone_pristine.mp4"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numerics are checked on any CPU: where bf16 is emulated it is slower, not different."""
    monkeypatch.setattr(fast_module, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    labels = [f"c{index}" for index in range(10)]
    return save_weights(
        tmp_path / "small.safetensors", fixture_model("small"), FIXTURES["small"], labels, PROTOCOL.as_dict()
    )


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the extra were not installed: `import openvino` raises ImportError."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def conversions(caplog: pytest.LogCaptureFixture) -> int:
    return sum("to OpenVINO once" in record.getMessage() for record in caplog.records)


@pytest.fixture
def reference(weights: Path, caplog: pytest.LogCaptureFixture) -> Predictor:
    """PyTorch's fp32 predictor of `weights`, with INFO records captured (the conversions are counted)."""
    caplog.set_level(logging.INFO, logger="uniformer_cli")
    return load_predictor(weights, device="cpu", precision="fp32", engine="torch")


def test_fp32_gives_pytorchs_logits_converts_once_and_rebuilds_a_damaged_copy(
    weights: Path, reference: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    predictor = load_predictor(weights, device="cpu", precision="fp32", engine="openvino")
    assert isinstance(predictor.model, OpenVinoModel) and conversions(caplog) == 1
    for batch in (1, 3):
        clips = torch.randn(batch, 3, 8, 64, 64)
        torch.testing.assert_close(predictor.logits(clips), reference.logits(clips), atol=1e-4, rtol=0)
    (folder,) = (path for path in openvino_engine.cache_root().iterdir() if path.name != "digests")
    assert folder.name.endswith("-8x64x64") and len(folder.name.split("-")[0]) == 64
    assert {path.name for path in folder.iterdir()} == {
        "model.xml",
        "model.bin",
        "model.xml.sha256.json",
        "model.bin.sha256.json",
        "compiled-fp32",
    }
    assert any((folder / "compiled-fp32").iterdir())  # OpenVINO's blob for this precision
    ir = (folder / "model.bin").stat()

    again = load_predictor(weights, device="cpu", precision="fp32", engine="openvino")
    assert conversions(caplog) == 1  # from the cache: neither exported nor converted again
    assert (folder / "model.bin").stat().st_ino == ir.st_ino
    clips = torch.randn(2, 3, 8, 64, 64)
    expected = reference.logits(clips)
    torch.testing.assert_close(again.logits(clips), expected, atol=1e-4, rtol=0)

    data = bytearray((folder / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: the stat stamp changed, the hash differs
    (folder / "model.bin").write_bytes(bytes(data))
    rebuilt = load_predictor(weights, device="cpu", precision="fp32", engine="openvino")
    assert conversions(caplog) == 2 and "converting it again" in caplog.text
    torch.testing.assert_close(rebuilt.logits(clips), expected, atol=1e-4, rtol=0)


def test_bf16_keeps_pytorchs_ranking_on_a_real_clip_and_has_its_own_compiled_cache(
    weights: Path, reference: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    bf16 = load_predictor(weights, device="cpu", precision="bf16", engine="openvino")
    assert isinstance(bf16.model, OpenVinoModel) and bf16.model.precision == "bf16"
    views = bf16.load(CLIP).views
    expected, got = reference.logits(views), bf16.logits(views)
    assert got.dtype == torch.float32 and 0 < (got - expected).abs().max() < 0.06 * expected.std()
    assert torch.equal(got.mean(0).argsort(descending=True)[:3], expected.mean(0).argsort(descending=True)[:3])
    # The same IR serves both precisions; each has its own compiled blobs.
    load_predictor(weights, device="cpu", precision="fp32", engine="openvino")
    assert conversions(caplog) == 1
    (folder,) = openvino_engine.cache_root().glob("*-8x64x64")
    assert {path.name for path in folder.glob("compiled-*")} == {"compiled-bf16", "compiled-fp32"}


def test_the_weights_are_hashed_once_and_again_when_they_change(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[Path] = []
    real = openvino_engine.weights_sha256.__globals__["sha256_of"]

    def counting(path: Path) -> str:
        hashed.append(path)
        return str(real(path))

    monkeypatch.setitem(openvino_engine.weights_sha256.__globals__, "sha256_of", counting)
    first = openvino_engine.ir_folder(weights, PROTOCOL)
    assert openvino_engine.ir_folder(weights, PROTOCOL) == first and hashed == [weights]
    other_shape = openvino_engine.ir_folder(weights, ViewProtocol(frames=4, stride=2, clips=1, crops=1, size=32))
    assert other_shape.name.endswith("-4x32x32") and len(hashed) == 1
    weights.write_bytes(weights.read_bytes() + b" ")  # new content: a new key
    assert openvino_engine.ir_folder(weights, PROTOCOL) != first and len(hashed) == 2


def test_auto_is_decided_after_loading_where_openvino_could_run() -> None:
    for precision in ("bf16", "fp32", "auto"):
        assert choose_engine("auto", precision, CPU) == "auto"
    assert choose_engine("auto", "bf16", torch.device("cuda")) == "torch"
    assert choose_engine("auto", "fp32", CPU, compile=True) == "torch"
    assert choose_engine("torch", "bf16", CPU) == "torch"
    assert choose_engine("openvino", "fp32", CPU) == "openvino"
    assert choose_engine("openvino", "bf16", CPU) == "openvino"


@pytest.mark.usefixtures("no_openvino")
def test_without_the_extra_openvino_is_one_error_line_and_auto_runs(
    capsys: pytest.CaptureFixture[str], weights: Path
) -> None:
    assert choose_engine("auto", "bf16", CPU) == "torch"
    capsys.readouterr()  # what the CLI's log handler, left by earlier commands, showed of that
    code, out, err = run_cli(capsys, "predict", CLIP, "--weights", weights, "--engine", "openvino")
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == ["error: --engine openvino needs openvino: pip install 'uniformer[openvino]'"]
    code, out, err = run_cli(capsys, "predict", CLIP, "--weights", weights, "--precision", "bf16", "--json")
    assert code == 0 and json.loads(out)[0]["predicted_label"] and "Traceback" not in err


def test_engine_errors_are_one_line(capsys: pytest.CaptureFixture[str], weights: Path) -> None:
    with pytest.raises(UniformerError, match="runs on the CPU"):
        choose_engine("openvino", "fp32", torch.device("cuda"))
    with pytest.raises(UniformerError, match="unknown engine"):
        choose_engine("tensorrt", "fp32", CPU)
    code, out, err = run_cli(capsys, "predict", CLIP, "--weights", weights, "--engine", "openvino", "--compile")
    assert (code, out) == (1, "") and err.strip() == (
        "error: --compile is torch.compile: it does not apply to --engine openvino"
    )
    code, out, err = run_cli(capsys, "predict", CLIP, "--weights", weights, "--engine", "tensorrt")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "openvino" in err and "Traceback" not in err


def test_cli_predict_and_eval_run_on_openvino(capsys: pytest.CaptureFixture[str], weights: Path) -> None:
    common = ("predict", CLIP, "--weights", weights, "--device", "cpu", "--json")
    code, out, err = run_cli(capsys, *common, "--engine", "openvino")
    assert code == 0, err
    [record] = json.loads(out)
    code, torch_out, err = run_cli(capsys, *common, "--engine", "torch")
    assert code == 0, err
    [expected] = json.loads(torch_out)
    assert record["top_k"][0]["label"] == expected["top_k"][0]["label"]
    assert record["score"] == pytest.approx(expected["score"], abs=1e-4)
    code, out, err = run_cli(capsys, *common, "--precision", "bf16", "--engine", "openvino")
    assert code == 0, err
    assert json.loads(out)[0]["predicted_label"] == expected["predicted_label"]
    assert "Traceback" not in err


def test_eval_on_openvino_gives_the_forced_models_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    weights = kinetics_release(tmp_path)
    for precision in ("fp32", "bf16"):
        args = ("--dataset", "k600", "--root", tmp_path, "--weights", weights, "--precision", precision)
        data = eval_json(capsys, tmp_path, *args, "--engine", "openvino")
        assert_metrics(data["summary"], expected(MIXED))
    assert len(list(openvino_engine.cache_root().glob("*-4x32x32/compiled-*"))) == 2


SIGNALS_AFTER_RELEASE = """
import gc, os, signal, sys
from dataclasses import replace
from pathlib import Path
tests, folder = sys.argv[1:3]
sys.path.insert(0, tests)
import torch
from parity import FIXTURES, fixture_model
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.engine import openvino_engine
from uniformer_cli.engine.predict import load_predictor
from uniformer_cli.weights import save_weights
from huggingface_hub import constants
constants.HF_HOME = str(Path(folder) / "hf")
protocol = ViewProtocol(frames=8, stride=2, clips=1, crops=1, size=64)
model, config = fixture_model("small"), FIXTURES["small"]
weights = save_weights(Path(folder) / "w.safetensors", model, config, None, protocol.as_dict())
first = load_predictor(weights, device="cpu", engine="openvino")
second = load_predictor(weights, device="cpu", engine="openvino")
for predictor in (first, second):
    predictor.logits(torch.randn(1, 3, 8, 64, 64))
del first, predictor; gc.collect()
del second; gc.collect()
seen = []
signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
for _ in range(50):
    junk = [bytearray(20000) for _ in range(50)]
    os.kill(os.getpid(), signal.SIGUSR1)
print(len(seen))
"""


def test_signals_are_handled_after_openvino_models_are_released(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin moves the thread onto a signal stack of its own while it lives; with one
    plugin per model, releasing two models left the thread on a freed stack and the next handled signal
    crashed the process (every time, here). The engine keeps one Core, hence one plugin, per process."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNALS_AFTER_RELEASE, str(Path(__file__).parent), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert (done.returncode, done.stdout.strip()) == (0, "50"), done.stderr[-2000:]


def test_help_names_the_extra(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    for command in ("predict", "eval"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and "pip install 'uniformer[openvino]'" in out


def test_features_run_on_openvino_as_on_pytorch(weights: Path) -> None:
    """`features --engine openvino` (issue 20): OpenVINO runs a graph whose output is the pooled features of
    the asked stage, cached apart from the logits graph, with PyTorch's values."""
    from uniformer_cli.engine.inference import open_model
    from uniformer_cli.engine.request import InferenceRequest

    clips = torch.randn(2, 3, 8, 64, 64)
    for stage in (4, 2):
        request = InferenceRequest(weights=weights, device="cpu", precision="fp32")
        on_torch = open_model(replace(request, engine="torch"), features=stage)
        on_openvino = open_model(replace(request, engine="openvino"), features=stage)
        assert isinstance(on_openvino.network, OpenVinoModel)
        assert on_openvino.network.folder.name.endswith(f"-8x64x64-features{stage}")
        expected = on_torch.outputs(clips, batch_size=2)
        assert expected.shape == (2, FIXTURES["small"].embed_dim[stage - 1])
        torch.testing.assert_close(on_openvino.outputs(clips, batch_size=2), expected, atol=1e-4, rtol=0)


def test_the_first_conversion_reports_its_steps_and_a_cached_model_none(weights: Path) -> None:
    from uniformer_cli import resolve_model
    from uniformer_cli.events import Progress

    loaded = resolve_model(weights, device="cpu")
    heard: list[Progress] = []
    openvino_engine.openvino_model(loaded, PROTOCOL, "fp32", progress=heard.append)
    assert [(event.task, event.done, event.total) for event in heard] == [
        (openvino_engine.CONVERTING, done, 3) for done in range(4)
    ]
    assert [event.detail.get("step") for event in heard[:3]] == list(openvino_engine.CONVERSION_STEPS)
    heard.clear()
    openvino_engine.openvino_model(loaded, PROTOCOL, "fp32", progress=heard.append)
    assert heard == []  # from the cache: nothing long to report


def auto_engine_model(weights: Path, precision: str = "fp32", batch: int = 2) -> tuple[str, torch.nn.Module]:
    loaded = resolve_model(weights, device=CPU)

    def pytorch() -> torch.nn.Module:
        return optimize_for_inference(loaded.model, inplace=True, precision=precision)

    return openvino_engine.auto_model(loaded, PROTOCOL, precision, pytorch, batch=batch)


def timings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("timing PyTorch and OpenVINO once" in record.getMessage() for record in caplog.records)


def test_auto_runs_pytorch_until_openvino_is_converted_then_measures_once_and_keeps_the_winner(
    weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uniformer_cli")
    record = openvino_engine.tuning_file()
    engine, network = auto_engine_model(weights)  # nothing converted: nothing measured
    assert engine == "torch" and isinstance(network, StagedModel)
    assert (conversions(caplog), timings(caplog)) == (0, 0) and not record.exists()

    load_predictor(weights, device="cpu", precision="fp32", engine="openvino")  # converts once
    engine, first = auto_engine_model(weights)
    assert timings(caplog) == 1 and record.parent.parent == openvino_engine.cache_root().parent
    (measurement,) = json.loads(record.read_text())["measurements"].values()
    assert measurement["engine"] == engine and measurement["torch_seconds"] > 0
    assert isinstance(first, OpenVinoModel) == (engine == "openvino")
    again, network = auto_engine_model(weights)
    assert timings(caplog) == 1 and again == engine and type(network) is type(first)  # kept: not measured again
    auto_engine_model(weights, batch=1)  # another batch is measured on its own
    assert timings(caplog) == 2 and len(json.loads(record.read_text())["measurements"]) == 2
    assert conversions(caplog) == 1


def test_auto_follows_the_kept_measurement_and_measures_again_when_it_is_damaged(
    weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uniformer_cli")
    load_predictor(weights, device="cpu", precision="bf16", engine="openvino")
    key = openvino_engine.measurement_key(resolve_model(weights, device=CPU), PROTOCOL, "bf16", 2)
    for kept, kind in (("openvino", OpenVinoModel), ("torch", StagedModel)):
        openvino_engine.record_measurement(key, {"engine": kept})
        engine, network = auto_engine_model(weights, "bf16")
        assert engine == kept and isinstance(network, kind)
    assert timings(caplog) == 0
    record = openvino_engine.tuning_file()
    record.write_text(record.read_text().replace('"torch"', '"openvino"'))  # not what its sidecar says
    auto_engine_model(weights, "bf16")
    assert timings(caplog) == 1 and "measuring again" in caplog.text


def test_the_inference_door_runs_auto(weights: Path) -> None:
    """`engine.inference.open_model` (predict, eval, features...) resolves auto to an engine it names."""
    predictor = load_predictor(weights, device="cpu", precision="fp32", engine="auto")
    assert isinstance(predictor.model, StagedModel)  # not converted here: PyTorch
