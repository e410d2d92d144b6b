"""OpenVINO's side of the engine cache, without torch: where a converted model lives and whether it is
intact (`ir_folder`, `ir_problem`), the compile from its cached blob (`compile_cached`), and this machine's
`--engine auto` measurements (`measured_engines`). `engine.openvino_engine` converts and measures
through here; the torch-free predict route (`engine.torch_free`) only reads, and runs what it finds.
The cache's layout is described in `engine.openvino_engine`'s module doc.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from uniformer_cli.errors import UniformerError, first_line
from uniformer_cli.files import atomic_write
from uniformer_cli.jsonio import read_json
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.runtime import cpu_info
from uniformer_cli.weights.cache import OPENVINO_FOLDER, cache_home, integrity_problem, record_integrity, weights_sha256

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision -> OpenVINO's INFERENCE_PRECISION_HINT
IR_FILES = ("model.xml", "model.bin")
RECORD_VERSION = 1
# `--engine auto` measures at most this many clips per pass (per-clip speed changes little beyond it).
MEASURED_BATCH = 4


def require_modules(names: tuple[str, ...], extra: str, purpose: str) -> dict[str, ModuleType]:
    """`names` imported, or a one-line error: `purpose` needs the first missing one, from `extra`."""
    modules = {}
    for name in names:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            raise UniformerError(f"{purpose} needs {name}: pip install 'uniformer[{extra}]'") from None
    return modules


def require_openvino() -> ModuleType:
    """The `openvino` module, or a one-line error giving the install command."""
    return require_modules(("openvino",), "openvino", "--engine openvino")["openvino"]


@functools.cache
def openvino_core() -> Any:
    """The process's one OpenVINO `Core`, never released. OpenVINO's CPU plugin (one per Core) installs
    an alternate signal stack on the thread that creates it and, when released, puts back the one it
    found and frees its own. Cores whose lifetimes overlap without nesting (A made, B made, A released,
    B released) leave the thread on A's freed stack: the next signal handled there (a SIGCHLD when a
    child process ends, with the handler torch's DataLoader installs) is written into freed memory, a
    segfault or a corrupted heap later. One Core that lives as long as the process cannot do that."""
    return importlib.import_module("openvino").Core()


def cache_root() -> Path:
    """Beside the converted zoo weights: `$HF_HOME/uniformer/openvino`."""
    return cache_home() / OPENVINO_FOLDER


def ir_folder(weights: Path, protocol: ViewProtocol, features: int | None = None) -> Path:
    """The cache folder of `weights` (by content) at `protocol`'s clip shape, computing logits or (with
    `features`) that layer's pooled output."""
    digest = weights_sha256(weights)
    output = "" if features is None else f"-features{features}"
    return cache_root() / f"{digest}-{protocol.frames}x{protocol.size}x{protocol.size}{output}"


def ir_problem(folder: Path) -> str | None:
    """None when both IR files are there and are what was written; "missing", or what is wrong."""
    files = [folder / name for name in IR_FILES]
    if not all(file.is_file() for file in files):
        return "missing"
    for file in files:
        problem = integrity_problem(file)
        if problem is not None:
            return f"({file.name}) {problem}"
    return None


def converted(weights: Path, protocol: ViewProtocol) -> bool:
    """Whether OpenVINO's model of the `weights` file at `protocol`'s shape is in the cache, intact (no
    cache at all costs one `stat`, not the weights' sha256). A model that is no file here never is."""
    if not (cache_root().is_dir() and weights.is_file()):
        return False
    try:
        return ir_problem(ir_folder(weights, protocol)) is None
    except OSError:  # the weights went away or cannot be read meanwhile
        return False


def blob_folder(folder: Path, precision: str) -> Path:
    """Where OpenVINO keeps the compiled blobs of the model in `folder` at `precision` (its CACHE_DIR)."""
    return folder / f"compiled-{precision}"


def compile_options(precision: str, threads: int) -> dict[str, Any]:
    """The compile options of every OpenVINO model the engines run; the blob cache is keyed by them."""
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }


def compile_cached(folder: Path, precision: str, threads: int) -> Any:
    """The model in `folder` compiled for the CPU at `precision` with `threads` threads, from its cached
    blob when there is one (else compiled and the blob kept); an unwritable blob cache costs only the
    compile time."""
    options: Mapping[str, Any] = compile_options(precision, threads)
    started = time.perf_counter()
    core = openvino_core()
    xml = str(folder / IR_FILES[0])
    try:
        compiled = core.compile_model(xml, "CPU", {**options, "CACHE_DIR": str(blob_folder(folder, precision))})
    except RuntimeError as error:
        log.warning("OpenVINO could not use its compile cache in %s: %s", folder, first_line(error))
        try:
            compiled = core.compile_model(xml, "CPU", dict(options))
        except RuntimeError as error:
            raise UniformerError(f"OpenVINO cannot compile {xml}: {first_line(error)}") from None
    log.debug("OpenVINO compiled %s at %s in %.2f s", folder.name, precision, time.perf_counter() - started)
    return compiled


def tuning_file() -> Path:
    """This machine's record of `--engine auto` measurements, beside the OpenVINO cache."""
    return cache_root().parent / "tuning" / f"engines-{cpu_info().fingerprint()}.json"


def measurement_key(
    config: object, protocol: ViewProtocol, precision: str, batch: int, threads: int, torch_version: str
) -> str:
    """What a measurement holds for: the architecture (`config`, a config dataclass; not the weights'
    values), clip shape, precision, batch, threads, and the engines' versions."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]  # type: ignore[call-overload]
    shape = f"{protocol.frames}x{protocol.size}x{protocol.size}"
    versions = f"torch {torch_version}, openvino {require_openvino().__version__}"
    return f"{digest} {shape} {precision} batch {batch} threads {threads} ({versions})"


def measured_engines() -> dict[str, dict[str, Any]]:
    """This machine's measurements by `measurement_key`; none where the record is missing, damaged
    (sha256 sidecar) or unreadable (then measured again)."""
    path = tuning_file()
    if not path.is_file():
        return {}
    problem = integrity_problem(path)
    if problem is None:
        try:
            record = read_json(path)
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
