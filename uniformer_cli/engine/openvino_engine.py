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

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uniformer_cli.engine import openvino_cache
from uniformer_cli.engine.interchange import (
    export_metadata,
    exportable,
    require_engine,
    staging,
    write_onnx,
    write_openvino,
)
from uniformer_cli.engine.openvino_cache import (
    IR_FILES,
    MEASURED_BATCH,
    cache_root,
    compile_cached,
    ir_folder,
    ir_problem,
    measured_engines,
    record_measurement,
    require_openvino,
    tuning_file,
)
from uniformer_cli.errors import UniformerError, first_line
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import exclusive
from uniformer_cli.models.fast import check_precision
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.settings import ENGINES
from uniformer_cli.weights import LoadedModel
from uniformer_cli.weights.cache import build_lock, mark_used, record_integrity
from uniformer_cli.weights.cache import weights_sha256 as weights_sha256

# Names of the cache's pieces, importable from here as before (`engine.openvino_cache` holds them).
__all__ = ["IR_FILES", "cache_root", "ir_folder", "measured_engines", "record_measurement", "tuning_file"]

log = logging.getLogger(__name__)


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


WARMUP, ROUNDS = 2, 3


def measurement_key(loaded: LoadedModel, protocol: ViewProtocol, precision: str, batch: int) -> str:
    """`openvino_cache.measurement_key` of a loaded model in this process (its torch threads and version)."""
    return openvino_cache.measurement_key(
        loaded.config, protocol, precision, batch, torch.get_num_threads(), torch.__version__
    )


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
    converted = features is None and openvino_cache.converted(loaded.path, protocol)
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
    if ir_problem(folder) is not None:
        # One process converts; another asking for the same folder meanwhile waits, then finds it built.
        with exclusive(build_lock(folder)):
            problem = ir_problem(folder)
            if problem is not None:
                if problem != "missing":
                    log.warning("the OpenVINO model cached in %s %s: converting it again", folder, problem)
                _build(loaded, protocol, folder, features, progress)
    mark_used(folder / IR_FILES[0])
    compiled = compile_cached(folder, precision, torch.get_num_threads())
    return OpenVinoModel(compiled, loaded, precision, folder)


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
            if ir_problem(folder) is not None:  # else another process (a torchrun rank) just wrote it
                raise UniformerError(f"cannot write the OpenVINO cache {folder}: {error.strerror or error}") from None
            return
    step(len(CONVERSION_STEPS))
    log.info("converted for OpenVINO in %.1f s", time.perf_counter() - started)
