"""Whether a direct oneDNN call (a PyTorch internal of oneDNN builds) may replace a PyTorch op: shared by
the fast path's layers (`fast`) and its attention (`fast_attention`)."""

from __future__ import annotations

import functools

import torch

ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def runs_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a direct oneDNN call may replace the PyTorch op: float32 (or a bf16 model, see
    `to_bfloat16`) on CPU. Autocast and torch.compile keep their own handling (the direct ops bypass
    autocast's casts and have no fake-tensor kernel for tracing)."""
    plain = x.device.type == "cpu" and x.dtype == weight.dtype and x.dtype in ONEDNN_DTYPES
    return plain and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()


@functools.cache
def onednn_linear_works() -> bool:
    """oneDNN's fused linear is a PyTorch internal of oneDNN builds: check it exists and runs first."""
    try:
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), torch.ones(3, 2), torch.zeros(3), "gelu", [], "none")
    except (AttributeError, RuntimeError):
        return False
    return True
