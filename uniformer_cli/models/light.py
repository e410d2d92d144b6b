"""UniFormer-XXS / -XS, the light "hourglass" video networks (official `Uniformer_light*`, MODEL.md 3).

Stages 3-4 carry a class token and an Evo-ViT style token score: most blocks attend over the best-scoring
tokens plus one score-weighted representative of the rest, whose update is then given to every dropped
token. Token positions stay integer indices (gather/scatter), so half precision cannot corrupt them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uniformer_cli.models.config import ATTENTION_NORM_EPS, ModelConfig
from uniformer_cli.models.layers import (
    CBlock,
    SABlock,
    StagedModel,
    depthwise,
    drop_path_rates,
    grid_to_tokens,
    init_weights,
    later_patch_embeds,
    run_block,
    tokens_to_grid,
)

Scores = torch.Tensor | None


class ConvStem(nn.Module):
    """`patch_embed1` of the light models: two 3x3x3 convs with BatchNorm and GELU (no LayerNorm)."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        half = out_dim // 2
        self.proj = nn.Sequential(
            nn.Conv3d(3, half, kernel_size=3, stride=(1, 2, 2), padding=1),
            nn.BatchNorm3d(half),
            nn.GELU(),
            nn.Conv3d(half, out_dim, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm3d(out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """`tokens[b, indices[b]]` for `[B, N, C]` tokens and `[B, K]` integer indices."""
    return tokens.gather(1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class EvoBlock(SABlock):
    """Attention block with token selection: keeps `int(N * keep_ratio)` tokens by score (MODEL.md 3.3).

    `forward(cls, x, scores)` takes and returns the class token `[B, 1, C]`, the grid `[B, C, T, H, W]`
    and the fp32 token scores `[B, T*H*W]` (None before the first block of stage 3).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        layer_scale: float | None,
        keep_ratio: float,
        norm_eps: float = ATTENTION_NORM_EPS,
    ) -> None:
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop_path, layer_scale, norm_eps=norm_eps)
        self.keep_ratio = keep_ratio
        # The score update weight; equal to the keep ratio in every released model.
        self.trade_off = keep_ratio

    def update_scores(self, old: Scores, attention: torch.Tensor) -> torch.Tensor:
        return attention if old is None else (1 - self.trade_off) * old + self.trade_off * attention

    # SABlock's layers, with the class token and the token scores carried through the stage.
    def forward(  # type: ignore[override]
        self, cls: torch.Tensor, x: torch.Tensor, scores: Scores
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x + depthwise(self.pos_embed, x)
        tokens = grid_to_tokens(x)
        if self.keep_ratio >= 1:
            cls, tokens, scores = self.full_update(cls, tokens, scores)
        else:
            cls, tokens, scores = self.selective_update(cls, tokens, scores)
        return cls, tokens_to_grid(tokens, x.shape), scores

    def full_update(
        self, cls: torch.Tensor, tokens: torch.Tensor, scores: Scores
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sequence = torch.cat([cls, tokens], dim=1)
        attended, class_row = self.attn.attend(self.norm1(sequence), class_row=True)
        assert class_row is not None
        scores = self.update_scores(scores, class_row[:, 1:])
        sequence = sequence + self.drop_path(self.scaled(self.gamma_1, attended))
        sequence = sequence + self.drop_path(self.scaled(self.gamma_2, self.mlp(self.norm2(sequence))))
        return sequence[:, :1], sequence[:, 1:], scores

    def selective_update(
        self, cls: torch.Tensor, tokens: torch.Tensor, scores: Scores
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if scores is None:
            raise ValueError("a token-selection block needs the scores of an earlier full block")
        kept_count = int(tokens.shape[1] * self.keep_ratio)
        order = scores.argsort(dim=1, descending=True)
        kept_index, dropped_index = order[:, :kept_count], order[:, kept_count:]
        kept, dropped = gather_tokens(tokens, kept_index), gather_tokens(tokens, dropped_index)
        kept_scores, dropped_scores = scores.gather(1, kept_index), scores.gather(1, dropped_index)
        weights = dropped_scores / dropped_scores.sum(dim=1, keepdim=True)
        representative = (weights.unsqueeze(-1) * dropped).sum(dim=1, keepdim=True).to(tokens.dtype)

        sequence = torch.cat([cls, kept, representative], dim=1)
        attended, class_row = self.attn.attend(self.norm1(sequence), class_row=True)
        assert class_row is not None
        kept_scores = self.update_scores(kept_scores, class_row[:, 1 : kept_count + 1])
        attention_branch = self.scaled(self.gamma_1, attended)
        sequence = sequence + self.drop_path(attention_branch)
        mlp_branch = self.scaled(self.gamma_2, self.mlp(self.norm2(sequence)))
        sequence = sequence + self.drop_path(mlp_branch)
        # Fast update: each dropped token gets the representative's increment (without drop path, as
        # the official code does).
        dropped = dropped + attention_branch[:, -1:] + mlp_branch[:, -1:]

        # Back to grid order; under autocast the updated tokens may have another dtype than the input.
        updated = torch.cat([sequence[:, 1:-1], dropped], dim=1)
        restored = updated.new_zeros(tokens.shape).scatter(1, order.unsqueeze(-1).expand_as(updated), updated)
        restored_scores = torch.zeros_like(scores).scatter(1, order, torch.cat([kept_scores, dropped_scores], dim=1))
        return sequence[:, :1], restored, restored_scores


def pool_scores(scores: torch.Tensor, grid: torch.Size) -> torch.Tensor:
    """Stage-3 scores -> stage-4 grid: 1x2x2 average pool, rescaled to keep each sample's total."""
    batch, _, frames, height, width = grid
    pooled = F.avg_pool3d(scores.reshape(batch, 1, frames, height, width), kernel_size=(1, 2, 2)).reshape(batch, -1)
    return pooled * (scores.sum(dim=1, keepdim=True) / pooled.sum(dim=1, keepdim=True))


class UniFormerLight(StagedModel):
    """UniFormer-XXS/XS. `forward` returns the main logits; `forward_train` also the class-token logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[2]))
        self.patch_embed1 = ConvStem(dims[0])
        self.patch_embed2, self.patch_embed3, self.patch_embed4 = later_patch_embeds(config)
        self.cls_upsample = nn.Linear(dims[2], dims[3])
        rates = drop_path_rates(config)
        ratio, scale, eps = config.mlp_ratio, config.layer_scale, config.norm_eps
        self.blocks1 = nn.ModuleList(CBlock(dims[0], ratio, rate, scale) for rate in rates[0])
        self.blocks2 = nn.ModuleList(CBlock(dims[1], ratio, rate, scale) for rate in rates[1])
        self.blocks3, self.blocks4 = (
            nn.ModuleList(
                EvoBlock(dims[i], dims[i] // config.head_dim, ratio, config.qkv_bias, rate, scale, keep, eps)
                for rate, keep in zip(rates[i], keep_ratios, strict=True)
            )
            for i, keep_ratios in ((2, config.keep_ratio3), (3, config.keep_ratio4))
        )
        self.norm = nn.BatchNorm3d(dims[3])
        self.norm_cls = nn.LayerNorm(dims[3])
        self.head = nn.Linear(dims[3], config.num_classes)
        self.head_cls = nn.Linear(dims[3], config.num_classes)
        init_weights(self)

    def forward_tokens(self, x: torch.Tensor, stages: int = 4) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The class token (`[B, 1, C]` from stage 3 on, else None) and the feature map after `stages`
        stages, before the final norms."""
        x = self.patch_embed1(self.to_layout(x))
        for block in self.blocks1:
            x = run_block(block, x)
        if stages == 1:
            return None, x
        x = self.to_layout(self.patch_embed2(x))
        for block in self.blocks2:
            x = run_block(block, x)
        if stages == 2:
            return None, x
        x = self.to_layout(self.patch_embed3(x))
        cls, scores = self.cls_token.expand(x.shape[0], -1, -1), None
        for block in self.blocks3:
            cls, x, scores = run_block(block, cls, x, scores)
        if stages == 3:
            return cls, x
        if scores is not None:
            scores = pool_scores(scores, x.shape)
        cls = self.cls_upsample(cls)
        x = self.to_layout(self.patch_embed4(x))
        for block in self.blocks4:
            cls, x, scores = run_block(block, cls, x, scores)
        return cls, x

    def forward_stages(self, x: torch.Tensor, stages: int = 4) -> torch.Tensor:
        return self.forward_tokens(x, stages)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_stages(x))

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(logits, token_logits)`: the main head and `head_cls(norm_cls(cls_token))` for the two-head loss."""
        cls, grid = self.forward_tokens(x)
        assert cls is not None
        return self.classify(grid), self.head_cls(self.norm_cls(cls[:, 0]))
