"""`uniformer export`: a model as deployment files (ONNX, OpenVINO IR) that need nothing of this package.

The file takes float32 `[batch, 3, T, H, W]` clips, normalised and cropped as the test protocol says,
with a dynamic batch axis, and returns `[batch, classes]` logits. It carries, as metadata (ONNX
`metadata_props`, OpenVINO `rt_info` under `uniformer`), everything a deployment needs to preprocess
and label: the protocol (frames, sampling, stride, views, size, channel order), the normalisation
(`(x / 255 - mean) / std` on every channel), the class names and the model config. Each file is run
once after writing, by the engine it is meant for, on random clips of two batch sizes, and compared
with PyTorch's logits: the largest difference is reported.

Beside it go `preprocess.py` (`engine.standalone`: the protocol computed with numpy and PyAV alone) and
a model card, `README.md` (`engine.cards.export_card`). `-o` names the folder, or the model file itself
when it ends in the format's suffix (`MODEL_SUFFIXES`).
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from uniformer_cli.engine.cards import export_card
from uniformer_cli.engine.inference import open_model
from uniformer_cli.engine.interchange import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_metadata,
    exportable,
    openvino_core,
    require_engine,
    staging,
    write_onnx,
    write_openvino,
)
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.engine.standalone import preprocess_source
from uniformer_cli.errors import UniformerError, first_line
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import refuse_to_replace, write_all_with_fallback

log = logging.getLogger(__name__)

# Batch sizes of the check after writing: two, so that a batch axis fixed by mistake fails it.
CHECK_BATCHES = (1, 3)
# The model file's suffix per format (OpenVINO's weights go beside it, in the same name's `.bin`).
MODEL_SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}
PREPROCESS_FILE, CARD_FILE = "preprocess.py", "README.md"


@dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and how well the file reproduces PyTorch."""

    model: str  # the zoo name, or the weights path as given
    weights: Path  # the file that was loaded
    path: Path  # the model file: DIR/NAME.onnx, or DIR/NAME.xml (weights beside it in NAME.bin)
    files: list[Path]  # every file written: the model's, then preprocess.py and README.md
    format: str
    input_shape: tuple[str | int, ...]  # ("batch", 3, T, H, W)
    max_error: float  # largest |engine - PyTorch| logit over the check clips
    logit_std: float  # spread of PyTorch's logits on them, to read the error against
    metadata: dict[str, str]


def onnx_runner(path: Path, modules: dict[str, ModuleType]) -> Any:
    runtime = modules["onnxruntime"]
    options = runtime.SessionOptions()
    options.log_severity_level = 3
    session = runtime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda clips: session.run([OUTPUT_NAME], {INPUT_NAME: clips})[0]


def openvino_runner(path: Path, modules: dict[str, ModuleType]) -> Any:
    compiled = openvino_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda clips: compiled(clips, share_inputs=False)[0]


def _copy(source: Path, temporary: Path) -> None:
    shutil.copyfile(source, temporary)


def compare(
    model: nn.Module, run: Any, shape: tuple[int, ...], on_batch: Callable[[int], object] | None = None
) -> tuple[float, float]:
    """Largest |engine - PyTorch| logit and the logits' std, over random clips of each `CHECK_BATCHES`
    (`on_batch` hears of each batch size as its check starts)."""
    generator = torch.Generator().manual_seed(0)
    errors, spreads = [], []
    for batch in CHECK_BATCHES:
        if on_batch is not None:
            on_batch(batch)
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


def export_target(format: str, output: str | Path, default_stem: str) -> tuple[Path, str]:
    """The folder and file stem `-o OUTPUT` names: the model file itself when OUTPUT ends in the format's
    suffix (`deploy/model.onnx`), else the folder, where the file is named `default_stem`."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix == MODEL_SUFFIXES[format]:
        return output.parent, output.stem
    others = {other: name for name, other in MODEL_SUFFIXES.items() if name != format}
    if suffix in others:
        raise UniformerError(
            f"-o {output} names a file of format {others[suffix]}, but --format {format} writes "
            f"{MODEL_SUFFIXES[format]}: name a folder, or a {MODEL_SUFFIXES[format]} file"
        )
    return output, default_stem


def export_model(
    request: InferenceRequest,
    format: str,
    output: str | Path,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> ExportReport:
    """Write `request`'s model as `format` to `output` (a folder, or the model file: `export_target`), checked,
    with `preprocess.py` and `README.md` beside it (module doc). A model file already there is replaced only
    with `force`. Each step is reported to `progress`.

    The clip shape is the model's test protocol (with the request's changes; a file without one needs
    `--frames` with `--stride` or `--sampling`, as for predict). In a folder the file is named after the model.
    """
    modules = require_engine(format)
    directory, stem = export_target(format, output, "")
    if directory.exists() and not directory.is_dir():
        raise UniformerError(f"{directory} exists and is not a folder")
    steps = ["load the model", "export to ONNX", *(["convert to OpenVINO"] if format == "openvino" else [])]
    steps += [f"check at batch {batch}" for batch in CHECK_BATCHES] + ["write"]

    def step(name: str | None) -> None:
        done = len(steps) if name is None else steps.index(name)
        notify(progress, Progress("exporting", done, len(steps), {"step": name} if name else {}))

    step("load the model")
    opened = open_model(request, device=torch.device("cpu"), exact=True, progress=progress)  # traced exact
    loaded, protocol = opened.loaded, opened.protocol
    model = exportable(loaded.model)
    shape = (2, 3, protocol.frames, protocol.size, protocol.size)
    metadata = export_metadata(loaded, protocol)
    stem = stem or (loaded.entry.name if loaded.entry else loaded.path.stem).replace("/", "_")
    suffix = MODEL_SUFFIXES[format]
    target = directory / f"{stem}{suffix}"
    refuse_to_replace([target, target.with_suffix(".bin")] if format == "openvino" else [target], force, "the export")
    with staging(directory) as scratch:
        onnx_path = scratch / f"{stem}.onnx"
        log.info("exporting %s at %s to ONNX", stem, shape)
        step("export to ONNX")
        try:
            write_onnx(model, torch.randn(shape), onnx_path, metadata, modules["onnx"])
        except UniformerError:
            raise
        except Exception as error:  # the exporter's many failure types: one line, the first of its message
            raise UniformerError(f"cannot export {stem} to ONNX: {first_line(error)}") from None
        written = [onnx_path]
        if format == "openvino":
            step("convert to OpenVINO")
            xml_path = scratch / f"{stem}.xml"
            write_openvino(onnx_path, xml_path, metadata)
            written = [xml_path, xml_path.with_suffix(".bin")]
            run = openvino_runner(xml_path, modules)
        else:
            run = onnx_runner(onnx_path, modules)
        max_error, logit_std = compare(model, run, shape, on_batch=lambda batch: step(f"check at batch {batch}"))
        companions = {
            PREPROCESS_FILE: preprocess_source(protocol, loaded.name),
            CARD_FILE: export_card(loaded, protocol, target.name, format, metadata),
        }
        for name, text in companions.items():
            (scratch / name).write_text(text, encoding="utf-8")
            _note_replaced(directory / name, text)
            written.append(scratch / name)
        # Copied into place from the scratch folder (atomically, each); files that cannot be placed there
        # go to the temporary folder together, and the error line says where.
        copies = [(directory / file.name, functools.partial(_copy, file)) for file in written]
        step("write")
        write_all_with_fallback(copies, "exported model")
        step(None)
    files = [directory / file.name for file in written]
    return ExportReport(
        loaded.name, loaded.path, target, files, format, ("batch", *shape[1:]), max_error, logit_std, metadata
    )


def _note_replaced(path: Path, text: str) -> None:
    """One folder holds one model's companions: say so when another model's are replaced."""
    try:
        if path.read_text(encoding="utf-8") != text:
            log.warning(
                "replacing %s, written for another model or protocol (export each model to its own folder)", path
            )
    except (OSError, UnicodeDecodeError):
        return
