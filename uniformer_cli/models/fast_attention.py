"""Attention for the fast inference path, and the choice of how to compute it on the machine that runs it.

The kernels compute the same `softmax(q kᵀ) v` (the scale is folded into the `q` rows of `qkv` first,
`fold_attention_scale`, so none multiplies the scores):

- "fused": PyTorch's `scaled_dot_product_attention`. On CPU its flash kernel multiplies small blocks
  (256 queries x 512 keys) with MKL, whose bf16 path on CPUs without AMX is no faster than its float32
  one; where it is fast (AMX, float32 on some CPUs) it keeps the scores in cache.
- "explicit": `q kᵀ` and `p v` as batched matmuls over all heads (oneDNN's AVX512-BF16 kernels for
  bf16) with the softmax done in place on the scores, a chunk of query rows at a time so that each
  chunk of scores stays under `SCORE_BYTES`: in cache, and under the malloc threshold above which a
  block would be mapped fresh from the kernel on every call (`uniformer_cli.runtime`).
- "onednn": the same, one head at a time, both products on oneDNN's matmul (PyTorch sends float32
  matmuls to MKL, whose AVX-512 kernels are for Intel CPUs only).

The matmul kernels round bf16 scores to bf16 before the softmax (as OpenVINO's attention does): logits
move by ~1e-2 at most and the top-5 stays (tests/test_precision.py).

Which kernel is fastest depends on the CPU, the dtype, the shape and even on the load: on a 2-core
AVX512-BF16 AMD EPYC (no AMX) the matmul kernels ran bf16 attention 1.5-4x faster than "fused", while
in float32 "fused" won for 1568 tokens on a quiet machine and lost 1.3-2.4x with other processes
busy. So `KernelChoice` measures it in the process that runs it: the first calls of each new shape
alternate between the kernels (the attention blocks of one stage share a shape, so the trials cost a
fraction of one forward pass) and the kernel with the best time wins for the rest of the process.
Nothing is kept between processes: a choice made under one load would be wrong under another.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from uniformer_cli.models.layers import Attention
from uniformer_cli.models.onednn import ONEDNN_DTYPES, onednn_linear_works

# Largest block of attention scores the explicit kernel makes at once (below glibc's 32 MiB mmap
# threshold; 12 MiB measured fastest among 4, 12 and 30 MiB chunks on the EPYC).
SCORE_BYTES = 12 * 2**20
# Timed calls per kernel before a shape's choice is made; the best of them counts (load only adds time).
TRIALS = 3


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`softmax(q kᵀ) v` for `[B, H, N, D]` inputs (scale already folded into `q`) by fused SDPA."""
    return F.scaled_dot_product_attention(q, k, v, scale=1.0)


def _softmax_in_place(scores: torch.Tensor) -> torch.Tensor:
    # The row softmax reads each element before writing it: computing it into its own input is safe.
    return torch.ops.aten._softmax.out(scores, -1, False, out=scores)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`softmax(q kᵀ) v` for `[B, H, N, D]` inputs as batched matmuls (all heads at once) over chunks of
    at most `SCORE_BYTES` of scores: whole clips, or a clip's query rows. Returns `[B, H, N, D]` with the
    strides of a contiguous `[B, N, H, D]` (so the heads' outputs side by side, `[B, N, H * D]`, are a view)."""
    batch, heads, length, depth = q.shape
    out = q.new_empty(batch, length, heads, depth)
    row_bytes = heads * k.shape[2] * q.element_size()  # one query row's scores, all heads
    if length * row_bytes <= SCORE_BYTES:  # whole clips at a time (short sequences: many clips per chunk)
        step = SCORE_BYTES // (length * row_bytes)
        for first in range(0, batch, step):
            part = slice(first, first + step)
            scores = _softmax_in_place(torch.matmul(q[part], k[part].transpose(-2, -1)))
            out[part] = torch.matmul(scores, v[part]).transpose(1, 2)
        return out.transpose(1, 2)
    rows = max(1, SCORE_BYTES // row_bytes)
    for clip in range(batch):
        keys_t = k[clip].transpose(-2, -1)
        for first in range(0, length, rows):
            span = slice(first, first + rows)
            scores = _softmax_in_place(torch.matmul(q[clip, :, span], keys_t))
            out[clip, span] = torch.matmul(scores, v[clip]).transpose(0, 1)
    return out.transpose(1, 2)


def onednn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`explicit_attention` one head at a time with both products on oneDNN's matmul (its fused linear,
    `k` and `vᵀ` as the weights), where PyTorch sends float32 matmuls to MKL (whose AVX-512 kernels are
    for Intel CPUs only); same output layout. Query rows are split as in `explicit_attention`."""
    batch, heads, length, depth = q.shape
    linear = torch.ops.mkldnn._linear_pointwise
    out = q.new_empty(batch, length, heads, depth)
    keys, values_t = k.contiguous(), v.transpose(-2, -1).contiguous()  # oneDNN wants dense weights
    rows = max(1, SCORE_BYTES // (k.shape[2] * q.element_size()))
    for clip in range(batch):
        for head in range(heads):
            for first in range(0, length, rows):
                span = slice(first, first + rows)
                scores = _softmax_in_place(linear(q[clip, head, span], keys[clip, head], None, "none", [], "none"))
                out[clip, span, head] = linear(scores, values_t[clip, head], None, "none", [], "none")
    return out.transpose(1, 2)


Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
KERNELS: dict[str, Kernel] = {"fused": fused_attention, "explicit": explicit_attention, "onednn": onednn_attention}


def candidates(q: torch.Tensor) -> tuple[str, ...]:
    """The kernels that may run `q`'s attention here (oneDNN's matmul takes float32 and bf16 only, in
    oneDNN builds of PyTorch)."""
    usable = q.dtype in ONEDNN_DTYPES and onednn_linear_works()
    return tuple(name for name in KERNELS if name != "onednn" or usable)


def shape_key(q: torch.Tensor, k: torch.Tensor) -> str:
    """What the choice depends on: dtype, batch, heads, queries, keys, head width and thread count."""
    batch, heads, length, depth = q.shape
    dtype = str(q.dtype).removeprefix("torch.")
    return f"{dtype}:{batch}x{heads}x{length}x{k.shape[2]}x{depth}:threads{torch.get_num_threads()}"


class KernelChoice:
    """The attention kernel per shape, measured by alternating trials (module doc). Thread-safe; one per
    process (`CHOICE`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decided: dict[str, str] = {}
        self.trials: dict[str, dict[str, list[float]]] = {}
        self.forced: str | None = None  # `forced_kernel`: this kernel for every shape, nothing measured

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.forced is not None:
            return KERNELS[self.forced](q, k, v)
        key = shape_key(q, k)
        with self.lock:
            decided = self.decided.get(key)
            if decided is None:
                times = self.trials.setdefault(key, {kernel: [] for kernel in candidates(q)})
                name = min(times, key=lambda kernel: len(times[kernel]))  # fewest trials so far
        if decided is not None:
            return KERNELS[decided](q, k, v)
        started = time.perf_counter()
        out = KERNELS[name](q, k, v)
        self._record(key, name, time.perf_counter() - started)
        return out

    def _record(self, key: str, name: str, seconds: float) -> None:
        with self.lock:
            times = self.trials.get(key)
            if times is None or key in self.decided:
                return
            times[name].append(seconds)
            if any(len(values) < TRIALS for values in times.values()):
                return
            self.decided[key] = min(times, key=lambda kernel: min(times[kernel]))
            del self.trials[key]


CHOICE = KernelChoice()


@contextlib.contextmanager
def forced_kernel(name: str) -> Iterator[None]:
    """Run every fast-path attention with kernel `name` inside the block (tests, benchmarks)."""
    if name not in KERNELS:
        raise ValueError(f"unknown attention kernel {name!r} (one of {', '.join(KERNELS)})")
    previous, CHOICE.forced = CHOICE.forced, name
    try:
        yield
    finally:
        CHOICE.forced = previous


def measured_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fused SDPA where only it applies (not on the CPU, under autocast or while tracing for
    torch.compile), else the kernel `CHOICE` picks for this shape."""
    if q.device.type != "cpu" or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return fused_attention(q, k, v)
    return CHOICE.run(q, k, v)


def fold_attention_scale(attention: Attention) -> None:
    """Multiply (in place) the `q` rows of `qkv` by the attention scale and make the scale 1: the same
    scores without a pass over them (exact where the scale is a power of two, as for 64-wide heads)."""
    width = attention.qkv.out_features // 3
    with torch.no_grad():
        attention.qkv.weight[:width] *= attention.scale
        if attention.qkv.bias is not None:
            attention.qkv.bias[:width] *= attention.scale
    attention.scale = 1.0


class FastAttention(Attention):
    """An `Attention` of the fast path: scale folded into `qkv`, fused SDPA or the explicit kernel,
    whichever `CHOICE` measured faster for the shape (the exact reference path is unchanged)."""

    def fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        assert self.scale == 1.0  # folded (`fold_attention_scale`)
        return measured_attention(q, k, v)


def use_fast_attention(model: torch.nn.Module) -> None:
    """Turn (in place) every plain `Attention` of `model` into a `FastAttention`, folding its scale."""
    for module in model.modules():
        if type(module) is Attention:
            fold_attention_scale(module)
            module.__class__ = FastAttention
