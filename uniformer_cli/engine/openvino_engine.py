"""OpenVINO as the inference engine of predict and eval (`--engine openvino`, the `openvino` extra).

Chosen by measurement (benchmarks/README.md, 2 AVX512-BF16/AMX cores): with this round's fast path,
PyTorch's own bf16 runs at 0.90x OpenVINO's bf16 speed at 4 clips per pass (predict's usual batch of
views) and 0.96x at 8 (eval's default batch), and wins end to end, since importing and compiling
OpenVINO cost ~0.3 s per process (one clip 2.49 vs 2.58 s, eight clips 7.08 vs 7.36 s) and its first run
converts the model (~8 s for S16). So `--engine auto` (the default) stays on PyTorch; OpenVINO is the
choice for long runs of one clip per pass (a timeline or a live stream: 1.3x per pass at batch 1).

The model is exported to ONNX (`engine.export`), converted to OpenVINO IR once and kept on disk beside
the converted zoo weights, under `$HF_HOME/uniformer/openvino/`:

    <weights sha256>-<T>x<H>x<W>/      one folder per weights content and clip shape
        model.xml, model.bin           the float32 IR, each with a `.sha256.json` sidecar: checked by
                                       one `stat` per run, converted again when damaged
        compiled-fp32/, compiled-bf16/ OpenVINO's compiled blobs (its CACHE_DIR), one folder per
                                       precision; OpenVINO keys each blob by the IR file and the
                                       compile options, and compiles again when one cannot be read

The weights' sha256 comes from `weights_sha256`, by path and stat stamp: a file is hashed once, not on
every run.

So a cached model costs a compile from its blob (a fraction of a second), not an export.
"""

from __future__ import annotations

import logging
import os
import time
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
from uniformer_cli.files import exclusive
from uniformer_cli.models.fast import check_precision
from uniformer_cli.protocol import ViewProtocol
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
    """The engine to run, "torch" or "openvino", for `engine` ("auto" decides, see the module doc); a
    one-line error for an engine that cannot run what was asked. Checked before anything is loaded."""
    if engine not in ENGINES:
        raise UniformerError(f"unknown engine {engine!r} (use one of {', '.join(ENGINES)})")
    if engine == "openvino":
        if device.type != "cpu":
            raise UniformerError(f"--engine openvino runs on the CPU: drop --device {device.type} or the --engine")
        if compile:
            raise UniformerError("--compile is torch.compile: it does not apply to --engine openvino")
        require_openvino()
        return "openvino"
    # torch, and auto: PyTorch, the faster engine end to end at the batches predict and eval run (see the
    # module doc).
    return "torch"


def cache_root() -> Path:
    """Beside the converted zoo weights: `$HF_HOME/uniformer/openvino`."""
    return cache_home() / OPENVINO_FOLDER


def ir_folder(weights: Path, protocol: ViewProtocol, features: int | None = None) -> Path:
    """The cache folder of `weights` (by content) at `protocol`'s clip shape, computing logits or (with
    `features`) that stage's pooled map."""
    digest = weights_sha256(weights)
    output = "" if features is None else f"-features{features}"
    return cache_root() / f"{digest}-{protocol.frames}x{protocol.size}x{protocol.size}{output}"


class PooledFeatures(nn.Module):
    """A network whose output is `forward_features(stage)`, for engines that run one graph."""

    def __init__(self, model: nn.Module, stage: int) -> None:
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(clips, stage=self.stage)  # type: ignore[operator]


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
    is the logits, or with `features` that stage's pooled map."""
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
