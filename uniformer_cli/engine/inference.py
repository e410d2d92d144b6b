"""Opening a model for inference: the one door of predict, eval, features, explain and export.

An `InferenceRequest` (`engine.request`, readable without torch) names the weights (a zoo name, or a
file and the zoo entry it belongs to), how to run them (device, precision, engine, `torch.compile`) and
the changes asked of the test protocol. `open_model` checks the run settings before anything is
downloaded, loads the weights (`weights.resolve_model`), resolves the protocol the model runs with, and
makes the network ready:

- the fast inference path at the requested precision (`models.fast.optimize_for_inference`), or
  OpenVINO's compiled model (`engine.openvino_engine`), both scoring float32 clips into float32 outputs;
- or the exact model as loaded (`exact=True`: explain needs its gradients, export traces it).

Every command names the model the same way in its records (`LoadedModel.name`, docs/OUTPUT.md). Every
family (UniFormer, its light models, UniFormerV2) opens the same way: the commands ask the network what
they need of it (`models.network.VideoNetwork`). What was chosen, and why, is logged at debug level
(`uniformer -v`): the weights, the protocol and where it came from, the device, precision, engine and
threads, and how long each step took.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn

from uniformer_cli.data import storage
from uniformer_cli.device import batched_logits, select_device
from uniformer_cli.engine.openvino_engine import auto_model, choose_engine, openvino_model
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.errors import UniformerError
from uniformer_cli.events import ProgressCallback
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config
from uniformer_cli.models.fast import check_precision, optimize_for_inference
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.protocol import ViewProtocol, check_clip_size, resolve_protocol
from uniformer_cli.weights import LoadedModel, resolve_model
from uniformer_cli.weights.header import is_weights_path
from uniformer_cli.weights.loader import named_entry
from uniformer_cli.zoo import DEFAULT_MODEL, ZooEntry
from uniformer_cli.zoo.v2 import V2ZooEntry

log = logging.getLogger(__name__)

# `features=LAST_LAYER`: the network's last layer, the vector its classifier reads (`VideoNetwork`).
LAST_LAYER = -1


@dataclass
class InferenceModel:
    """A model ready to score clips of its protocol's shape, with what is known about it.

    `network` maps float32 clips `[B, 3, T, S, S]` to float32 outputs: logits, or with `features` the
    pooled output of that layer (`forward_features`). `outputs` runs it in batches on `device`.
    """

    loaded: LoadedModel
    network: nn.Module
    protocol: ViewProtocol
    device: torch.device
    engine: str  # "torch" or "openvino"
    precision: str
    features: int | None = None

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def weights(self) -> str:
        return str(self.loaded.path)

    @property
    def labels(self) -> list[str] | None:
        return self.loaded.labels

    @property
    def entry(self) -> ZooEntry | V2ZooEntry | None:
        return self.loaded.entry

    @property
    def config(self) -> ModelConfig | V2Config:
        return self.loaded.config

    def outputs(self, clips: torch.Tensor, batch_size: int) -> torch.Tensor:
        """float32 outputs of `clips` on the CPU, `batch_size` clips per forward pass: `[N, classes]` logits,
        or `[N, D]` features."""
        forward = None
        if self.features is not None and self.engine == "torch":
            forward = functools.partial(cast(VideoNetwork, self.network).forward_features, layer=self.features)
        return batched_logits(self.network, clips, self.device, batch_size, forward=forward)


def open_model(
    request: InferenceRequest,
    *,
    device: torch.device | None = None,
    default_model: str | None = DEFAULT_MODEL,
    fallback_protocol: ViewProtocol | None = None,
    features: int | None = None,
    exact: bool = False,
    progress: ProgressCallback | None = None,
) -> InferenceModel:
    """Open `request`'s model for inference (module doc).

    `device` overrides `request.device` (a torchrun session's device); `default_model` is what runs when
    the request names none (None: naming one is required); `fallback_protocol` is used when the model
    carries no protocol of its own (eval: the dataset's zoo model's); `features` makes the outputs that
    layer's pooled output instead of logits (1..the network's `feature_layers`; `LAST_LAYER`: the last,
    what the classifier reads); `exact` keeps the model as loaded (no fast path, no engine). `progress`
    hears of downloads and of a first OpenVINO conversion.
    """
    started = time.perf_counter()
    target = device if device is not None else select_device(request.device)
    engine = "torch"
    if not exact:
        check_precision(request.precision, target)
        engine = choose_engine(request.engine, request.precision, target, request.compile)
    if features is not None and features < 1 and features != LAST_LAYER:
        raise UniformerError(f"--layer must be 1 or more (a layer of the network), got {features}")
    if request.weights is not None:
        loaded = resolve_model(
            request.weights,
            device=target,
            revision=request.revision,
            head_dim=request.head_dim,
            zoo_name=request.model,
            progress=progress,
        )
    else:
        name = request.model or default_model
        if name is None:
            raise UniformerError("no model given: pass --model NAME or --weights FILE")
        loaded = resolve_model(
            name, device=target, revision=request.revision, head_dim=request.head_dim, progress=progress
        )
    weights_loaded = time.perf_counter()
    protocol = resolve_protocol(loaded.protocol or fallback_protocol, request.protocol, str(loaded.path))
    check_clip_size(loaded.model.clip_size, protocol.size, loaded.name)
    if features is not None:
        layers = loaded.model.feature_layers
        features = layers if features == LAST_LAYER else features
        if features > layers:
            raise UniformerError(
                f"--layer must be 1..{layers} for {loaded.name} ({layers} is what its classifier reads), got {features}"
            )

    def pytorch() -> nn.Module:
        return optimize_for_inference(loaded.model, inplace=True, compile=request.compile, precision=request.precision)

    network: nn.Module
    if exact:
        network = loaded.model
    elif engine == "openvino":
        network = openvino_model(loaded, protocol, request.precision, features=features, progress=progress)
    elif engine == "auto":  # the engine measured faster on this machine (`openvino_engine.auto_model`)
        engine, network = auto_model(loaded, protocol, request.precision, pytorch, features=features)
    else:
        network = pytorch()
    opened = InferenceModel(loaded, network, protocol, target, engine, request.precision, features)
    _log_choices(opened, request, fallback_protocol, exact)
    log.debug(
        "model ready in %.2f s: weights found and loaded %.2f s, %s %.2f s",
        time.perf_counter() - started,
        weights_loaded - started,
        "kept exact (no fast path)" if exact else f"prepared for {engine}",
        time.perf_counter() - weights_loaded,
    )
    return opened


def _log_choices(opened: InferenceModel, request: InferenceRequest, fallback: ViewProtocol | None, exact: bool) -> None:
    """Debug lines (`uniformer -v`): what runs, and why each choice was made."""
    loaded = opened.loaded
    if loaded.entry is not None and request.weights is None:
        weights = f"zoo entry {loaded.entry.name}, converted copy in the cache"
    elif loaded.entry is not None:
        weights = f"a local file of zoo entry {loaded.entry.name}"
    else:
        weights = "a local file"
    log.debug("weights: %s (%s); architecture %s", loaded.path, weights, loaded.config.arch)
    if loaded.entry is not None:
        origin = f"zoo entry {loaded.entry.name}'s released test protocol"
    elif loaded.protocol is not None:
        origin = "recorded in the weights file"
    elif fallback is not None:
        origin = "the dataset's zoo model's (the weights record none)"
    else:
        origin = "the command line's flags (the weights record none)"
    flags = [
        f"--{name.replace('_', '-')} {value}" for name, value in asdict(request.protocol).items() if value is not None
    ]
    changed = f"; changed by {', '.join(flags)}" if flags and loaded.protocol is not None else ""
    log.debug("protocol: %s (%s%s)", opened.protocol.describe(), origin, changed)
    asked = request.device if request.device != "auto" else "auto: CUDA, then MPS, then CPU"
    log.debug("device: %s (--device %s)", opened.device, asked)
    if exact:
        log.debug("engine: torch, exact model in float32 (gradients or tracing need it)")
    else:
        precision = request.precision
        if precision == "auto":
            precision = "auto: exact float32 on CPU" if opened.device.type == "cpu" else "auto: the device's autocast"
        reason = "auto: measured faster on this CPU, or not measured" if request.engine == "auto" else "asked"
        log.debug(
            "precision: %s; engine: %s (%s)%s",
            precision,
            opened.engine,
            reason,
            ", torch.compile" if request.compile else "",
        )
    log.debug(
        "threads: torch %d, inter-op %d (OMP_NUM_THREADS %s, OMP_WAIT_POLICY %s)",
        torch.get_num_threads(),
        torch.get_num_interop_threads(),
        os.environ.get("OMP_NUM_THREADS", "unset"),
        os.environ.get("OMP_WAIT_POLICY", "unset"),
    )


def request_for(name_or_path: str | Path, zoo_name: str | None = None, **settings: object) -> InferenceRequest:
    """The request of a Python caller who names a model the way `load_model` takes it: a zoo name, a Hub
    model repository or a weights file (with `zoo_name`, the entry that file belongs to)."""
    if is_weights_path(name_or_path):
        weights = name_or_path if storage.is_url(name_or_path) else Path(name_or_path)
        return InferenceRequest(model=zoo_name, weights=weights, **settings)  # type: ignore[arg-type]
    named_entry(str(name_or_path), zoo_name)  # the names agree
    return InferenceRequest(model=str(name_or_path), **settings)  # type: ignore[arg-type]
