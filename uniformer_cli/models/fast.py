"""The fast inference path: same answers as the exact model (within 1e-3 in fp32), less work per clip.

`optimize_for_inference(model)` returns an eval-mode copy with
- attention without the explicit float32 softmax reference: its scale folded into the `q` weights, and
  on CPU fused SDPA or batched matmuls, whichever this machine runs faster (`fast_attention`);
- every eval BatchNorm folded into a neighbouring linear map where the algebra is exact: CBlock `norm1`
  into `conv1` and `norm2` into `mlp.fc1` (pointwise convs, so a per-channel affine on their input is a
  change of weights and bias), the light stem's BatchNorms into the convs before them, and the final
  `norm` into `head` (eval BatchNorm commutes with the mean over positions);
- channels-last 3D feature maps (on CPU the oneDNN depthwise and patch-embedding convolutions run
  2-4x faster on them), with the pointwise convs computed as plain matmuls over the channels;
- on CPU, oneDNN for every convolution (PyTorch's own choice falls back to im2col for some small ones),
  and every linear layer as one oneDNN matmul with its bias (and the MLPs' exact GELU) fused in;
- on CPU, each block's residual sums done by the layer that ends the branch (oneDNN's fused sum; layer
  scale folded into that layer's weights): 54 ops fewer per S16 forward, ~2% faster;
- optionally `torch.compile`;
- `precision`: "auto" (float32 on CPU; the device's half-precision autocast elsewhere, applied by
  `uniformer_cli.device.batched_logits`), "fp32" (float32 everywhere, no autocast) or "bf16"
  (weights in bfloat16, the float32 input cast on the way in and the logits cast back to float32; on a
  CPU with native bf16, AVX512-BF16 or AMX, oneDNN runs it ~3x faster than float32, see benchmarks/).

A UniFormerV2 gets its own fast path (`optimize_v2`, the last section of this module), on the same layers:
- attention by the kernel `fast_attention` measured fastest for each shape on this machine (fused SDPA
  or batched matmuls; the backbone's per-frame self-attention and the decoder's one-query
  cross-attention are shapes of their own), the `1/sqrt(d)` scale folded into the query rows of the
  input projection (exact: a power of two for 64-wide heads), the projections as `FastLinear`s and the
  output projection adding the residual in the same call;
- the MLPs' QuickGELU, `x * sigmoid(1.702 x)`, fused into the first layer as oneDNN's swish
  `y * sigmoid(y)` on `y = 1.702 x` (the first layer's weights scaled by 1.702, the second's by 1/1.702:
  the same function), and the second layer adding the residual;
- local MHRA's BatchNorm folded into the pointwise conv after it, the pointwise convs run as matmuls over
  the tokens' channels and the temporal depthwise conv (and the decoder's 3-D position conv) on
  channels-last maps through oneDNN;
- the backbone's fp32 LayerNorm as a plain LayerNorm (the same in float32; in bf16 PyTorch's CPU kernel
  accumulates in float32 anyway); bf16 as above.
"""

from __future__ import annotations

import copy
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from uniformer_cli.errors import UniformerError
from uniformer_cli.models import exact_attention
from uniformer_cli.models.fast_attention import measured_attention, use_fast_attention
from uniformer_cli.models.layers import (
    CBlock,
    ConvMlp,
    LayerScaled,
    Mlp,
    SABlock,
    StagedModel,
    grid_to_tokens,
    tokens_to_grid,
)
from uniformer_cli.models.light import ConvStem
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.models.onednn import onednn_linear_works, runs_onednn
from uniformer_cli.models.uniformerv2 import (
    Fp32LayerNorm,
    GlobalUniBlock,
    InProjAttention,
    LocalMHRA,
    LocalUniBlock,
    UniFormerV2,
)
from uniformer_cli.runtime import cpu_info
from uniformer_cli.settings import PRECISIONS


def adopt_tensors(layer: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give `layer`, built on the meta device, the tensors of the layer it replaces (no copy, and none of
    the random initialisation a replacement built on the CPU would spend ~0.1 s on for UniFormer-S)."""
    layer.load_state_dict(state, assign=True)


def batch_norm_affine(norm: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as `x * scale + shift` per channel, in float64 so that folding adds no error."""
    weight, bias, mean, variance = norm.weight, norm.bias, norm.running_mean, norm.running_var
    assert weight is not None and bias is not None and mean is not None and variance is not None  # ours all are
    scale = weight.double() / torch.sqrt(variance.double() + norm.eps)
    return scale, bias.double() - mean.double() * scale


def fold_into_input(layer: nn.Conv3d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """`layer(x * scale + shift)` becomes `layer(x)` (a Linear, or a 1x1x1 Conv3d; both have a bias here)."""
    assert layer.bias is not None
    weight = layer.weight.double()
    bias = weight.reshape(weight.shape[0], weight.shape[1]) @ shift + layer.bias.double()
    with torch.no_grad():
        layer.weight.copy_(weight * scale.reshape((1, -1) + (1,) * (weight.ndim - 2)))
        layer.bias.copy_(bias)


def fold_into_output(layer: nn.Conv3d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """`layer(x) * scale + shift` (per output channel) becomes `layer(x)` (the layer has a bias)."""
    assert layer.bias is not None
    with torch.no_grad():
        layer.weight.copy_(layer.weight.double() * scale.reshape((-1,) + (1,) * (layer.weight.ndim - 1)))
        layer.bias.copy_(layer.bias.double() * scale + shift)


def fold_batch_norms(model: StagedModel) -> None:
    """Fold every eval BatchNorm of `model` (in place) into an adjacent linear layer; see the module doc."""
    for module in model.modules():
        if isinstance(module, CBlock):
            fold_into_input(module.conv1, *batch_norm_affine(module.norm1))
            fold_into_input(module.mlp.fc1, *batch_norm_affine(module.norm2))
            module.norm1, module.norm2 = nn.Identity(), nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, ConvStem):
            for conv_index in (0, 3):
                conv, norm = cast(nn.Conv3d, module.proj[conv_index]), cast(nn.BatchNorm3d, module.proj[conv_index + 1])
                fold_into_output(conv, *batch_norm_affine(norm))
                module.proj[conv_index + 1] = nn.Identity()
    model.norm = PooledBatchNorm(model.norm)  # type: ignore[assignment]


class PooledBatchNorm(nn.Module):
    """The final eval BatchNorm as a per-channel affine applied after the mean over positions instead of
    before (an affine map commutes with the mean): one affine per clip instead of one per position, and
    `forward_features` still returns the normalised representation (folding it into the head would not)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, norm: nn.BatchNorm3d) -> None:
        super().__init__()
        scale, shift = batch_norm_affine(norm)
        self.register_buffer("scale", scale.float().reshape(1, -1, 1, 1, 1))
        self.register_buffer("shift", shift.float().reshape(1, -1, 1, 1, 1))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.mean(dim=(2, 3, 4), keepdim=True) * self.scale + self.shift


def _reorder_conv_weight(
    weight: torch.Tensor, padding: Any, stride: Any, dilation: Any, groups: int, input_shape: torch.Size
) -> torch.Tensor:
    return torch.ops.aten.mkldnn_reorder_conv3d_weight(
        weight.to_mkldnn(), list(padding), list(stride), list(dilation), groups, list(input_shape)
    )


@functools.cache
def onednn_packing_works() -> bool:
    """Reordering linear and conv weights for oneDNN ahead of time is a PyTorch internal too: check it runs."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(3, 2), 1)
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), packed, torch.zeros(3), "none", [], "none")
        x = torch.ones(1, 2, 1, 1, 1)
        kernel = _reorder_conv_weight(torch.ones(2, 1, 1, 1, 1), [0] * 3, [1] * 3, [1] * 3, 2, x.shape)
        torch.ops.mkldnn._convolution_pointwise(x, kernel, None, [0] * 3, [1] * 3, [1] * 3, 2, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


class PackedWeight(nn.Module):
    """A layer whose oneDNN route uses a copy of its weight reordered once into oneDNN's own layout,
    instead of reordering it on every call: made at the first call and again whenever the weight (or
    what the layout depends on) changes, never saved, copied or pickled with the module. The copy costs
    the weight's memory once more (UniFormer-S: ~85 MB in float32), for 3-6% of the forward time."""

    weight: torch.Tensor
    _packed: tuple[tuple[Any, ...], torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # oneDNN's opaque tensors cannot be copied or pickled; a copy packs its own weight when it runs.
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        return state

    def packed_weight(
        self, depends_on: tuple[Any, ...], pack: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor | None:
        """`pack(weight)`, cached under the weight's identity, version and dtype plus `depends_on`; None
        where it cannot be cached (an inference-mode weight has no version counter) or packing fails."""
        weight = self.weight.detach()
        try:
            key = (weight.data_ptr(), weight._version, weight.dtype, *depends_on)
        except RuntimeError:
            return None
        if self._packed is None or self._packed[0] != key:
            if not onednn_packing_works():
                return None
            self._packed = (key, pack(weight))
        return self._packed[1]


class FastLinear(PackedWeight, nn.Linear):
    """A linear layer over the last dimension (optionally followed by exact GELU) for the fast path.

    On CPU in float32 it is one oneDNN matmul with the bias, and the GELU, fused in: no separate bias
    copy or GELU pass (the stage-1 MLP's first layer runs 3x faster, the whole S16 model ~15%), same
    values. `channels_last_map=True` makes it a 1x1x1 Conv3d over a channels-last NCTHW feature map, whose
    channel vectors are contiguous: one GEMM with no copy, where oneDNN's pointwise conv runs at about half
    the GEMM's rate.

    The oneDNN route multiplies by a copy of the weight reordered once into oneDNN's blocked layout
    (`PackedWeight`; 6-10% faster per matmul than reordering on every call, same values).
    """

    gelu: bool = False
    channels_last_map: bool = False

    def onednn_weight(self, rows: int) -> torch.Tensor:
        """The weight in oneDNN's layout for a matmul of `rows` rows (the first call's count picks the
        layout; any count runs), or the plain weight where this PyTorch cannot reorder it."""
        packed = self.packed_weight((), lambda weight: torch.ops.mkldnn._reorder_linear_weight(weight, rows))
        return self.weight if packed is None else packed

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, gelu: bool = False) -> FastLinear:
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        adopt_tensors(layer, linear.state_dict())
        layer.gelu = gelu
        layer.channels_last_map = getattr(linear, "channels_last_map", False)
        return layer

    @classmethod
    def from_conv(cls, conv: nn.Conv3d) -> FastLinear:
        layer = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None, device="meta")
        adopt_tensors(
            layer, {key: value.flatten(1) if key == "weight" else value for key, value in conv.state_dict().items()}
        )
        layer.channels_last_map = True
        return layer

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`layer(x)`, plus `residual` (shaped like the output) when given: on the oneDNN route the sum is
        fused into the matmul, saving a pass over the output and an op per residual branch."""
        if self.channels_last_map:
            x = x.permute(0, 2, 3, 4, 1)
            residual = None if residual is None else residual.permute(0, 2, 3, 4, 1)
        if self.bias is not None and runs_onednn(x, self.weight) and onednn_linear_works():
            rows = x.reshape(-1, x.shape[-1])
            weight = self.onednn_weight(rows.shape[0])
            if residual is not None and not self.gelu and residual.dtype == x.dtype:
                flat = torch.ops.mkldnn._linear_pointwise.binary(
                    rows, residual.reshape(-1, self.out_features), weight, self.bias, "add"
                )
                residual = None
            else:
                attr = "gelu" if self.gelu else "none"
                flat = torch.ops.mkldnn._linear_pointwise(rows, weight, self.bias, attr, [], "none")
            y = flat.view(*x.shape[:-1], self.out_features)
        else:
            y = super().forward(x)
            y = nn.functional.gelu(y) if self.gelu else y
        if residual is not None:
            y = y + residual
        return y.permute(0, 4, 1, 2, 3) if self.channels_last_map else y


def use_fast_linears(model: nn.Module) -> None:
    """Swap (in place) every Linear for a `FastLinear`, folding each MLP's GELU into its first layer."""
    for module in list(model.modules()):
        if isinstance(module, ConvMlp | Mlp) and isinstance(module.fc1, nn.Linear):
            module.fc1, module.act = FastLinear.from_linear(module.fc1, gelu=True), nn.Identity()  # type: ignore[assignment]
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                setattr(module, name, FastLinear.from_linear(child))


class OneDnnConv3d(PackedWeight, nn.Conv3d):
    """A Conv3d that always runs oneDNN's kernel for float32 on CPU.

    PyTorch sends batch-1 convs with small kernels and few N*C*T*H elements to its im2col fallback
    (`slow_conv3d`), which runs the light stem's first conv 3x slower and patch embeddings 2-4 of the
    light models 1.1-1.6x slower than oneDNN here (same results up to float rounding).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv3d) -> OneDnnConv3d:
        # torch types the stored geometry as tuple[int, ...], its constructor as 3-tuples: the same values.
        kernel_size, stride, padding, dilation = cast(Any, (conv.kernel_size, conv.stride, conv.padding, conv.dilation))
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            conv.groups,
            bias=conv.bias is not None,
            device="meta",
        )
        adopt_tensors(layer, conv.state_dict())
        return layer

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`conv(x)`, plus `residual` (shaped like the output) when given, fused into oneDNN's kernel for
        channels-last maps."""
        if not runs_onednn(x, self.weight):
            y = super().forward(x)
            return y if residual is None else y + residual
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        kernel = self.onednn_weight(x) if x.is_contiguous(memory_format=torch.channels_last_3d) else None
        if residual is not None and fusable_conv_residual(x, residual):
            weight = self.weight if kernel is None else kernel
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, weight, self.bias, *geometry, "add", None, None, [], ""
            )
        if kernel is not None:
            y = torch.ops.mkldnn._convolution_pointwise(x, kernel, self.bias, *geometry, "none", [], "")
        else:
            y = torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, *geometry)
        return y if residual is None else y + residual

    def onednn_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """The weight in oneDNN's layout for channels-last inputs shaped like `x` (None: use the plain one)."""
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        return self.packed_weight(tuple(x.shape), lambda weight: _reorder_conv_weight(weight, *geometry, x.shape))


@functools.cache
def onednn_conv_residual_works() -> bool:
    """oneDNN's convolution with a fused sum is a PyTorch internal of oneDNN builds: check it runs first."""
    x = torch.ones(1, 2, 1, 1, 1)
    try:
        torch.ops.mkldnn._convolution_pointwise.binary(
            x, x, torch.ones(2, 1, 1, 1, 1), None, [0, 0, 0], [1, 1, 1], [1, 1, 1], 2, "add", None, None, [], ""
        )
    except (AttributeError, RuntimeError):
        return False
    return True


def fusable_conv_residual(x: torch.Tensor, residual: torch.Tensor) -> bool:
    layout = torch.channels_last_3d
    same_layout = x.is_contiguous(memory_format=layout) and residual.is_contiguous(memory_format=layout)
    return x.dim() == 5 and same_layout and residual.dtype == x.dtype and onednn_conv_residual_works()


class ResidualCBlock(CBlock):
    """A fast-path CBlock whose residual sums are fused into the layers ending each branch (the positional
    conv, `conv2`, `mlp.fc2`): three ops and three passes over the feature map fewer per block. Needs
    its layer scale folded (`fold_layer_scale`) and eval mode (no drop path)."""

    pos_embed: OneDnnConv3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(x, residual=x)
        conv2, fc2 = cast(FastLinear, self.conv2), cast(FastLinear, self.mlp.fc2)
        x = conv2(self.attn(self.conv1(self.norm1(x))), residual=x)
        return fc2(self.mlp.act(self.mlp.fc1(self.norm2(x))), residual=x)


class ResidualSABlock(SABlock):
    """`ResidualCBlock`'s fusion for the attention blocks (positional conv, `attn.proj`, `mlp.fc2`)."""

    pos_embed: OneDnnConv3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(x, residual=x)
        tokens = grid_to_tokens(x)
        proj, fc2 = cast(FastLinear, self.attn.proj), cast(FastLinear, self.mlp.fc2)
        tokens = proj(self.attn.mix(self.norm1(tokens))[0], residual=tokens)
        tokens = fc2(self.mlp.act(self.mlp.fc1(self.norm2(tokens))), residual=tokens)
        return tokens_to_grid(tokens, x.shape)


def fold_layer_scale(block: LayerScaled, first: nn.Module, second: nn.Module) -> None:
    """`gamma_1 * first(...)` and `gamma_2 * second(...)` become `first(...)` and `second(...)` (in place;
    both are linear layers with a bias whose output channels the gammas scale)."""
    for gamma, layer in ((block.gamma_1, first), (block.gamma_2, second)):
        if gamma is not None:
            assert isinstance(layer, nn.Linear)
            scale = gamma.detach().double().flatten()
            fold_into_output(layer, scale, torch.zeros_like(scale))
    block.gamma_1 = block.gamma_2 = None


def fuse_residuals(model: nn.Module) -> None:
    """Turn (in place) each plain CBlock and SABlock whose layers run on oneDNN (CPU, channels-last) into
    its `Residual...` version. Blocks of other kinds (the light models' token-pruning blocks) stay."""
    for block in model.modules():
        if type(block) is CBlock and isinstance(block.pos_embed, OneDnnConv3d) and isinstance(block.conv2, FastLinear):
            fold_layer_scale(block, block.conv2, block.mlp.fc2)
            block.__class__ = ResidualCBlock
        elif type(block) is SABlock and isinstance(block.pos_embed, OneDnnConv3d):
            fold_layer_scale(block, block.attn.proj, block.mlp.fc2)
            block.__class__ = ResidualSABlock


def is_pointwise(conv: nn.Conv3d) -> bool:
    single = (1, 1, 1)
    return conv.kernel_size == single and conv.stride == single and conv.groups == 1 and not any(conv.padding)


def replace_convs(model: nn.Module, replacement: Callable[[nn.Conv3d], nn.Module | None]) -> None:
    """Swap (in place) every plain Conv3d for which `replacement` returns a module."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Conv3d and (new := replacement(child)) is not None:
                setattr(parent, name, new)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively. Elsewhere oneDNN emulates it, slower than float32.
    Linux reports the flags in /proc/cpuinfo (`runtime.cpu_info`); other systems are asked through
    oneDNN's own check."""
    info = cpu_info()
    if sys.platform == "linux" and info.flags:
        return info.native_bf16
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, device: torch.device) -> None:
    """A one-line error for an unknown precision, or bf16 where the device cannot run it well."""
    if precision not in PRECISIONS:
        raise UniformerError(f"unknown precision {precision!r} (use one of {', '.join(PRECISIONS)})")
    if precision != "bf16":
        return
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise UniformerError(
            "--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX on x86, BF16 on Arm); "
            "this one would emulate it, slower than fp32: use --precision fp32"
        )
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UniformerError("--precision bf16 needs a GPU with bf16 support; this one has none")


def _bf16(value: Any) -> Any:
    return value.to(torch.bfloat16) if torch.is_tensor(value) and value.is_floating_point() else value


def _float(value: Any) -> Any:
    return value.float() if torch.is_tensor(value) and value.is_floating_point() else value


# The methods that take clips: `forward` and the feature extractors (features, explain).
CLIP_METHODS = ("forward", "forward_features", "forward_stages")


def to_bfloat16(model: nn.Module) -> nn.Module:
    """`model` (in place) with bfloat16 weights that still takes float32 clips and returns float32 outputs:
    each of `CLIP_METHODS` casts its tensor arguments down and its result back up, when called from
    outside (the methods call each other in bf16). Attributes stay where callers read them."""
    model.to(torch.bfloat16)
    depth = threading.local()

    def casting(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            if getattr(depth, "inside", False):
                return method(*args, **kwargs)
            depth.inside = True
            try:
                result = method(*map(_bf16, args), **{key: _bf16(value) for key, value in kwargs.items()})
            finally:
                depth.inside = False
            return tuple(map(_float, result)) if isinstance(result, tuple) else _float(result)

        return run

    for name in CLIP_METHODS:
        if callable(method := getattr(model, name, None)):
            setattr(model, name, casting(method))
    return model


def optimize_for_inference(
    model: VideoNetwork,
    *,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    inplace: bool = False,
    precision: str = "auto",
) -> nn.Module:
    """An inference-only version of `model` (eval mode; see the module doc for what changes).

    A copy by default, so the original's state_dict and training mode stay as they were; `inplace=True`
    saves the memory of a copy when the caller no longer needs the original. `channels_last=None` picks
    channels-last on CPU (measured faster) and NCTHW elsewhere, for the device the model is on when this
    is called. Attributes set on the model (`config`, `labels`, `zoo_entry`) are kept. Call it after
    moving the model to its device.
    """
    device = next(model.parameters()).device
    check_precision(precision, device)
    fast = model if inplace else copy.deepcopy(model)
    fast.eval()
    fast.precision = precision
    exact_attention(fast, enabled=False)
    if not isinstance(fast, StagedModel):  # UniFormerV2: its own fast path (the module doc)
        optimize_v2(cast(UniFormerV2, fast))
        return _finish(fast, precision, compile)
    use_fast_attention(fast)
    if fold_bn:
        fold_batch_norms(fast)
    on_cpu = device.type == "cpu"
    fast.channels_last = on_cpu if channels_last is None else channels_last
    if fast.channels_last:
        replace_convs(fast, lambda conv: FastLinear.from_conv(conv) if is_pointwise(conv) else None)
    use_fast_linears(fast)
    if on_cpu and torch.backends.mkldnn.is_available():
        replace_convs(fast, OneDnnConv3d.from_conv)
        fuse_residuals(fast)
    return _finish(fast, precision, compile)


def _finish(fast: nn.Module, precision: str, compile: bool) -> nn.Module:
    if precision == "bf16":
        to_bfloat16(fast)
    if compile:
        # OptimizedModule forwards attribute reads (config, labels...) to the wrapped model.
        return cast(nn.Module, torch.compile(fast))
    return fast


# -- UniFormerV2 (`optimize_v2`; the module doc) ----------------------------------------------------------

QUICK_GELU = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x)


class SwishLinear(FastLinear):
    """`y * sigmoid(y)` of a linear layer's output `y`, in one oneDNN call on the CPU."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        assert residual is None
        if self.bias is not None and runs_onednn(x, self.weight) and onednn_linear_works():
            rows = x.reshape(-1, x.shape[-1])
            weight = self.onednn_weight(rows.shape[0])
            flat = torch.ops.mkldnn._linear_pointwise(rows, weight, self.bias, "swish", [], "")
            return cast(torch.Tensor, flat.view(*x.shape[:-1], self.out_features))
        return F.silu(F.linear(x, self.weight, self.bias))


def _linear(weight: torch.Tensor, bias: torch.Tensor, kind: type[FastLinear] = FastLinear) -> FastLinear:
    layer = kind(weight.shape[1], weight.shape[0], device="meta")
    adopt_tensors(layer, {"weight": weight.detach(), "bias": bias.detach()})
    return layer


class FastInProjAttention(nn.Module):
    """`InProjAttention` on the fast path: the query rows pre-scaled, one `FastLinear` for q, k and v
    (self-attention) or q and (k, v) (the decoder's cross-attention), the output projection adding the
    residual."""

    def __init__(self, attention: InProjAttention, *, cross: bool = False) -> None:
        super().__init__()
        self.heads = attention.heads
        width = attention.out_proj.in_features
        scale = (width // self.heads) ** -0.5
        with torch.no_grad():
            weight, bias = attention.in_proj_weight.clone(), attention.in_proj_bias.clone()
            weight[:width] *= scale
            bias[:width] *= scale
        if cross:
            self.q, self.kv = _linear(weight[:width], bias[:width]), _linear(weight[width:], bias[width:])
        else:
            self.qkv = _linear(weight, bias)
        self.out_proj = FastLinear.from_linear(attention.out_proj)

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        batch, length, _ = x.shape
        return x.reshape(batch, length, parts, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, query: torch.Tensor, residual: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """`residual + attention(query, source)` (`source` None: self-attention)."""
        if source is None:
            q, k, v = self._heads(self.qkv(query), 3)
        else:
            (q,) = self._heads(self.q(query), 1)
            k, v = self._heads(self.kv(source), 2)
        batch, length, width = query.shape
        out = measured_attention(q, k, v).transpose(1, 2).reshape(batch, length, width)
        return cast(torch.Tensor, self.out_proj(out, residual=residual))


class FastMlp(nn.Module):
    """QuickGELU MLP with the activation fused into `c_fc` (module doc) and the residual into `c_proj`."""

    def __init__(self, mlp: nn.Sequential) -> None:
        super().__init__()
        c_fc, c_proj = cast(nn.Linear, mlp.c_fc), cast(nn.Linear, mlp.c_proj)
        self.c_fc = _linear(c_fc.weight * QUICK_GELU, cast(torch.Tensor, c_fc.bias) * QUICK_GELU, SwishLinear)
        self.c_proj = _linear(c_proj.weight / QUICK_GELU, cast(torch.Tensor, c_proj.bias))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.c_proj(self.c_fc(x), residual=residual))


class FastLocalMHRA(nn.Module):
    """Local MHRA on the patch tokens without leaving the token layout: BatchNorm folded into the first
    pointwise conv, both pointwise convs as matmuls over the channels, the temporal depthwise conv on a
    channels-last map (a view of the tokens)."""

    def __init__(self, branch: LocalMHRA) -> None:
        super().__init__()
        norm, down, temporal, up = branch.pos_embed
        assert isinstance(norm, nn.BatchNorm3d) and isinstance(down, nn.Conv3d) and isinstance(up, nn.Conv3d)
        fold_into_input(down, *batch_norm_affine(norm))
        self.down = FastLinear.from_linear(_as_linear(down))
        self.temporal = OneDnnConv3d.from_conv(cast(nn.Conv3d, temporal))
        self.up = FastLinear.from_linear(_as_linear(up))

    def forward(self, tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """`tokens` `[B*T, 1+H*W, C]` with the branch added to the patch tokens."""
        batch_frames, length, _ = tokens.shape
        patches = tokens[:, 1:]
        reduced = self.down(patches)  # [B*T, H*W, R], contiguous: a channels-last map as a view
        channels = reduced.shape[-1]
        volume = reduced.view(batch_frames // frames, frames, grid[0], grid[1], channels).permute(0, 4, 1, 2, 3)
        mixed = self.temporal(volume).permute(0, 2, 3, 4, 1).reshape(batch_frames, length - 1, channels)
        return torch.cat([tokens[:, :1], self.up(mixed, residual=patches)], dim=1)


def _as_linear(conv: nn.Conv3d) -> nn.Linear:
    linear = nn.Linear(conv.in_channels, conv.out_channels, device="meta")
    adopt_tensors(linear, {"weight": conv.weight.detach().flatten(1), "bias": cast(torch.Tensor, conv.bias).detach()})
    return linear


class FastLocalUniBlock(nn.Module):
    """`LocalUniBlock` on the fast path (eval only: no drop path, no checkpointing)."""

    checkpointed = False

    def __init__(self, block: LocalUniBlock) -> None:
        super().__init__()
        self.lmhra1 = FastLocalMHRA(block.lmhra1) if hasattr(block, "lmhra1") else None
        self.lmhra2 = FastLocalMHRA(block.lmhra2) if hasattr(block, "lmhra2") else None
        self.ln_1, self.ln_2 = _plain_norm(block.ln_1), _plain_norm(block.ln_2)
        self.attn = FastInProjAttention(block.attn)
        self.mlp = FastMlp(block.mlp)

    def forward(self, tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
        if self.lmhra1 is not None:
            tokens = self.lmhra1(tokens, frames, grid)
        tokens = self.attn(self.ln_1(tokens), residual=tokens)
        if self.lmhra2 is not None:
            tokens = self.lmhra2(tokens, frames, grid)
        return cast(torch.Tensor, self.mlp(self.ln_2(tokens), residual=tokens))


class FastGlobalUniBlock(nn.Module):
    """`GlobalUniBlock` (a decoder layer) on the fast path."""

    def __init__(self, block: GlobalUniBlock) -> None:
        super().__init__()
        self.ln_1, self.ln_2, self.ln_3 = block.ln_1, block.ln_2, block.ln_3
        self.attn = FastInProjAttention(block.attn, cross=True)
        self.mlp = FastMlp(block.mlp)

    def forward(self, query: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        query = self.attn(self.ln_1(query), residual=query, source=self.ln_3(video))
        return cast(torch.Tensor, self.mlp(self.ln_2(query), residual=query))


class ChannelsLastConv(nn.Module):
    """A convolution fed a channels-last copy of its input (the decoder's position convs get strided views
    of the tokens), run through oneDNN."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.conv = OneDnnConv3d.from_conv(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.conv(x.contiguous(memory_format=torch.channels_last_3d)))


def _plain_norm(norm: nn.LayerNorm) -> nn.LayerNorm:
    if type(norm) is Fp32LayerNorm:
        norm.__class__ = nn.LayerNorm  # type: ignore[assignment]
    return norm


def optimize_v2(model: UniFormerV2) -> None:
    """Turn `model` (in place, in eval mode) into its fast inference version (module doc)."""
    transformer = model.transformer
    _plain_norm(model.ln_pre)
    transformer.resblocks = nn.ModuleList(FastLocalUniBlock(cast(LocalUniBlock, b)) for b in transformer.resblocks)
    transformer.dec = nn.ModuleList(FastGlobalUniBlock(cast(GlobalUniBlock, b)) for b in transformer.dec)
    transformer.dpe = nn.ModuleList(ChannelsLastConv(cast(nn.Conv3d, conv)) for conv in transformer.dpe)
    head = cast(nn.Linear, transformer.proj[2])
    transformer.proj[2] = FastLinear.from_linear(head)
