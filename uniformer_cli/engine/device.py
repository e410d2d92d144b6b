"""Device choice and mixed precision, shared by predict, eval, train and flops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from uniformer_cli.errors import UniformerError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is absent fails clearly."""
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UniformerError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UniformerError("--device mps was asked for but MPS is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise UniformerError(f"unknown device {name!r} (use one of {', '.join(DEVICE_CHOICES)})") from error


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Half precision where it pays: bf16 on CUDA GPUs that support it, else fp16; none on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
