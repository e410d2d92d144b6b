"""UniFormerV2 (ICCV 2023): a CLIP ViT armed with local and global UniBlocks (docs/MODEL.md, "UniFormerV2").

Computes what the official `VisionTransformer` of OpenGVLab/UniFormerV2
(`slowfast/models/uniformerv2_model.py`) computes, with its state_dict keys: the official PySlowFast
checkpoints hold the same keys under `backbone.` (the reader strips it). Tokens run batch-first here,
`[clips * T, 1 + H*W, C]` in the backbone, where the official code runs sequence-first; the arithmetic
is the same.

Input float32 `[B, 3, T, H, W]`, output logits `[B, num_classes]`. The frame count is read from the
input (it only reshapes), so one network serves 8, 16, 32 or 64 frames.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from uniformer_cli.models.config_v2 import V2Config
from uniformer_cli.models.layers import DropPath, without_autocast
from uniformer_cli.models.network import VideoNetwork, check_layer

NORM_EPS = 1e-5  # every LayerNorm of UniFormerV2 (PyTorch's default; v1 attention blocks use 1e-6)


class QuickGELU(nn.Module):
    """CLIP's activation, `x * sigmoid(1.702 x)`, in backbone and decoder MLPs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Fp32LayerNorm(nn.LayerNorm):
    """The backbone's LayerNorm: normalises in float32 and returns the input's element type (CLIP's
    half-precision rule; identical to `nn.LayerNorm` in float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def _mlp(width: int, hidden: int, dropout: float | None = None) -> nn.Sequential:
    """`mlp.c_fc`, QuickGELU, (decoder only: dropout), `mlp.c_proj` under the official names."""
    layers: list[tuple[str, nn.Module]] = [("c_fc", nn.Linear(width, hidden)), ("gelu", QuickGELU())]
    if dropout is not None:
        layers.append(("dropout", nn.Dropout(dropout)))
    layers.append(("c_proj", nn.Linear(hidden, width)))
    return nn.Sequential(OrderedDict(layers))


class InProjAttention(nn.Module):
    """Multi-head attention over `nn.MultiheadAttention`'s parameters (`in_proj_weight` rows q, k, v;
    `in_proj_bias`; `out_proj`), batch-first. Queries may differ from keys (the decoder's cross
    attention). `exact` picks the explicit fp32 softmax(q k^T / sqrt(d)) v over fused SDPA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.exact = False
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """`query` `[B, Nq, C]` attends to `source` `[B, Nk, C]` (itself when None)."""
        batch, length, width = query.shape
        if source is None:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(query, self.in_proj_weight[:width], self.in_proj_bias[:width])
            k, v = F.linear(source, self.in_proj_weight[width:], self.in_proj_bias[width:]).chunk(2, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scale = (width // self.heads) ** -0.5
        if self.exact:
            with without_autocast(query.device):
                probs = ((q.float() @ k.float().transpose(-2, -1)) * scale).softmax(dim=-1)
                out = (probs @ v.float()).to(v.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class LocalMHRA(nn.Module):
    """Local MHRA (`lmhra1` / `lmhra2`): BatchNorm, pointwise conv down to `int(C // 1.5)` channels, a
    depthwise 3x1x1 convolution over time, pointwise conv back; applied to the patch tokens as a grid
    `[B, C, T, H, W]` and added to them (the class token skips it)."""

    def __init__(self, width: int, reduced: int) -> None:
        super().__init__()
        self.pos_embed = nn.Sequential(
            nn.BatchNorm3d(width),
            nn.Conv3d(width, reduced, kernel_size=1),
            nn.Conv3d(reduced, reduced, kernel_size=(3, 1, 1), padding=(1, 0, 0), groups=reduced),
            nn.Conv3d(reduced, width, kernel_size=1),
        )
        # Zero output projection: a fresh block starts as the CLIP block it extends.
        last = cast(nn.Conv3d, self.pos_embed[3])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(cast(torch.Tensor, last.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.pos_embed(x))


def _add_to_patches(
    tokens: torch.Tensor, frames: int, grid: tuple[int, int], branch: LocalMHRA, drop_path: nn.Module
) -> torch.Tensor:
    """`tokens` `[B*T, 1+H*W, C]` with `branch` of the patch-token grid added to the patch tokens."""
    batch_frames, length, width = tokens.shape
    patches = tokens[:, 1:].reshape(batch_frames // frames, frames, grid[0], grid[1], width).permute(0, 4, 1, 2, 3)
    patches = patches + drop_path(branch(patches))
    patches = patches.permute(0, 2, 3, 4, 1).reshape(batch_frames, length - 1, width)
    return torch.cat([tokens[:, :1], patches], dim=1)


class LocalUniBlock(nn.Module):
    """One backbone block (official `ResidualAttentionBlock`): [local MHRA], attention within each frame,
    [local MHRA], QuickGELU MLP, each a residual branch."""

    def __init__(self, config: V2Config, drop_path: float) -> None:
        super().__init__()
        width = config.width
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if config.local_mhra != "off":
            self.lmhra1 = LocalMHRA(width, config.mhra_width)
            if config.local_mhra == "double":
                self.lmhra2 = LocalMHRA(width, config.mhra_width)
        self.attn = InProjAttention(width, config.heads)
        self.ln_1 = Fp32LayerNorm(width, eps=NORM_EPS)
        self.mlp = _mlp(width, 4 * width)
        self.ln_2 = Fp32LayerNorm(width, eps=NORM_EPS)
        self.checkpointed = False  # set by `UniFormerV2.set_grad_checkpointing`

    def forward(self, tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
        if hasattr(self, "lmhra1"):
            tokens = _add_to_patches(tokens, frames, grid, self.lmhra1, self.drop_path)
        tokens = tokens + self.drop_path(self.attn(self.ln_1(tokens)))
        if hasattr(self, "lmhra2"):
            tokens = _add_to_patches(tokens, frames, grid, self.lmhra2, self.drop_path)
        return tokens + self.drop_path(self.mlp(self.ln_2(tokens)))


class GlobalUniBlock(nn.Module):
    """One decoder layer (official `Extractor`): the video query token cross-attends to every token of
    every frame (`ln_1` on the query, `ln_3` on the tokens), then a QuickGELU MLP with dropout."""

    def __init__(self, config: V2Config, drop_path: float) -> None:
        super().__init__()
        width = config.width
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.attn = InProjAttention(width, config.heads)
        self.ln_1 = nn.LayerNorm(width, eps=NORM_EPS)
        self.mlp = _mlp(width, config.decoder_hidden, dropout=config.decoder_dropout)
        self.ln_2 = nn.LayerNorm(width, eps=NORM_EPS)
        self.ln_3 = nn.LayerNorm(width, eps=NORM_EPS)
        # The official init: the layer starts as the identity on the query.
        nn.init.xavier_uniform_(cast(nn.Linear, self.mlp.c_fc).weight)
        for layer in (self.attn.out_proj, cast(nn.Linear, self.mlp.c_proj)):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, query: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        query = query + self.drop_path(self.attn(self.ln_1(query), self.ln_3(video)))
        return query + self.drop_path(self.mlp(self.ln_2(query)))


class Transformer(nn.Module):
    """The official `Transformer`: backbone blocks (`resblocks`), and the decoder that reads the blocks in
    `return_layers` (`temporal_cls_token`, `dpe`, `dec`), the fusion weight `balance` and the head `proj`."""

    def __init__(self, config: V2Config) -> None:
        super().__init__()
        width = config.width
        rates = torch.linspace(0, config.drop_path_rate, config.layers, device="cpu").tolist()
        self.resblocks = nn.ModuleList(LocalUniBlock(config, rate) for rate in rates)
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, width))
        count = len(config.return_layers)
        self.dpe = nn.ModuleList(nn.Conv3d(width, width, kernel_size=3, padding=1, groups=width) for _ in range(count))
        for conv in self.dpe:
            nn.init.zeros_(cast(torch.Tensor, cast(nn.Conv3d, conv).bias))
        rates = torch.linspace(0, config.decoder_drop_path_rate, count, device="cpu").tolist()
        self.dec = nn.ModuleList(GlobalUniBlock(config, rate) for rate in rates)
        self.proj = nn.Sequential(
            nn.LayerNorm(width, eps=NORM_EPS), nn.Dropout(config.head_dropout), nn.Linear(width, config.num_classes)
        )
        if not config.frozen:
            self.balance = nn.Parameter(torch.zeros(width))


# A hook on the backbone stream: (0-based block index, function of the tokens after that block, their
# frame count and patch grid, returning the tokens the network goes on with).
Tap = tuple[int, Callable[[torch.Tensor, int, tuple[int, int]], torch.Tensor]]


def patch_map(tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
    """Backbone tokens `[B*T, 1+H*W, C]` -> their patch tokens as a map `[B, C, T, H, W]` (a view)."""
    batch_frames, _, width = tokens.shape
    patches = tokens[:, 1:].reshape(batch_frames // frames, frames, grid[0], grid[1], width)
    return patches.permute(0, 4, 1, 2, 3)


class UniFormerV2(VideoNetwork):
    """UniFormerV2 video network; `config` holds its `V2Config`.

    `forward` gives logits. Its layers (`VideoNetwork`) are the backbone blocks 1..L, then L + 1, the
    fused video token: `forward_features` pools a block's patch tokens, or gives the vector the classifier
    reads (after the head's LayerNorm); `logits_and_map` and `block_grid` a block's patch tokens as a map.
    """

    config: V2Config
    cost_groups = ("conv1", "transformer.resblocks", "transformer.dpe", "transformer.dec")
    head_prefixes = ("transformer.proj.2.",)
    checkpoint_groups = ("backbone",)
    # What the released "frozen" models keep from CLIP unchanged in training (the official wrapper's list).
    frozen_modules = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer.resblocks")

    def __init__(self, config: V2Config) -> None:
        super().__init__()
        self.config = config
        width, patch = config.width, config.patch_size
        if config.temporal_downsample:
            self.conv1 = nn.Conv3d(3, width, (3, patch, patch), (2, patch, patch), (1, 0, 0), bias=False)
        else:
            self.conv1 = nn.Conv3d(3, width, (1, patch, patch), (1, patch, patch), bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(config.grid**2 + 1, width))
        self.ln_pre = Fp32LayerNorm(width, eps=NORM_EPS)
        self.transformer = Transformer(config)

    @property
    def head(self) -> nn.Linear:
        """The classifier's linear layer (`transformer.proj.2`): `head(forward_features(x)) == forward(x)`."""
        return cast(nn.Linear, self.transformer.proj[2])

    def blocks(self) -> list[LocalUniBlock]:
        return [cast(LocalUniBlock, block) for block in self.transformer.resblocks]

    def set_grad_checkpointing(self, enable: bool = True, blocks: tuple[int, ...] | int | None = None) -> None:
        """Recompute the activations of the first `blocks` backbone blocks (all when None) in backward
        (the official USE_CHECKPOINT / CHECKPOINT_NUM)."""
        count = blocks[0] if isinstance(blocks, tuple) else blocks
        for index, block in enumerate(self.blocks()):
            block.checkpointed = enable and (count is None or index < count)

    @property
    def checkpoints_by_default(self) -> bool:
        """L/14 (width 1024 and more) recomputes every backbone block in training: its activations at 8x224 are
        most of a training step's memory (benchmarks/README.md); the official code checkpoints L/14 too."""
        return self.config.width >= 1024

    def freeze_backbone(self) -> None:
        """Train the decoder and head only (`frozen_modules` keep their weights), as the frozen models were."""
        for name, parameter in self.named_parameters():
            if name.startswith(self.frozen_modules):
                parameter.requires_grad_(False)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, int, tuple[int, int]]:
        """Clips `[B, 3, T, H, W]` -> backbone tokens `[B*T', 1+H'*W', C]` (class token first, positions
        added, `ln_pre`), the token frame count T' and the patch grid (H', W')."""
        x = self.conv1(x)
        batch, width, frames, height, breadth = x.shape
        patches = x.permute(0, 2, 3, 4, 1).reshape(batch * frames, height * breadth, width)
        cls = self.class_embedding.to(patches.dtype).expand(batch * frames, 1, width)
        tokens = torch.cat([cls, patches], dim=1) + self.positional_embedding.to(patches.dtype)
        return self.ln_pre(tokens), frames, (height, breadth)

    def run_block(self, index: int, tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
        block = self.blocks()[index]
        if block.checkpointed and torch.is_grad_enabled():
            return cast(torch.Tensor, checkpoint(block, tokens, frames, grid, use_reentrant=False))
        return cast(torch.Tensor, block(tokens, frames, grid))

    def decoder_input(self, j: int, tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """What decoder layer `j` reads from a backbone block's tokens: every frame's tokens, the patch
        tokens plus their depthwise 3-D position encoding `dpe[j]` (a copy: the backbone stream is not
        changed), flattened frame by frame to `[B, T*(1+H*W), C]`."""
        batch_frames, length, width = tokens.shape
        video = tokens.reshape(batch_frames // frames, frames, length, width)
        position = self.transformer.dpe[j](patch_map(tokens, frames, grid)).flatten(3).permute(0, 2, 3, 1)
        video = torch.cat([video[:, :, :1], video[:, :, 1:] + position], dim=2)
        return video.reshape(-1, frames * length, width)

    def fused_token(self, x: torch.Tensor, tap: Tap | None = None) -> torch.Tensor:
        """The token the head classifies, `[B, C]`: the decoder's query, mixed with the mean over time of
        the last block's class tokens by `sigmoid(balance)` (frozen models: the query alone). `tap`
        replaces the tokens after one block by what its function returns."""
        tokens, frames, grid = self.embed(x)
        query = self.transformer.temporal_cls_token.to(tokens.dtype).expand(tokens.shape[0] // frames, 1, -1)
        decoder = iter(enumerate(self.config.return_layers))
        following = next(decoder, None)
        for index in range(self.config.layers):
            tokens = self.run_block(index, tokens, frames, grid)
            if tap is not None and tap[0] == index:
                tokens = tap[1](tokens, frames, grid)
            if following is not None and following[1] == index:
                j = following[0]
                query = self.transformer.dec[j](query, self.decoder_input(j, tokens, frames, grid))
                following = next(decoder, None)
        query = query[:, 0]
        if self.config.frozen:
            return query
        weight = torch.sigmoid(self.transformer.balance).to(query.dtype)
        class_tokens = tokens[:, 0].reshape(-1, frames, tokens.shape[-1]).mean(dim=1)
        return (1 - weight) * query + weight * class_tokens

    @property
    def feature_layers(self) -> int:
        return self.config.layers + 1

    @property
    def clip_size(self) -> int:
        return self.config.resolution

    @property
    def map_layers(self) -> int:
        return self.config.layers

    @property
    def default_map_layer(self) -> int:
        """The last backbone block. Its patch tokens are the decoder's last input; the blocks before it see
        one frame at a time (Kinetics design) or add only a 3-frame temporal conv (local MHRA). Measured as
        for UniFormer (tests/test_explain.py: a tiny model trained on clips whose class only the top-left
        quadrant's motion decides; the share of the map in that quadrant, 25% being chance): Kinetics
        design (no local MHRA, decoder on the last 2 of 4 blocks), two trainings: 63% and 57% on the last
        block, 41-46% and 37-44% on blocks 1-3; Something-Something design (double local MHRA): 51% on the
        last block, 59-63% on blocks 1-3. Every released model but the Something-Something ones has the
        Kinetics design."""
        return self.config.layers

    def repeated_blocks(self) -> list[nn.Module]:
        return [*self.transformer.resblocks, *self.transformer.dec]

    def forward_features(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The representation of clips `[B, 3, T, H, W]`, `[B, C]`.

        `layer` None or L + 1 (L backbone blocks): what the classifier reads (the fused token after the
        head's LayerNorm), so `model.head(model.forward_features(x)) == model(x)` in eval mode. `layer`
        1..L: the mean of that backbone block's patch tokens over time and space.
        """
        if layer is not None:
            check_layer(layer, self.feature_layers)
        if layer is None or layer == self.feature_layers:
            return cast(torch.Tensor, self.transformer.proj[0](self.fused_token(x)))
        return self.block_grid(x, layer).flatten(2).mean(-1)

    def block_grid(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Backbone block `layer`'s (1-based) patch tokens as a map `[B, C, T', H', W']`."""
        check_layer(layer, self.config.layers)
        tokens, frames, grid = self.embed(x)
        for index in range(layer):
            tokens = self.run_block(index, tokens, frames, grid)
        return patch_map(tokens, frames, grid)

    def logits_and_map(self, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, block `layer`'s patch tokens as a map): the blocks after it, and the decoder, read the
        tokens rebuilt from that map, so the logits' gradient reaches it."""
        check_layer(layer, self.map_layers)
        maps: list[torch.Tensor] = []

        def through_map(tokens: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
            maps.append(patch_map(tokens, frames, grid))
            patches = maps[-1].permute(0, 2, 3, 4, 1).reshape(tokens.shape[0], -1, tokens.shape[-1])
            return torch.cat([tokens[:, :1], patches], dim=1)

        logits = self.transformer.proj(self.fused_token(x, tap=(layer - 1, through_map)))
        return cast(torch.Tensor, logits), maps[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.transformer.proj(self.fused_token(x)))
