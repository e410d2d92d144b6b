"""Models as ONNX and OpenVINO files: the packages each format needs, the metadata a file carries, and
writing both formats. `uniformer export` (`engine.export`) and the OpenVINO engine's cache
(`engine.openvino_engine`) write their files through here."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from uniformer_cli.data.geometry import MEAN, STD
from uniformer_cli.engine.openvino_cache import openvino_core as openvino_core
from uniformer_cli.engine.openvino_cache import require_modules
from uniformer_cli.errors import UniformerError
from uniformer_cli.files import scratch_folder
from uniformer_cli.jsonio import dump_json
from uniformer_cli.models import exact_attention
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.settings import EXPORT_FORMATS
from uniformer_cli.version import __version__
from uniformer_cli.weights import LoadedModel

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "video", "logits"

# The packages each format needs (the ONNX exporter runs on onnx and onnxscript; OpenVINO converts the
# ONNX file), all in the extra of the format's name.
EXTRAS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino")}


def require_engine(format: str, purpose: str | None = None) -> dict[str, ModuleType]:
    """The Python packages that write and check `format`, or a one-line error naming the extra (and
    `purpose`, what needs them: `export --format FORMAT` by default)."""
    if format not in EXPORT_FORMATS:
        raise UniformerError(f"unknown export format {format!r} (use one of {', '.join(EXPORT_FORMATS)})")
    return require_modules(EXTRAS[format], format, purpose or f"export --format {format}")


def export_metadata(loaded: LoadedModel, protocol: ViewProtocol) -> dict[str, str]:
    """String key -> string value pairs (JSON where structured) stored in the exported file."""
    metadata = {
        "uniformer_version": __version__,
        "model": loaded.name,
        "input": f"{INPUT_NAME}: float32 [batch, 3, {protocol.frames}, {protocol.size}, {protocol.size}]",
        "output": f"{OUTPUT_NAME}: float32 [batch, {loaded.config.num_classes}]; score = softmax of the views' mean",
        "protocol": dump_json(protocol.as_dict(), sort_keys=True),
        "normalisation": dump_json({"scale": 1 / 255, "mean": MEAN, "std": STD}),
        "config": loaded.config.to_json(),
    }
    if loaded.labels is not None:
        metadata["labels"] = dump_json(loaded.labels)
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
    moved into place only once checked, so a failed export leaves nothing half-written, and the scratch
    folder of a killed one is removed by the next (`files.scratch_folder`)."""
    try:
        scratch = scratch_folder(directory, "uniformer-export")
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
        input=dump_json(metadata),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise UniformerError(f"OpenVINO cannot convert {onnx_path.name}: {lines[-1] if lines else done.returncode}")
