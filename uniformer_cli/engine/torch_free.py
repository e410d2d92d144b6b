"""`uniformer predict` without torch: a model OpenVINO already runs from the cache, fed numpy views.

Importing torch and building the PyTorch network are the largest fixed costs of a predict run, and a
model that `--engine openvino` (or `--engine auto`, having measured OpenVINO faster here) already
converted and compiled needs neither. So where everything such a run needs is in the cache, predict
takes this route (`plan`, then `open_predictor`), and nothing imports torch:

- the model: a zoo entry's converted copy (verified by its sha256 record, as the loader does) or a local
  safetensors file that records its architecture; its labels and protocol from the zoo table or the
  file's header (`weights.header`), with the command line's changes (`resolve_protocol`);
- the engine: `--engine openvino`, or `--engine auto` with this machine's measurement of that model shape
  and precision saying OpenVINO (`openvino_cache.measured_engines`, the record `auto` keeps);
- OpenVINO's IR of that weights file at that clip shape, intact by its sha256 records, and a compiled
  blob at that precision (`openvino_cache`), compiled from the blob in a fraction of a second;
- the views: `data.portable.views_from_frames` (the numpy code `uniformer export` writes as
  `preprocess.py`, held to the PyTorch views by tests/test_standalone.py) from the frames the package's
  decoders give, under the sampling rules of `data.sampling`;
- scores: the softmax of the mean of the views' logits, ranked, in the same records (`engine.results`).

Anything else (no cache yet, a damaged one, a Hub repository or URL, a `.pth` file, `--compile`, a GPU
or MPS machine, torchcodec, `--timeline` or a stream, a thread count this module cannot predict) takes
the usual route, which builds or repairs what is missing: `plan` returns None and says why at debug level
(`uniformer -v`), as it says which route ran.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniformer_cli.data import portable, storage
from uniformer_cli.data.paths import VideoSearch
from uniformer_cli.data.sampling import view_frame_indices
from uniformer_cli.data.video import check_decoder, open_video
from uniformer_cli.engine import openvino_cache
from uniformer_cli.engine.prefetch import FirstVideo, LoadedVideo
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.engine.results import (
    Prediction,
    PredictReport,
    VideoClassifier,
    non_finite,
    run_outcomes,
    top_classes,
)
from uniformer_cli.errors import UniformerError, VideoError
from uniformer_cli.events import ProgressCallback
from uniformer_cli.jsonio import load_json
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config, config_from_json
from uniformer_cli.protocol import ViewProtocol, resolve_protocol
from uniformer_cli.runtime import cpu_info, torch_threads
from uniformer_cli.weights.cache import integrity_problem, mark_used
from uniformer_cli.weights.header import CONFIG_KEY, LABELS_KEY, name_kind, read_metadata, stored_protocol
from uniformer_cli.zoo import DEFAULT_MODEL, AnyEntry, entry_labels, find_entry

log = logging.getLogger(__name__)

# Device files of the GPUs torch could pick for `--device auto` (CUDA, ROCm): with one there, auto may
# not mean the CPU, and only torch can tell.
ACCELERATOR_DEVICES = ("/dev/nvidiactl", "/dev/kfd")


class _Refused(Exception):
    """This request takes the usual route; the message says why."""


@dataclass(frozen=True)
class Plan:
    """A request this route can serve: the cached model and what is known of it."""

    weights: Path  # the weights file; its content names the cached model
    name: str  # how the records name the model (`LoadedModel.name`'s rule)
    labels: list[str] | None
    protocol: ViewProtocol
    precision: str  # "fp32" or "bf16"
    folder: Path  # the IR's cache folder
    threads: int


def plan(request: InferenceRequest, decoder: str = "auto") -> Plan | None:
    """The torch-free plan of `request` (module doc), or None (then said why at debug level)."""
    try:
        return _plan(request, decoder)
    except _Refused as reason:
        log.debug("predict route: PyTorch's (%s)", reason)
    except (UniformerError, OSError, ValueError) as error:  # reported by the usual route, if it matters
        log.debug("predict route: PyTorch's (%s)", error)
    return None


def _plan(request: InferenceRequest, decoder: str) -> Plan:
    if request.engine not in ("openvino", "auto"):
        raise _Refused(f"--engine {request.engine}")
    if request.compile:
        raise _Refused("--compile is torch.compile")
    if decoder == "torchcodec":
        raise _Refused("torchcodec decodes into torch tensors")
    check_decoder(decoder)
    if request.device != "cpu" and not (request.device == "auto" and _cpu_only()):
        raise _Refused(f"--device {request.device} may not be the CPU")
    if importlib.util.find_spec("openvino") is None:
        raise _Refused("OpenVINO is not installed")
    threads = torch_threads()
    if threads is None:
        raise _Refused("torch's thread count is not known without torch on this system")
    precision = "fp32" if request.precision == "auto" else request.precision
    if precision not in openvino_cache.HINTS:
        raise _Refused(f"precision {request.precision}")
    if precision == "bf16" and not (sys.platform == "linux" and cpu_info().flags and cpu_info().native_bf16):
        raise _Refused("bf16 support is checked by torch here")
    locate, name, labels, own, config = _model(request)
    protocol = resolve_protocol(own, request.protocol, name)
    if not openvino_cache.cache_root().is_dir():
        raise _Refused("no OpenVINO cache yet")
    if request.engine == "auto":
        _check_measured(config, protocol, request.precision, threads)
    weights = locate()
    folder = openvino_cache.ir_folder(weights, protocol)
    problem = openvino_cache.ir_problem(folder)
    if problem is not None:
        raise _Refused(f"the OpenVINO model of {weights} at {protocol.frames}x{protocol.size}: {problem}")
    if not any(openvino_cache.blob_folder(folder, precision).glob("*.blob")):
        raise _Refused(f"no compiled {precision} blob in {folder}")
    return Plan(weights, name, labels, protocol, precision, folder, threads)


def _cpu_only() -> bool:
    """Whether `--device auto` means the CPU here, by what torch's auto rule (CUDA, then MPS) would see:
    a CPU build of torch, or Linux without a GPU's device files."""
    try:
        if "+cpu" in importlib.metadata.version("torch"):
            return True
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform == "linux" and not any(os.path.exists(device) for device in ACCELERATOR_DEVICES)


def _model(
    request: InferenceRequest,
) -> tuple[Callable[[], Path], str, list[str] | None, ViewProtocol | None, ModelConfig | V2Config]:
    """How to find the weights file (called last: a zoo entry's asks the Hub cache), the model's name in
    records, its labels, own protocol and config (the rules of `weights.loader.resolve_model`, for the
    cases this route serves)."""
    if request.weights is None:
        name = request.model or DEFAULT_MODEL
        kind = name_kind(name)
        if kind == "hub":
            raise _Refused("a Hub repository is checked against the Hub by the usual route")
        if kind == "file":
            return _local_file(Path(name), None, name)
        entry = find_entry(name)
        if request.head_dim is not None and request.head_dim != entry.config.head_dim:
            raise _Refused("--head-dim differs from the entry's")
        locate = functools.partial(_zoo_copy, entry, request.revision)
        return locate, entry.name, entry_labels(entry), entry.protocol, entry.config
    if storage.is_url(request.weights):
        raise _Refused("weights at a URL are fetched by the usual route")
    if request.model is not None and name_kind(request.model) == "hub":
        raise _Refused("--model names a Hub repository")
    owner = find_entry(request.model) if request.model is not None else None
    return _local_file(Path(request.weights), owner, str(request.weights))


def _zoo_copy(entry: AnyEntry, revision: str | None) -> Path:
    """A zoo entry's converted copy in the cache, verified as the loader verifies it."""
    from uniformer_cli.weights import hub  # huggingface_hub loads only for zoo names

    converted = hub.download(entry, revision).converted
    problem = integrity_problem(converted) if converted.is_file() else "is not converted yet"
    if problem is not None:
        raise _Refused(f"the converted copy {converted} {problem}")
    mark_used(converted)
    return converted


def _local_file(
    path: Path, entry: AnyEntry | None, name: str
) -> tuple[Callable[[], Path], str, list[str] | None, ViewProtocol | None, ModelConfig | V2Config]:
    if path.suffix.lower() != ".safetensors":
        raise _Refused(f"{path.name} is not a safetensors file (its architecture is read by torch)")
    metadata = read_metadata(path)
    if CONFIG_KEY not in metadata:
        raise _Refused(f"{path} records no architecture")
    config = config_from_json(metadata[CONFIG_KEY])
    if entry is not None:
        if config != entry.config:
            raise _Refused(f"{path}'s architecture is checked against zoo entry {entry.name} by the loader")
        return lambda: path, entry.name, entry_labels(entry), entry.protocol, config
    labels = load_json(metadata[LABELS_KEY]) if LABELS_KEY in metadata else None
    names = isinstance(labels, list) and all(isinstance(label, str) for label in labels)
    if labels is not None and not (names and len(labels) <= config.num_classes):
        raise _Refused(f"{path}'s labels are checked by the loader")
    stored = stored_protocol(metadata, path)
    return lambda: path, name, labels, (ViewProtocol.from_dict(stored) if stored is not None else None), config


def _check_measured(config: Any, protocol: ViewProtocol, precision: str, threads: int) -> None:
    """`--engine auto` runs OpenVINO only where this machine's record says it was measured faster."""
    record = openvino_cache.tuning_file()
    if not record.is_file() or integrity_problem(record) is not None:
        raise _Refused("--engine auto has no intact measurement record here")
    key = openvino_cache.measurement_key(
        config, protocol, precision, openvino_cache.MEASURED_BATCH, threads, importlib.metadata.version("torch")
    )
    measured = openvino_cache.measured_engines().get(key)
    if measured is None or measured["engine"] != "openvino":
        raise _Refused("--engine auto: " + ("not measured here yet" if measured is None else "PyTorch measured faster"))


class ArrayPredictor(VideoClassifier):
    """`engine.predict.Predictor`'s file route on a compiled OpenVINO model and numpy views."""

    arrays = True

    def __init__(self, plan: Plan, compiled: Any, *, batch_size: int = 8, decoder: str = "auto") -> None:
        self.plan = plan
        self.compiled = compiled
        self.protocol = plan.protocol
        self.labels = plan.labels
        self.name = plan.name
        self.weights = str(plan.weights)
        self.batch_size = batch_size
        self.decoder = decoder

    def load(self, path: str | Path) -> LoadedVideo:
        started = time.perf_counter()
        with open_video(path, self.decoder) as video:
            unique, positions = view_frame_indices(self.protocol, video.num_frames)
            try:
                views = portable.views_from_frames(video.iter_frames(unique), positions, self.protocol, str(path))
            except ValueError as error:  # frames of mixed sizes, should a decoder let them through
                raise VideoError(str(error)) from None
            return LoadedVideo(views, video.num_frames, video.fps, time.perf_counter() - started)

    def logits(self, views: np.ndarray) -> np.ndarray:
        """float32 logits `[views, classes]`, `batch_size` views per inference; a `UniformerError` (that
        input's) when they are not finite."""
        outputs = [
            np.array(self.compiled(views[start : start + self.batch_size], share_inputs=False)[0], dtype=np.float32)
            for start in range(0, len(views), self.batch_size)
        ]
        scores = np.concatenate(outputs)
        if not np.isfinite(scores).all():
            raise UniformerError(non_finite(str(self.plan.weights)))
        return scores[:, : len(self.labels)] if self.labels else scores

    def probabilities(self, views: np.ndarray) -> np.ndarray:
        """Softmax of the mean of the views' logits: `[classes]`, float32."""
        mean = self.logits(views).mean(axis=0, dtype=np.float32)
        exponentials = np.exp(mean - mean.max())
        return exponentials / exponentials.sum(dtype=np.float32)

    def ranked(self, views: Any, top_k: int) -> list[Prediction]:
        probabilities = self.probabilities(views)
        order = np.argsort(-probabilities, kind="stable")[: min(top_k, probabilities.size)]
        return top_classes(probabilities[order].tolist(), order.tolist(), self.label)


def open_predictor(plan: Plan, *, batch_size: int = 8, decoder: str = "auto") -> ArrayPredictor | None:
    """The planned model compiled from its cached blob, or None where OpenVINO cannot compile it (then the
    usual route runs, and reports what it finds)."""
    started = time.perf_counter()
    try:
        compiled = openvino_cache.compile_cached(plan.folder, plan.precision, plan.threads)
    except UniformerError as error:
        log.debug("predict route: PyTorch's (%s)", error)
        return None
    mark_used(plan.folder / openvino_cache.IR_FILES[0])
    log.debug("predict route: torch-free (OpenVINO %s from the cache %s)", plan.precision, plan.folder)
    log.debug("model ready in %.2f s: compiled from the cache", time.perf_counter() - started)
    return ArrayPredictor(plan, compiled, batch_size=batch_size, decoder=decoder)


def run_predict(
    predictor: ArrayPredictor,
    videos: VideoSearch,
    *,
    top_k: int = 5,
    progress: ProgressCallback | None = None,
    first: FirstVideo | None = None,
) -> PredictReport:
    """`engine.predict.run_predict` of files and folders (no timeline) on this route."""
    report = PredictReport(predictor.name, predictor.weights, predictor.protocol.as_dict())
    return run_outcomes(report, videos, predictor.predict_many(videos.paths, top_k, first), progress)
