"""`uniformer export`: a model as deployment files (ONNX, OpenVINO IR) that need nothing of this package.

The file takes float32 `[batch, 3, T, H, W]` clips, normalised and cropped as the test protocol says,
with a dynamic batch axis, and returns `[batch, classes]` logits. It carries, as metadata (ONNX
`metadata_props`, OpenVINO `rt_info` under `uniformer`), everything a deployment needs to preprocess
and label: the protocol (frames, sampling, stride, views, size, channel order), the normalisation
(`(x / 255 - mean) / std` on every channel), the class names and the model config. Each file is run
once after writing, by the engine it is meant for, on random clips of two batch sizes, and compared
with PyTorch's logits: the largest difference is reported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from uniformer_cli import __version__
from uniformer_cli.data.transforms import MEAN, STD
from uniformer_cli.data.views import ProtocolOverrides, ViewProtocol, resolve_protocol
from uniformer_cli.errors import UniformerError, first_line
from uniformer_cli.models import exact_attention
from uniformer_cli.weights import LoadedModel, resolve_model

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")
INPUT_NAME, OUTPUT_NAME = "video", "logits"
# Batch sizes of the check after writing: two, so that a batch axis fixed by mistake fails it.
CHECK_BATCHES = (1, 3)
# The packages each format needs (the ONNX exporter runs on onnx and onnxscript; OpenVINO converts the
# ONNX file), all in the extra of the format's name.
EXTRAS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino")}


@dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and how well the file reproduces PyTorch."""

    model: str  # the zoo name, or the weights path as given
    weights: Path  # the file that was loaded
    path: Path  # the model file: DIR/NAME.onnx, or DIR/NAME.xml (weights beside it in NAME.bin)
    files: list[Path]  # every file written
    format: str
    input_shape: tuple[str | int, ...]  # ("batch", 3, T, H, W)
    max_error: float  # largest |engine - PyTorch| logit over the check clips
    logit_std: float  # spread of PyTorch's logits on them, to read the error against
    metadata: dict[str, str]


def require_engine(format: str, purpose: str | None = None) -> dict[str, ModuleType]:
    """The Python packages that write and check `format`, or a one-line error naming the extra (and
    `purpose`, what needs them: `export --format FORMAT` by default)."""
    if format not in FORMATS:
        raise UniformerError(f"unknown export format {format!r} (use one of {', '.join(FORMATS)})")
    return require_modules(EXTRAS[format], format, purpose or f"export --format {format}")


def require_modules(names: tuple[str, ...], extra: str, purpose: str) -> dict[str, ModuleType]:
    """`names` imported, or a one-line error: `purpose` needs the first missing one, from `extra`."""
    modules = {}
    for name in names:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            raise UniformerError(f"{purpose} needs {name}: pip install 'uniformer[{extra}]'") from None
    return modules


def export_metadata(loaded: LoadedModel, protocol: ViewProtocol) -> dict[str, str]:
    """String key -> string value pairs (JSON where structured) stored in the exported file."""
    metadata = {
        "uniformer_version": __version__,
        "model": loaded.entry.name if loaded.entry else loaded.path.name,
        "input": f"{INPUT_NAME}: float32 [batch, 3, {protocol.frames}, {protocol.size}, {protocol.size}]",
        "output": f"{OUTPUT_NAME}: float32 [batch, {loaded.config.num_classes}]; score = softmax of the views' mean",
        "protocol": json.dumps(protocol.as_dict(), sort_keys=True),
        "normalisation": json.dumps({"scale": 1 / 255, "mean": MEAN, "std": STD}),
        "config": loaded.config.to_json(),
    }
    if loaded.labels is not None:
        metadata["labels"] = json.dumps(loaded.labels)
    return metadata


def exportable(model: nn.Module) -> nn.Module:
    """The model as the exporters should trace it: eval mode, contiguous NCTHW feature maps (no layout
    copies in the graph), fused attention (SDPA; the engines fuse it again), BatchNorm left for the
    engines to fold."""
    model.eval()
    exact_attention(model, enabled=False)
    model.channels_last = False  # type: ignore[assignment]
    return model


@contextlib.contextmanager
def staging(directory: Path) -> Iterator[Path]:
    """A scratch folder inside `directory` (created), removed afterwards: files are written there and
    moved into place only once checked, so a failed export leaves nothing half-written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".uniformer-export-", dir=directory))
    except OSError as error:
        raise UniformerError(f"cannot write to {directory}: {error.strerror or error}") from None
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str], onnx: Any) -> None:
    """ONNX through `torch.export` (the dynamo exporter), one self-contained file, metadata attached."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter reports each step at WARNING level and prints progress: keep them for --verbose."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(None), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notices of torch's own internals
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def onnx_runner(path: Path, modules: dict[str, ModuleType]) -> Any:
    runtime = modules["onnxruntime"]
    options = runtime.SessionOptions()
    options.log_severity_level = 3
    session = runtime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda clips: session.run([OUTPUT_NAME], {INPUT_NAME: clips})[0]


# OpenVINO converts ONNX in a child interpreter. In OpenVINO 2026.4, a process that has converted an ONNX
# model (its ONNX frontend) and then compiles a model for the CPU corrupts its malloc heap: glibc's malloc
# check (`GLIBC_TUNABLES=glibc.malloc.check=3` with libc_malloc_debug) aborts on "free(): invalid next
# size" in most such processes, with or without torch and onnx loaded, and never after a conversion alone
# or a compile alone; unchecked, the process crashes later at a random place. The child imports only
# openvino and reads the metadata from stdin.
_CONVERT = """
import json, sys
import openvino as ov
source, target = sys.argv[1:3]
model = ov.convert_model(source)
for key, value in json.load(sys.stdin).items():
    model.set_rt_info(value, ["uniformer", key])
ov.save_model(model, target, compress_to_fp16=False)
"""


def write_openvino(onnx_path: Path, path: Path, metadata: dict[str, str]) -> None:
    """OpenVINO IR (`.xml` graph + `.bin` weights, kept in float32) converted from the checked ONNX file,
    by a child process (see `_CONVERT`)."""
    done = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(onnx_path), str(path)],
        input=json.dumps(metadata),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise UniformerError(f"OpenVINO cannot convert {onnx_path.name}: {lines[-1] if lines else done.returncode}")


@functools.cache
def openvino_core() -> Any:
    """The process's one OpenVINO `Core`, never released. OpenVINO's CPU plugin (one per Core) installs
    an alternate signal stack on the thread that creates it and, when released, puts back the one it
    found and frees its own. Cores whose lifetimes overlap without nesting (A made, B made, A released,
    B released) leave the thread on A's freed stack: the next signal handled there (a SIGCHLD when a
    child process ends, with the handler torch's DataLoader installs) is written into freed memory, a
    segfault or a corrupted heap later. One Core that lives as long as the process cannot do that."""
    return importlib.import_module("openvino").Core()


def openvino_runner(path: Path, modules: dict[str, ModuleType]) -> Any:
    compiled = openvino_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda clips: compiled(clips, share_inputs=False)[0]


def compare(model: nn.Module, run: Any, shape: tuple[int, ...]) -> tuple[float, float]:
    """Largest |engine - PyTorch| logit and the logits' std, over random clips of each `CHECK_BATCHES`."""
    generator = torch.Generator().manual_seed(0)
    errors, spreads = [], []
    for batch in CHECK_BATCHES:
        clips = torch.randn((batch, *shape[1:]), generator=generator)
        with torch.inference_mode():
            expected = model(clips).float()
        try:
            got = torch.from_numpy(run(clips.numpy()))
        except Exception as error:  # the engines raise their own exception types
            raise UniformerError(f"the exported file does not run at batch {batch}: {error}") from None
        if got.shape != expected.shape:
            raise UniformerError(f"the exported file returns {tuple(got.shape)} for {tuple(expected.shape)} logits")
        errors.append(float((got - expected).abs().max()))
        spreads.append(float(expected.std()))
    return max(errors), min(spreads)


def export_model(
    name_or_path: str | Path,
    format: str,
    directory: str | Path,
    *,
    zoo_name: str | None = None,
    revision: str | None = None,
    head_dim: int | None = None,
    overrides: ProtocolOverrides | None = None,
) -> ExportReport:
    """Write `name_or_path` (zoo name or weights file) as `format` into `directory`, checked (module doc).

    The clip shape is the model's test protocol (changed by `overrides`; a file without one needs
    `--frames` with `--stride` or `--sampling`, as for predict). The file is named after the model.
    """
    modules = require_engine(format)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UniformerError(f"{directory} exists and is not a folder")
    loaded = resolve_model(name_or_path, device="cpu", revision=revision, head_dim=head_dim, zoo_name=zoo_name)
    protocol = resolve_protocol(loaded.protocol, overrides or ProtocolOverrides(), str(loaded.path))
    model = exportable(loaded.model)
    shape = (2, 3, protocol.frames, protocol.size, protocol.size)
    metadata = export_metadata(loaded, protocol)
    stem = (loaded.entry.name if loaded.entry else loaded.path.stem).replace("/", "_")
    suffix = ".onnx" if format == "onnx" else ".xml"
    target = directory / f"{stem}{suffix}"
    with staging(directory) as scratch:
        onnx_path = scratch / f"{stem}.onnx"
        log.info("exporting %s at %s to ONNX", stem, shape)
        try:
            write_onnx(model, torch.randn(shape), onnx_path, metadata, modules["onnx"])
        except UniformerError:
            raise
        except Exception as error:  # the exporter's many failure types: one line, the first of its message
            raise UniformerError(f"cannot export {stem} to ONNX: {first_line(error)}") from None
        written = [onnx_path]
        if format == "openvino":
            xml_path = scratch / f"{stem}.xml"
            write_openvino(onnx_path, xml_path, metadata)
            written = [xml_path, xml_path.with_suffix(".bin")]
            run = openvino_runner(xml_path, modules)
        else:
            run = onnx_runner(onnx_path, modules)
        max_error, logit_std = compare(model, run, shape)
        try:
            for file in written:
                file.replace(directory / file.name)
        except OSError as error:
            raise UniformerError(f"cannot write to {directory}: {error.strerror or error}") from None
    name = loaded.entry.name if loaded.entry else str(name_or_path)
    files = [directory / file.name for file in written]
    return ExportReport(name, loaded.path, target, files, format, ("batch", *shape[1:]), max_error, logit_std, metadata)
