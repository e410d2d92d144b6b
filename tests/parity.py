"""The parity fixtures (tests/fixtures/parity, see its README): configs, weights, input, official logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from uniformer_cli.models import create_model
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config
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


# UniFormerV2 fixtures (README "UniFormerV2 fixtures"): the official keys carry the PySlowFast wrapper's
# `backbone.` prefix; the input differs per fixture (frames and side follow the configuration).
V2_FIXTURES = {
    "v2_b16": V2Config(
        patch_size=16, resolution=48, width=64, layers=4, head_dim=16, return_layers=(2, 3), num_classes=10
    ),
    "v2_l14": V2Config(
        patch_size=14, resolution=56, width=64, layers=4, head_dim=16, return_layers=(1, 2, 3), num_classes=10
    ),
    "v2_l14_336_frozen": V2Config(
        patch_size=14, resolution=84, width=64, layers=3, head_dim=16, return_layers=(2,), frozen=True, num_classes=10
    ),
    "v2_sth": V2Config(
        patch_size=16,
        resolution=48,
        width=64,
        layers=4,
        head_dim=16,
        return_layers=(1, 2, 3),
        local_mhra="double",
        temporal_downsample=True,
        num_classes=10,
    ),
    "v2_single": V2Config(
        patch_size=16,
        resolution=32,
        width=48,
        layers=3,
        head_dim=16,
        return_layers=(0, 2),
        local_mhra="single",
        num_classes=10,
    ),
}
# MMAction2's port of the same network (backbone `norm` + `cls_head.fc_cls` instead of `proj.0` / `proj.2`).
V2_MMACTION = V2Config(
    patch_size=16,
    resolution=48,
    width=64,
    layers=4,
    head_dim=16,
    return_layers=(2, 3),
    local_mhra="double",
    num_classes=10,
)


def v2_input(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(PARITY / f"{name}_input.npy"))


def v2_official_state(name: str) -> dict[str, torch.Tensor]:
    """The fixture's official state_dict with the wrapper's `backbone.` prefix removed (our model's keys)."""
    state = torch.load(PARITY / f"{name}_official.pth", weights_only=True)
    return {key.removeprefix("backbone."): value for key, value in state.items()}


def v2_fixture_model(name: str) -> torch.nn.Module:
    model = create_model(V2_FIXTURES[name])
    model.load_state_dict(v2_official_state(name), strict=True)
    return model.eval()
