"""OpenVINO as the inference engine of predict and eval (`--engine openvino`, the `openvino` extra), and
the choice between it and PyTorch for `--engine auto`.

Which engine is faster depends on the CPU (AMX, AVX512-BF16, AVX2 only, Arm), the precision, the batch
and the model, so `--engine auto` never follows a benchmark of another machine: it runs OpenVINO only
where OpenVINO was measured faster on this one. The measurement (`auto_model`) is made once the model
has been converted for OpenVINO (by a run with `--engine openvino`: the conversion is the one large
cost, ~8 s for S16, paid once), the first time `--engine auto` then meets that model shape, precision
and batch (capped at `MEASURED_BATCH`): both engines score the same random clips alternately, after
warm-up, and the faster by its best pass wins. The result is kept per machine (CPU model and features,
thread count, torch and OpenVINO versions) in `tuning/engines-<cpu fingerprint>.json` beside the
OpenVINO cache, verified by its sha256 sidecar like the converted files; a damaged record is measured
again. Without a measurement, on a GPU, with `--compile`, or without the extra, auto runs PyTorch.

The model is exported to ONNX (`engine.interchange`), converted to OpenVINO IR once and kept on disk beside
the converted zoo weights, under `$HF_HOME/uniformer/openvino/`:

    <weights sha256>-<T>x<H>x<W>/      one folder per weights content and clip shape
        model.xml, model.bin           the float32 IR, each with a `.sha256.json` sidecar: checked by
                                       one `stat` per run, converted again when damaged
        compiled-fp32/, compiled-bf16/ OpenVINO's compiled blobs (its CACHE_DIR), one folder per
                                       precision; OpenVINO keys each blob by the IR file and the
                                       compile options, and compiles again when one cannot be read
    ../tuning/engines-<cpu>.json       `--engine auto`'s measurements on this machine (above)

The weights' sha256 comes from `weights_sha256`, by path and stat stamp: a file is hashed once, not on
every run.

So a cached model costs a compile from its blob (a fraction of a second), not an export.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from uniformer_cli.engine.interchange import (
    export_metadata,
    exportable,
    openvino_core,
    require_engine,
    require_modules,
    staging,
    write_onnx,
    write_openvino,
)
from uniformer_cli.errors import UniformerError, first_line
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import atomic_write, exclusive
from uniformer_cli.models.fast import check_precision
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.runtime import cpu_info
from uniformer_cli.settings import ENGINES
from uniformer_cli.weights import LoadedModel
from uniformer_cli.weights.cache import (
    OPENVINO_FOLDER,
    build_lock,
    cache_home,
    integrity_problem,
    mark_used,
    record_integrity,
    weights_sha256,
)

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision -> OpenVINO's INFERENCE_PRECISION_HINT
IR_FILES = ("model.xml", "model.bin")


def require_openvino() -> ModuleType:
    """The `openvino` module, or a one-line error giving the install command."""
    return require_modules(("openvino",), "openvino", "--engine openvino")["openvino"]


def choose_engine(engine: str, precision: str, device: torch.device, compile: bool = False) -> str:
    """The engine to run for `engine`: "torch", "openvino", or "auto" where both could run (CPU, no
    `--compile`, the extra installed), decided by `auto_model` once the model is loaded (module
    doc); a one-line error for an engine that cannot run what was asked. Checked before anything is
    loaded."""
    if engine not in ENGINES:
        raise UniformerError(f"unknown engine {engine!r} (use one of {', '.join(ENGINES)})")
    if engine == "openvino":
        if device.type != "cpu":
            raise UniformerError(f"--engine openvino runs on the CPU: drop --device {device.type} or the --engine")
        if compile:
            raise UniformerError("--compile is torch.compile: it does not apply to --engine openvino")
        require_openvino()
        return "openvino"
    if engine == "auto" and device.type == "cpu" and not compile and importlib.util.find_spec("openvino"):
        return "auto"  # decided once the model is loaded (`auto_model`)
    return "torch"


# `--engine auto` measures at most this many clips per pass (per-clip speed changes little beyond it).
MEASURED_BATCH = 4
WARMUP, ROUNDS = 2, 3
RECORD_VERSION = 1


def tuning_file() -> Path:
    """This machine's record of `--engine auto` measurements, beside the OpenVINO cache."""
    return cache_root().parent / "tuning" / f"engines-{cpu_info().fingerprint()}.json"


def measurement_key(loaded: LoadedModel, protocol: ViewProtocol, precision: str, batch: int) -> str:
    """What a measurement holds for: the architecture (not the weights' values), clip shape, precision,
    batch, threads, and the engines' versions."""
    config = hashlib.sha256(json.dumps(asdict(loaded.config), sort_keys=True).encode()).hexdigest()[:16]
    shape = f"{protocol.frames}x{protocol.size}x{protocol.size}"
    versions = f"torch {torch.__version__}, openvino {require_openvino().__version__}"
    return f"{config} {shape} {precision} batch {batch} threads {torch.get_num_threads()} ({versions})"


def measured_engines() -> dict[str, dict[str, Any]]:
    """This machine's measurements by `measurement_key`; none where the record is missing, damaged
    (sha256 sidecar) or unreadable (then measured again)."""
    path = tuning_file()
    if not path.is_file():
        return {}
    problem = integrity_problem(path)
    if problem is None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("version") == RECORD_VERSION and isinstance(record.get("measurements"), dict):
                return {
                    key: entry
                    for key, entry in record["measurements"].items()
                    if isinstance(entry, dict) and entry.get("engine") in ("torch", "openvino")
                }
            problem = "has an unknown layout"
        except (OSError, ValueError, AttributeError) as error:
            problem = f"cannot be read ({error})"
    log.warning("the engine measurements in %s %s: measuring again", path, problem)
    return {}


def record_measurement(key: str, entry: dict[str, Any]) -> None:
    """Add one measurement to this machine's record (best effort: unwritable costs a new measurement)."""
    path = tuning_file()
    measurements = {**measured_engines(), key: entry}
    text = json.dumps({"version": RECORD_VERSION, "cpu": cpu_info().describe(), "measurements": measurements}, indent=1)
    try:
        atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    except OSError as error:
        log.warning("could not keep the engine measurement in %s (%s)", path, error.strerror or error)
        return
    record_integrity(path)


def fastest_passes(models: dict[str, nn.Module], clips: torch.Tensor) -> dict[str, float]:
    """Each model's fastest pass over `clips` (seconds) among `ROUNDS`, after `WARMUP`, the models
    alternating so that a change of load slows all alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for round_ in range(WARMUP + ROUNDS):
            for name, model in models.items():
                started = time.perf_counter()
                model(clips)
                if round_ >= WARMUP:
                    times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def auto_model(
    loaded: LoadedModel,
    protocol: ViewProtocol,
    precision: str,
    pytorch: Callable[[], nn.Module],
    *,
    batch: int = MEASURED_BATCH,
    features: int | None = None,
) -> tuple[str, nn.Module]:
    """`--engine auto` (module doc): ("openvino", its compiled model) where OpenVINO was measured faster on
    this machine for this model shape, precision and `batch`, else ("torch", `pytorch()`: the caller's
    PyTorch network). Measures now when OpenVINO's model is converted but not yet measured. Feature
    outputs (`features`) run on PyTorch: their graphs are converted apart and not measured."""
    batch = max(1, min(batch, MEASURED_BATCH))
    key = measurement_key(loaded, protocol, precision, batch)
    known = measured_engines().get(key) if features is None else {"engine": "torch"}
    converted = features is None and _converted(loaded, protocol)
    if known is not None and known["engine"] == "openvino" and converted:
        return "openvino", openvino_model(loaded, protocol, precision)
    fast = pytorch()
    if known is not None or not converted:
        return "torch", fast  # measured faster, or OpenVINO's model not converted (nothing paid for it yet)
    compiled = openvino_model(loaded, protocol, precision)
    clips = torch.randn(batch, 3, protocol.frames, protocol.size, protocol.size)
    log.info("--engine auto: timing PyTorch and OpenVINO once on this machine for this model and batch")
    seconds = fastest_passes({"torch": fast, "openvino": compiled}, clips)
    winner = min(seconds, key=lambda engine: seconds[engine])
    record_measurement(key, {"engine": winner, **{f"{name}_seconds": value for name, value in seconds.items()}})
    log.info(
        "--engine auto: %s is faster here (PyTorch %.0f ms, OpenVINO %.0f ms per pass of %d clips); kept in %s",
        winner,
        seconds["torch"] * 1e3,
        seconds["openvino"] * 1e3,
        batch,
        tuning_file(),
    )
    return winner, compiled if winner == "openvino" else fast


def _converted(loaded: LoadedModel, protocol: ViewProtocol) -> bool:
    """Whether OpenVINO's model of `loaded` at `protocol`'s shape is in the cache, intact (no cache at
    all costs one `stat`, not the weights' sha256). A model that is no file here (made in memory) never is."""
    if not (cache_root().is_dir() and loaded.path.is_file()):
        return False
    try:
        return _ir_problem(ir_folder(loaded.path, protocol)) is None
    except OSError:  # the weights went away or cannot be read meanwhile: not measurable
        return False


def cache_root() -> Path:
    """Beside the converted zoo weights: `$HF_HOME/uniformer/openvino`."""
    return cache_home() / OPENVINO_FOLDER


def ir_folder(weights: Path, protocol: ViewProtocol, features: int | None = None) -> Path:
    """The cache folder of `weights` (by content) at `protocol`'s clip shape, computing logits or (with
    `features`) that layer's pooled output."""
    digest = weights_sha256(weights)
    output = "" if features is None else f"-features{features}"
    return cache_root() / f"{digest}-{protocol.frames}x{protocol.size}x{protocol.size}{output}"


class PooledFeatures(nn.Module):
    """A network whose output is `forward_features(layer)`, for engines that run one graph."""

    def __init__(self, model: nn.Module, layer: int) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(clips, self.layer)  # type: ignore[operator]


class OpenVinoModel(nn.Module):
    """A compiled OpenVINO model behind the `nn.Module` call the engines make: float32 clips
    `[B, 3, T, H, W]` in (any batch), float32 logits out, on the CPU."""

    def __init__(self, compiled: Any, loaded: LoadedModel, precision: str, folder: Path) -> None:
        super().__init__()
        self.compiled = compiled
        self.config = loaded.config
        self.labels = loaded.labels
        self.precision = precision  # explicit: no autocast around it (`device.inference_autocast`)
        self.folder = folder

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(clips.detach().to("cpu", torch.float32).numpy())
        # Copied in and out: the engine reuses its buffers on the next call.
        return torch.from_numpy(np.array(self.compiled(array, share_inputs=False)[0], dtype=np.float32))


def openvino_model(
    loaded: LoadedModel,
    protocol: ViewProtocol,
    precision: str = "auto",
    *,
    features: int | None = None,
    progress: ProgressCallback | None = None,
) -> OpenVinoModel:
    """`loaded` on OpenVINO at `precision` ("auto" is fp32) for clips of `protocol`'s shape, from the
    cache (converted first when it is missing or damaged, each step reported to `progress`); its output
    is the logits, or with `features` that layer's pooled output."""
    require_openvino()
    precision = "fp32" if precision == "auto" else precision
    check_precision(precision, torch.device("cpu"))
    folder = ir_folder(loaded.path, protocol, features)
    if _ir_problem(folder) is not None:
        # One process converts; another asking for the same folder meanwhile waits, then finds it built.
        with exclusive(build_lock(folder)):
            problem = _ir_problem(folder)
            if problem is not None:
                if problem != "missing":
                    log.warning("the OpenVINO model cached in %s %s: converting it again", folder, problem)
                _build(loaded, protocol, folder, features, progress)
    mark_used(folder / IR_FILES[0])
    options = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    started = time.perf_counter()
    core = openvino_core()
    xml = str(folder / IR_FILES[0])
    try:
        compiled = core.compile_model(xml, "CPU", {**options, "CACHE_DIR": str(folder / f"compiled-{precision}")})
    except RuntimeError as error:  # an unwritable blob cache costs only the compile time
        log.warning("OpenVINO could not use its compile cache in %s: %s", folder, first_line(error))
        try:
            compiled = core.compile_model(xml, "CPU", options)
        except RuntimeError as error:
            raise UniformerError(f"OpenVINO cannot compile {xml}: {first_line(error)}") from None
    log.debug("OpenVINO compiled %s at %s in %.2f s", folder.name, precision, time.perf_counter() - started)
    return OpenVinoModel(compiled, loaded, precision, folder)


def _ir_problem(folder: Path) -> str | None:
    """None when both IR files are there and are what was written; "missing", or what is wrong."""
    files = [folder / name for name in IR_FILES]
    if not all(file.is_file() for file in files):
        return "missing"
    for file in files:
        problem = integrity_problem(file)
        if problem is not None:
            return f"({file.name}) {problem}"
    return None


CONVERTING = "converting for OpenVINO (once)"
CONVERSION_STEPS = ("export to ONNX", "convert to IR", "save")


def _build(
    loaded: LoadedModel,
    protocol: ViewProtocol,
    folder: Path,
    features: int | None,
    progress: ProgressCallback | None = None,
) -> None:
    """Export, convert and save the IR into `folder`: written (with its sha256 records) in a scratch
    folder, then renamed into place whole; a damaged copy is moved aside first and removed with the
    scratch folder, compiled blobs and all. A process killed meanwhile leaves only its scratch folder,
    which the next build removes (`files.scratch_folder`). Each step is reported to `progress`."""
    modules = require_engine("openvino", "converting the model for --engine openvino")

    def step(done: int) -> None:
        detail = {"step": CONVERSION_STEPS[done]} if done < len(CONVERSION_STEPS) else {}
        notify(progress, Progress(CONVERTING, done, len(CONVERSION_STEPS), detail))

    log.info("converting %s to OpenVINO once (cached in %s)", loaded.path, folder)
    step(0)
    started = time.perf_counter()
    example = torch.randn(1, 3, protocol.frames, protocol.size, protocol.size)
    metadata = export_metadata(loaded, protocol)
    with staging(folder.parent) as scratch:
        onnx_path = scratch / "model.onnx"
        try:
            network = exportable(loaded.model)
            if features is not None:
                network = PooledFeatures(network, features)
            write_onnx(network, example, onnx_path, metadata, modules["onnx"])
            step(1)
            built = scratch / "built"
            built.mkdir()
            write_openvino(onnx_path, built / IR_FILES[0], metadata)
            step(2)
        except UniformerError:
            raise
        except Exception as error:  # the exporter's and converter's many failure types
            raise UniformerError(f"cannot convert {loaded.path} for OpenVINO: {first_line(error)}") from None
        for name in IR_FILES:  # recorded before the rename, which keeps each file's stat stamp
            record_integrity(built / name)
        try:
            if folder.exists():  # damaged: moved aside whole, removed with the scratch folder
                os.replace(folder, scratch / "damaged")
            os.replace(built, folder)
        except OSError as error:
            if _ir_problem(folder) is not None:  # else another process (a torchrun rank) just wrote it
                raise UniformerError(f"cannot write the OpenVINO cache {folder}: {error.strerror or error}") from None
            return
    step(len(CONVERSION_STEPS))
    log.info("converted for OpenVINO in %.1f s", time.perf_counter() - started)
