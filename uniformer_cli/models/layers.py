"""Building blocks shared by UniFormer S/B (`uniformer.py`) and the light XXS/XS models (`light.py`).

Module and parameter names mirror the official PySlowFast fork so that official state_dicts load
strictly; the numerics follow MODEL.md 1 (LayerNorm eps 1e-5 in patch embeddings and 1e-6
in attention blocks, erf GELU, attention scale head_dim ** -0.5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from uniformer_cli.models.config import ATTENTION_NORM_EPS, ModelConfig
from uniformer_cli.models.network import VideoNetwork, check_layer
from uniformer_cli.runtime import cpu_info

PATCH_NORM_EPS = 1e-5


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples during training."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def drop_path_rates(config: ModelConfig) -> list[list[float]]:
    """Per-block stochastic depth rates, linearly spaced over all blocks in order, split by stage."""
    # Computed on the CPU even under `torch.device("meta")`, so shape-only models (FLOP counting) can be built.
    rates = torch.linspace(0, config.drop_path_rate, sum(config.depth), device="cpu").tolist()
    stages, start = [], 0
    for count in config.depth:
        stages.append(rates[start : start + count])
        start += count
    return stages


def pointwise_conv(in_dim: int, out_dim: int) -> nn.Conv3d:
    return nn.Conv3d(in_dim, out_dim, kernel_size=1)


def depthwise_conv(dim: int, kernel: int) -> nn.Conv3d:
    return nn.Conv3d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=dim)


# Whether `depthwise` leaves CPU bf16 autocast for float32 (benchmarks/bench_train_precision.py turns it off
# to measure the difference).
FLOAT32_DEPTHWISE = True


def depthwise(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a depthwise convolution, in float32 under CPU bf16 autocast: oneDNN's bf16 depthwise
    3-D convolution, its backward above all, is slower there than its float32 one (with it in float32 a
    bf16 training step went from 0.93x to 1.14x float32's for XXS and from 1.13x to 1.46x for S; 2-core
    AMD EPYC with AVX512-BF16, no AMX, busy; benchmarks/README.md). Its few FLOPs cost little in float32."""
    if FLOAT32_DEPTHWISE and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return cast(torch.Tensor, conv(x.float()))
    return cast(torch.Tensor, conv(x))


class PatchEmbed(nn.Module):
    """Strided Conv3d then LayerNorm over channels at each position (`norm` is registered first)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int],
        padding: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(out_dim, eps=PATCH_NORM_EPS)
        self.proj = nn.Conv3d(in_dim, out_dim, kernel_size=kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        # Normalise a channels-last view; the result has channels-last-3d strides (the model picks the layout).
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


def later_patch_embeds(config: ModelConfig) -> tuple[PatchEmbed, PatchEmbed, PatchEmbed]:
    """`patch_embed2..4`: 2x2 spatial downsampling (3x2x2 with `std`, keeping T)."""
    temporal = (3, 1) if config.std else (1, 0)
    dims = config.embed_dim
    return tuple(  # type: ignore[return-value]
        PatchEmbed(dims[i - 1], dims[i], (temporal[0], 2, 2), (1, 2, 2), (temporal[1], 0, 0)) for i in (1, 2, 3)
    )


class ConvMlp(nn.Module):
    """Pointwise-conv MLP of the convolution blocks (`mlp.fc1`, GELU, `mlp.fc2`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = pointwise_conv(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = pointwise_conv(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Mlp(nn.Module):
    """Token MLP of the attention blocks (`mlp.fc1`, GELU, `mlp.fc2`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def cpu_has_amx() -> bool:
    return "AMX" in cpu_info().features


def without_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Full precision inside an autocast region (matmuls would otherwise be cast down again)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class Attention(nn.Module):
    """Multi-head self-attention; `exact` picks explicit fp32 softmax(q k^T * scale) v over fused SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.exact = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x, class_row=False)[0]

    def attend(self, x: torch.Tensor, class_row: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention output, plus (if `class_row`) the head-averaged probabilities of query 0, fp32 `[B, N]`."""
        mixed, row = self.mix(x, class_row)
        return self.proj(mixed), row

    def fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`softmax(q kᵀ * scale) v` over `[B, heads, N, head_dim]` by fused SDPA (the fast path measures
        other kernels too, `models.fast_attention`), except bf16 on a CPU without AMX (training under
        `--amp bf16`): there SDPA's kernel multiplies its blocks on MKL's bf16 path, no faster than float32,
        and plain matmuls on oneDNN ran forward + backward 1.8-3.4x faster (S at 8x160, busy 2-core EPYC)."""
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and not cpu_has_amx():
            return ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1).to(v.dtype) @ v
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale)

    def mix(self, x: torch.Tensor, class_row: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`attend` before the output projection `proj`: the heads' outputs side by side, `[B, N, C]`."""
        batch, length, dim = x.shape
        # qkv features are laid out (3, heads, head_dim): q first, then k, then v.
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        row = None
        if self.exact:
            # The reference path, as the official fp32 files compute it (autocast off).
            with without_autocast(x.device):
                probs = ((q.float() @ k.float().transpose(-2, -1)) * self.scale).softmax(dim=-1)
                out = (probs @ v.float()).to(v.dtype)
            if class_row:
                row = probs[:, :, 0].mean(dim=1)
        else:
            out = self.fused(q, k, v)
            if class_row:
                # SDPA does not expose probabilities: recompute the one row the token scores need, in fp32.
                with without_autocast(x.device):
                    logits = (q[:, :, :1].float() @ k.float().transpose(-2, -1)) * self.scale
                    row = logits.softmax(dim=-1)[:, :, 0].mean(dim=1)
        return out.transpose(1, 2).reshape(batch, length, dim), row


class LayerScaled(nn.Module):
    """Base of blocks with optional layer scale: `gamma_1`/`gamma_2` are the block's first parameters."""

    def __init__(self, layer_scale: float | None, shape: tuple[int, ...], drop_path: float) -> None:
        super().__init__()
        if layer_scale is None:
            self.gamma_1 = self.gamma_2 = None
        else:
            self.gamma_1 = nn.Parameter(torch.full(shape, float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full(shape, float(layer_scale)))
        self.drop_path = DropPath(drop_path)
        # Set by `set_grad_checkpointing`: run this block under activation checkpointing.
        self.checkpointed = False

    @staticmethod
    def scaled(gamma: torch.Tensor | None, branch: torch.Tensor) -> torch.Tensor:
        return branch if gamma is None else gamma * branch


class CBlock(LayerScaled):
    """Local MHRA block on `[B, C, T, H, W]`: depthwise 5x5x5 relation between pointwise convs, then a conv MLP."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale: float | None = None) -> None:
        super().__init__(layer_scale, (1, dim, 1, 1, 1), drop_path)
        self.pos_embed = depthwise_conv(dim, 3)
        self.norm1 = nn.BatchNorm3d(dim)
        self.conv1 = pointwise_conv(dim, dim)
        self.conv2 = pointwise_conv(dim, dim)
        self.attn = depthwise_conv(dim, 5)
        self.norm2 = nn.BatchNorm3d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + depthwise(self.pos_embed, x)
        x = x + self.drop_path(self.scaled(self.gamma_1, self.conv2(depthwise(self.attn, self.conv1(self.norm1(x))))))
        return x + self.drop_path(self.scaled(self.gamma_2, self.mlp(self.norm2(x))))


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """`[B, C, T, H, W]` -> `[B, T*H*W, C]`, tokens in (T, H, W) row-major order."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_grid(tokens: torch.Tensor, grid: torch.Size) -> torch.Tensor:
    """`[B, N, C]` -> `[B, C, T, H, W]` as a channels-last view.

    Unlike the official transpose-then-reshape, this keeps canonical strides when B = 1, which oneDNN
    needs to run the next depthwise conv channels-last (up to several times faster).
    """
    batch, channels, frames, height, width = grid
    return tokens.reshape(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)


class SABlock(LayerScaled):
    """Global MHRA block: positional conv on the grid, then attention and MLP over all tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        *,
        norm_eps: float = ATTENTION_NORM_EPS,
    ) -> None:
        super().__init__(layer_scale, (dim,), drop_path)
        self.pos_embed = depthwise_conv(dim, 3)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + depthwise(self.pos_embed, x)
        tokens = grid_to_tokens(x)
        tokens = tokens + self.drop_path(self.scaled(self.gamma_1, self.attn(self.norm1(tokens))))
        tokens = tokens + self.drop_path(self.scaled(self.gamma_2, self.mlp(self.norm2(tokens))))
        return tokens_to_grid(tokens, x.shape)


def init_weights(module: nn.Module) -> None:
    """MODEL.md 5: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0); convs keep PyTorch's."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.LayerNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def run_block(block: nn.Module, *inputs: torch.Tensor | None) -> Any:
    """Call a block, under activation checkpointing when it is flagged and gradients are recorded; returns
    what the block returns (a tensor, or the light models' (class token, tokens, scores))."""
    if getattr(block, "checkpointed", False) and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


def _viewed_like(parameter: nn.Parameter) -> Callable[[torch.Tensor], torch.Tensor]:
    """A gradient hook that re-views a gradient with `parameter`'s strides when the two differ only in
    dimensions of size 1 (where a stride addresses nothing); any other gradient passes unchanged."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        strides = parameter.stride()
        if grad.stride() == strides or any(
            size > 1 and mine != theirs for size, mine, theirs in zip(grad.shape, grad.stride(), strides, strict=True)
        ):
            return grad
        return grad.as_strided(grad.shape, strides)

    return hook


class StagedModel(VideoNetwork):
    """What both UniFormer (v1) architectures share: `config`, four stages (the layers of `VideoNetwork`),
    per-stage gradient checkpointing and the classifier."""

    config: ModelConfig
    norm: nn.BatchNorm3d
    head: nn.Linear
    # Layout of the feature maps between stages: True channels-last 3D; False contiguous NCTHW, the official
    # layout (the speed reference); None (default) channels-last on CPU, where oneDNN runs the depthwise convs
    # 3-10x faster forward and backward on it, and NCTHW elsewhere.
    channels_last: bool | None = None
    cost_groups = tuple(f"{part}{stage}" for stage in range(1, 5) for part in ("patch_embed", "blocks"))
    head_prefixes = ("head.", "head_cls.")
    checkpoint_groups = ("stage 1", "stage 2", "stage 3", "stage 4")

    @property
    def feature_layers(self) -> int:
        return 4

    @property
    def map_layers(self) -> int:
        return 4

    @property
    def default_map_layer(self) -> int:
        """Stage 2. Grad-CAM reads positions in a feature map as places in the frame. Stages 1-2 are
        convolutional (local); stages 3-4 attend globally and mix every position into every other. In a
        tiny model trained on synthetic clips whose class only the top-left quadrant's motion decides
        (tests/test_explain.py), the share of the map in that quadrant was 59% on stage 2's output, 52% on
        stage 3's and 25% (uniform, chance) on stage 4's: the last convolutional stage is the default."""
        return 2

    def repeated_blocks(self) -> list[nn.Module]:
        return [block for stage in self.stages() for block in stage]

    def logits_and_map(self, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, stage `layer`'s output map), the map captured where the next stage reads it."""
        check_layer(layer, self.map_layers, "stage")
        captured: list[torch.Tensor] = []

        def keep(module: nn.Module, inputs: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
            captured.append(output[1] if isinstance(output, tuple) else output)  # light stages 3-4: (cls, map, scores)

        handle = self.stages()[layer - 1][-1].register_forward_hook(keep)
        try:
            logits = self(x)
        finally:
            handle.remove()
        return logits, captured[-1]

    def runs_channels_last(self, device: torch.device) -> bool:
        return device.type == "cpu" if self.channels_last is None else self.channels_last

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = self.runs_channels_last(x.device)
        return x.contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)

    def match_gradient_layout(self) -> None:
        """Hand every parameter its gradient with the parameter's own strides, so that DDP's gradient
        buckets, laid out like the parameters, take the gradients without a strided copy (and without its
        "Grad strides do not match bucket view strides" warning). Channels-last convolutions return weight
        gradients whose strides differ from the weights' in size-1 dimensions only (the depthwise convs'
        input channel; the pointwise convs' kernel dimensions, depending on the kernel oneDNN picks for the
        thread count and batch), which addresses the same memory: the gradient is re-viewed, never copied."""
        for parameter in self.parameters():
            if parameter.requires_grad:
                parameter.register_hook(_viewed_like(parameter))

    def stages(self) -> list[nn.ModuleList]:
        return [self.blocks1, self.blocks2, self.blocks3, self.blocks4]  # type: ignore[list-item]

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}  # the light models' class token

    def set_grad_checkpointing(self, enable: bool = True, blocks: tuple[int, ...] | None = None) -> None:
        """Recompute activations in backward: every block, or the first `blocks[i]` of stage i."""
        for stage, stage_blocks in enumerate(self.stages()):
            count = len(stage_blocks) if blocks is None else blocks[stage]
            for index, block in enumerate(stage_blocks):
                cast(LayerScaled, block).checkpointed = enable and index < count

    def forward_stages(self, x: torch.Tensor, stages: int = 4) -> torch.Tensor:
        """The feature map `[B, C, T', H', W']` after the first `stages` stages (4: the last one, before
        the final norm)."""
        raise NotImplementedError

    def pool(self, grid: torch.Tensor) -> torch.Tensor:
        """The last stage's map -> `[B, embed_dim[3]]`: final BatchNorm, mean over all positions (what the
        head reads)."""
        return self.norm(grid).flatten(2).mean(-1)

    def classify(self, grid: torch.Tensor) -> torch.Tensor:
        """Final BatchNorm over the grid, mean over all positions, linear head."""
        return self.head(self.pool(grid))

    def forward_features(self, x: torch.Tensor, layer: int = 4) -> torch.Tensor:
        """The pooled representation of clips `[B, 3, T, H, W]`: `[B, embed_dim[layer - 1]]`.

        Stage 4 (default) is what the classifier reads: after the final norm, before the head, so
        `model.head(model.forward_features(x)) == model(x)`. Stages 1-3 give the mean of that stage's
        output map over time and space (no norm). Works on the exact and on the fast inference model.
        """
        check_layer(layer, self.feature_layers, "stage")
        grid = self.forward_stages(x, layer)
        return self.pool(grid) if layer == 4 else grid.flatten(2).mean(-1)
