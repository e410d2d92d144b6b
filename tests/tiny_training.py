"""Train a tiny UniFormer in memory for a few seconds: the features probe and the Grad-CAM test need a
model that has learnt something, and the `train` command's full loop would cost a minute."""

from __future__ import annotations

import torch

from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.models.config_v2 import V2Config, last_layers

TINY_CONFIG = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 64), head_dim=16)
# A tiny UniFormerV2 of the Kinetics design (no local MHRA, the decoder on the last blocks) for 64 px clips.
TINY_V2_CONFIG = V2Config(
    patch_size=8,
    resolution=64,
    width=32,
    layers=4,
    head_dim=16,
    return_layers=last_layers(4, 2),
    num_classes=4,
    decoder_dropout=0.0,
    head_dropout=0.0,
)


def train_tiny(
    clips: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    config: ModelConfig | V2Config = TINY_CONFIG,
) -> torch.nn.Module:
    """A `config` network trained with AdamW on `clips` `[N, 3, T, S, S]`; returned in eval mode."""
    torch.manual_seed(seed)
    model = create_model(config.replace(num_classes=num_classes))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread
    try:
        for _ in range(epochs):
            order = torch.randperm(len(clips))
            for start in range(0, len(clips), batch_size):
                batch = order[start : start + batch_size]
                loss = torch.nn.functional.cross_entropy(model(clips[batch]), labels[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
