"""UniFormer-S / -B video networks (official `Uniformer` class, MODEL.md 2)."""

from __future__ import annotations

import torch
from torch import nn

from uniformer_cli.models.config import ATTENTION_NORM_EPS, ModelConfig
from uniformer_cli.models.layers import (
    Attention,
    CBlock,
    LayerScaled,
    Mlp,
    PatchEmbed,
    SABlock,
    StagedModel,
    depthwise,
    depthwise_conv,
    drop_path_rates,
    init_weights,
    later_patch_embeds,
    run_block,
    tokens_to_grid,
)


class SplitSABlock(LayerScaled):
    """Divided space-time attention (`SPLIT`): temporal attention feeds the spatial one's input only."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        *,
        norm_eps: float = ATTENTION_NORM_EPS,
    ) -> None:
        super().__init__(None, (dim,), drop_path)
        self.pos_embed = depthwise_conv(dim, 3)
        self.t_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.t_attn = Attention(dim, num_heads, qkv_bias)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def reset_temporal_attention(self) -> None:
        """The official init makes the temporal branch a zero update that can still learn (MODEL.md 5)."""
        nn.init.zeros_(self.t_attn.qkv.weight)
        if self.t_attn.qkv.bias is not None:
            nn.init.zeros_(self.t_attn.qkv.bias)
        nn.init.ones_(self.t_attn.proj.weight)
        nn.init.zeros_(self.t_attn.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + depthwise(self.pos_embed, x)
        batch, channels, frames, height, width = x.shape
        grid = x.permute(0, 2, 3, 4, 1).reshape(batch, frames, height * width, channels)
        # One sequence of T tokens per spatial position.
        temporal = grid.transpose(1, 2).reshape(batch * height * width, frames, channels)
        temporal = temporal + self.drop_path(self.t_attn(self.t_norm(temporal)))
        # One sequence of H*W tokens per frame; the residual is the grid before the temporal branch.
        spatial_in = temporal.reshape(batch, height * width, frames, channels).transpose(1, 2)
        spatial_in = spatial_in.reshape(batch * frames, height * width, channels)
        residual = grid.reshape(batch * frames, height * width, channels)
        tokens = residual + self.drop_path(self.attn(self.norm1(spatial_in)))
        tokens = tokens.reshape(batch, frames * height * width, channels)
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens_to_grid(tokens, x.shape)


class UniFormer(StagedModel):
    """UniFormer-S/B: two convolution stages (CBlock), two global attention stages, BatchNorm + mean + head.

    Input float32 `[B, 3, T, H, W]`, output logits `[B, num_classes]`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.embed_dim
        self.patch_embed1 = PatchEmbed(3, dims[0], kernel=(3, 4, 4), stride=(2, 4, 4), padding=(1, 0, 0))
        self.patch_embed2, self.patch_embed3, self.patch_embed4 = later_patch_embeds(config)
        rates = drop_path_rates(config)
        self.blocks1 = nn.ModuleList(CBlock(dims[0], config.mlp_ratio, rate) for rate in rates[0])
        self.blocks2 = nn.ModuleList(CBlock(dims[1], config.mlp_ratio, rate) for rate in rates[1])
        attention_block = SplitSABlock if config.split else SABlock
        eps = config.norm_eps
        self.blocks3, self.blocks4 = (
            nn.ModuleList(
                attention_block(
                    dims[i], dims[i] // config.head_dim, config.mlp_ratio, config.qkv_bias, rate, norm_eps=eps
                )
                for rate in rates[i]
            )
            for i in (2, 3)
        )
        self.norm = nn.BatchNorm3d(dims[3])
        self.head = nn.Linear(dims[3], config.num_classes)
        init_weights(self)
        for block in self.modules():
            if isinstance(block, SplitSABlock):
                block.reset_temporal_attention()

    def forward_stages(self, x: torch.Tensor, stages: int = 4) -> torch.Tensor:
        """The feature map after `stages` stages; 4: `[B, embed_dim[3], T/2, H/32, W/32]`, before the final
        norm."""
        embeds = (self.patch_embed1, self.patch_embed2, self.patch_embed3, self.patch_embed4)
        x = self.to_layout(x)
        for embed, blocks in list(zip(embeds, self.stages(), strict=True))[:stages]:
            x = self.to_layout(embed(x))
            for block in blocks:
                x = run_block(block, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_stages(x))
