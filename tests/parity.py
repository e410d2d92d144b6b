"""The parity fixtures (tests/fixtures/parity, see its README): configs, weights, input, official logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from uniformer_cli.models import create_model
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.layers import StagedModel

PARITY = Path(__file__).parent / "fixtures" / "parity"

SMALL = ModelConfig(depth=(1, 1, 2, 1), embed_dim=(16, 32, 64, 128), head_dim=16, mlp_ratio=4.0, num_classes=10)
SMALL_LIGHT = ModelConfig(
    arch="light",
    depth=(1, 1, 3, 2),
    embed_dim=(16, 32, 48, 96),
    head_dim=16,
    mlp_ratio=3.0,
    num_classes=10,
    keep_ratio3=(1.0, 0.5, 0.5),
    keep_ratio4=(0.5, 0.5),
)
FIXTURES = {"small": SMALL, "small_light": SMALL_LIGHT, "small_light_ls": SMALL_LIGHT.replace(layer_scale=0.1)}


def fixture_input() -> torch.Tensor:
    return torch.from_numpy(np.load(PARITY / "small_input.npy"))


def official_logits(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(PARITY / f"{name}_logits.npy"))


def official_keys(name: str) -> list[tuple[str, list[int], str]]:
    """`(key, shape, dtype)` in the official state_dict order."""
    return [(key, shape, dtype) for key, shape, dtype in json.loads((PARITY / f"{name}_keys.json").read_text())]


def fixture_model(name: str) -> StagedModel:
    """The fixture's network with its official weights loaded strictly, in eval mode."""
    model = create_model(FIXTURES[name])
    model.load_state_dict(torch.load(PARITY / f"{name}_official.pth", weights_only=True), strict=True)
    return model.eval()
