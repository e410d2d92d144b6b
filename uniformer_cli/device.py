"""Device choice, mixed precision and batched inference: shared by the engine (predict, eval, train, flops)
and by `weights` (which loads models onto a device), so it sits below both."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from functools import cache

import torch

from uniformer_cli.errors import UniformerError
from uniformer_cli.models import fp16_safe
from uniformer_cli.settings import DEVICE_CHOICES

logger = logging.getLogger(__name__)

_DEVICE_NAME = re.compile(rf"(?P<kind>{'|'.join(DEVICE_CHOICES)})(?::(?P<index>\d+))?")


@cache
def mps_runs_conv3d() -> bool:
    """Whether this Mac's MPS backend runs the depthwise 3-D convolutions UniFormer is built from
    (they arrived late on Apple GPUs; older PyTorch / macOS raise "not implemented")."""
    try:
        conv = torch.nn.Conv3d(4, 4, 3, padding=1, groups=4).to("mps")
        conv(torch.zeros(1, 4, 2, 4, 4, device="mps")).cpu()
    except (RuntimeError, NotImplementedError):
        return False
    return True


def check_device_name(name: str) -> str:
    """`name` in lower case if it is one of `DEVICE_CHOICES`, optionally with an index (`cuda:1`)."""
    match = _DEVICE_NAME.fullmatch(name.strip().lower())
    if match is None or (match["kind"] == "auto" and match["index"]):
        raise UniformerError(f"unknown device {name!r} (use one of {', '.join(DEVICE_CHOICES)}, or e.g. cuda:1)")
    return match.group(0)


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is absent fails clearly. An MPS
    backend without 3-D depthwise convolutions falls back to the CPU with a message."""
    name = check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        name = "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UniformerError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UniformerError("--device mps was asked for but MPS is not available on this machine")
        if not mps_runs_conv3d():
            logger.warning("MPS cannot run 3-D depthwise convolutions here: using the CPU")
            return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise UniformerError(f"unknown device {name!r} (use one of {', '.join(DEVICE_CHOICES)})") from error


def autocast_dtype(device: torch.device, *, fp16_safe: bool = True) -> torch.dtype | None:
    """Half precision where it pays: bf16 on CUDA GPUs that support it, else fp16; none on CPU.
    `fp16_safe=False` (the light models, which overflow in fp16, MODEL.md 11) keeps them in fp32 where
    bf16 is not available."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type in ("cuda", "mps") and fp16_safe:
        return torch.float16
    return None


@contextlib.contextmanager
def autocast_to(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast on `device` to `dtype`; None runs in full precision."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def autocast(
    device: torch.device, enabled: bool = True, *, fp16_safe: bool = True
) -> contextlib.AbstractContextManager[None]:
    """Inference autocast to `autocast_dtype(device)` (off when not `enabled`)."""
    return autocast_to(device, autocast_dtype(device, fp16_safe=fp16_safe) if enabled else None)


def inference_autocast(model: torch.nn.Module, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The device's autocast for a model whose precision is "auto" (the default); none for a model that
    `optimize_for_inference` set to an explicit "fp32" or "bf16"."""
    return autocast(device, getattr(model, "precision", "auto") == "auto", fp16_safe=fp16_safe(model))


def batched_logits(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    device: torch.device,
    batch_size: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """float32 logits of `inputs` on the CPU (or what `forward`, a method of `model` such as
    `forward_features`, returns): `batch_size` inputs per forward pass, under inference mode and
    `inference_autocast`; running out of device memory becomes a one-line error."""
    outputs = []
    run = forward or model
    with torch.inference_mode(), inference_autocast(model, device):
        for batch in inputs.split(batch_size):
            try:
                logits = run(batch.to(device, non_blocking=True))
            except torch.OutOfMemoryError:
                raise UniformerError(
                    f"out of memory on {device} with {len(batch)} views per pass: lower --batch-size"
                ) from None
            outputs.append(logits.float().cpu())
    return torch.cat(outputs)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
