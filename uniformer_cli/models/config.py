"""Architecture configuration shared by every UniFormer variant.

A `ModelConfig` is everything needed to rebuild a network from scratch: it is stored in the
metadata of every safetensors file this package writes, so a file alone rebuilds its model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

from uniformer_cli.errors import UniformerError

Arch = Literal["uniformer", "light"]

# Released keep ratios of the light models' token selection (MODEL.md 3.3): the first stage-3 block
# sees every token, every later block keeps half; they are architecture constants, not weights.
LIGHT_KEEP_XXS = ((1.0,) + (0.5,) * 7, (0.5, 0.5))
LIGHT_KEEP_XS = ((1.0,) + (0.5,) * 8, (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one UniFormer network (S/B: arch "uniformer"; XXS/XS: arch "light")."""

    arch: Arch = "uniformer"
    depth: tuple[int, int, int, int] = (3, 4, 8, 3)
    embed_dim: tuple[int, int, int, int] = (64, 128, 320, 512)
    head_dim: int = 64
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_classes: int = 400
    drop_path_rate: float = 0.0
    # S/B only: divided space-time attention in stages 3-4, and 3x2x2 patch embeddings 2-4.
    split: bool = False
    std: bool = False
    # Light only: layer scale init value (None = no gammas), keep ratios of stages 3 and 4
    # (the trade-off lambda of a block equals its keep ratio in every release).
    layer_scale: float | None = None
    keep_ratio3: tuple[float, ...] = field(default_factory=tuple)
    keep_ratio4: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep the frozen dataclass hashable and comparable.
        for name in ("depth", "embed_dim", "keep_ratio3", "keep_ratio4"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.arch not in ("uniformer", "light"):
            raise UniformerError(f"unknown architecture {self.arch!r} (expected 'uniformer' or 'light')")
        if len(self.depth) != 4 or len(self.embed_dim) != 4:
            raise UniformerError("depth and embed_dim need exactly 4 values (one per stage)")
        for dim in self.embed_dim[2:]:
            if dim % self.head_dim:
                raise UniformerError(f"width {dim} is not a multiple of head_dim {self.head_dim}")
        light_ratios_fit = len(self.keep_ratio3) == self.depth[2] and len(self.keep_ratio4) == self.depth[3]
        if self.arch == "light" and not light_ratios_fit:
            raise UniformerError("light models need one keep ratio per block of stages 3 and 4")
        if self.arch == "light" and self.keep_ratio3 and self.keep_ratio3[0] < 1:
            # Token scores come from the class-token attention of a block that sees every token.
            raise UniformerError("light models need keep ratio 1 in the first block of stage 3")

    def replace(self, **changes: object) -> ModelConfig:
        values = asdict(self)
        values.update(changes)
        return ModelConfig(**values)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UniformerError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**values)


# The four released families (MODEL.md 6.1); class count and drop path are set per zoo entry.
FAMILIES: dict[str, ModelConfig] = {
    "s": ModelConfig(depth=(3, 4, 8, 3), embed_dim=(64, 128, 320, 512), head_dim=64, mlp_ratio=4.0),
    "b": ModelConfig(depth=(5, 8, 20, 7), embed_dim=(64, 128, 320, 512), head_dim=64, mlp_ratio=4.0),
    "xxs": ModelConfig(
        arch="light",
        depth=(2, 5, 8, 2),
        embed_dim=(56, 112, 224, 448),
        head_dim=28,
        mlp_ratio=3.0,
        keep_ratio3=LIGHT_KEEP_XXS[0],
        keep_ratio4=LIGHT_KEEP_XXS[1],
    ),
    "xs": ModelConfig(
        arch="light",
        depth=(3, 5, 9, 3),
        embed_dim=(64, 128, 256, 512),
        head_dim=32,
        mlp_ratio=3.0,
        keep_ratio3=LIGHT_KEEP_XS[0],
        keep_ratio4=LIGHT_KEEP_XS[1],
    ),
}


def family_of(config: ModelConfig) -> str | None:
    """The released family (`FAMILIES` key) whose network `config` is, whatever its head and drop path;
    None for a custom architecture."""
    for name, family in FAMILIES.items():
        same_head = replace(
            family,
            num_classes=config.num_classes,
            drop_path_rate=config.drop_path_rate,
            layer_scale=config.layer_scale,
            split=config.split,
            std=config.std,
        )
        if same_head == config:
            return name
    return None
