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
"""

from __future__ import annotations

import copy
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from uniformer_cli.errors import UniformerError
from uniformer_cli.models import exact_attention
from uniformer_cli.models.fast_attention import use_fast_attention
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
from uniformer_cli.models.onednn import onednn_linear_works, runs_onednn
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
    model: StagedModel,
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
    if precision == "bf16":
        to_bfloat16(fast)
    if compile:
        # OptimizedModule forwards attribute reads (config, labels...) to the wrapped model.
        return cast(nn.Module, torch.compile(fast))
    return fast
