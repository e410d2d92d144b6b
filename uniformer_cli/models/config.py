"""Architecture configuration shared by every UniFormer variant.

A `ModelConfig` is everything needed to rebuild a network from scratch: it is stored in the
metadata of every safetensors file this package writes, so a file alone rebuilds its model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from uniformer_cli.errors import UniformerError
from uniformer_cli.jsonio import dump_json, load_json

Arch = Literal["uniformer", "light"]

# Released keep ratios of the light models' token selection (MODEL.md 3.3): the first stage-3 block
# sees every token, every later block keeps half; they are architecture constants, not weights.
LIGHT_KEEP_XXS = ((1.0,) + (0.5,) * 7, (0.5, 0.5))
LIGHT_KEEP_XS = ((1.0,) + (0.5,) * 8, (0.5, 0.5, 0.5))

# Bounds on what a config may ask for, far above every released model (depth 20, width 512, MLP ratio 4,
# 1000 classes) but low enough that a hostile file or option cannot make us build for hours or
# allocate terabytes before its tensors are compared with it.
MAX_DEPTH = 128  # blocks per stage
MAX_WIDTH = 8192  # channels per stage
MAX_MLP_RATIO = 16.0
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
# LayerNorm epsilon inside the attention blocks of the official models (MODEL.md 1).
ATTENTION_NORM_EPS = 1e-6


def _whole(name: str, value: object, low: int, high: int) -> int:
    """`value` if it is an int (not a bool) in `low..high`, else one clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UniformerError(f"model config {name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise UniformerError(f"model config {name} {value} is out of range ({low}..{high})")
    return value


def _real(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    """`value` as a float if it is a finite number in `[low, high]` (`(low, high]` with `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UniformerError(f"model config {name} must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise UniformerError(f"model config {name} {value:g} is out of range ({bracket}{low:g}, {high:g}])")
    return float(value)


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
    # LayerNorm epsilon inside the attention blocks (`norm1`, `norm2`, `t_norm`): the official 1e-6;
    # checkpoints trained with MMAction2's backbone keep its 1e-5 (PyTorch's default), MODEL.md 1.
    norm_eps: float = ATTENTION_NORM_EPS

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep the frozen dataclass hashable and comparable.
        for name in ("depth", "embed_dim", "keep_ratio3", "keep_ratio4"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.arch not in ("uniformer", "light"):
            raise UniformerError(f"unknown architecture {self.arch!r} (expected 'uniformer' or 'light')")
        if len(self.depth) != 4 or len(self.embed_dim) != 4:
            raise UniformerError("depth and embed_dim need exactly 4 values (one per stage)")
        self._check_ranges()
        for dim in self.embed_dim[2:]:
            if dim % self.head_dim:
                raise UniformerError(f"width {dim} is not a multiple of head_dim {self.head_dim}")
        light_ratios_fit = len(self.keep_ratio3) == self.depth[2] and len(self.keep_ratio4) == self.depth[3]
        if self.arch == "light" and not light_ratios_fit:
            raise UniformerError("light models need one keep ratio per block of stages 3 and 4")
        if self.arch == "light" and self.keep_ratio3 and self.keep_ratio3[0] < 1:
            # Token scores come from the class-token attention of a block that sees every token.
            raise UniformerError("light models need keep ratio 1 in the first block of stage 3")

    def _check_ranges(self) -> None:
        """Types and ranges of every field (configs also come from files and options)."""
        for stage, (depth, width) in enumerate(zip(self.depth, self.embed_dim, strict=True), start=1):
            _whole(f"depth of stage {stage}", depth, 1, MAX_DEPTH)
            _whole(f"width of stage {stage}", width, 1, MAX_WIDTH)
        _whole("head_dim", self.head_dim, 1, max(self.embed_dim[2:]))
        _whole("num_classes", self.num_classes, 1, MAX_CLASSES)
        _real("mlp_ratio", self.mlp_ratio, 0.0, MAX_MLP_RATIO, low_open=True)
        _real("drop_path_rate", self.drop_path_rate, 0.0, 1.0)
        if self.layer_scale is not None:
            _real("layer_scale", self.layer_scale, 0.0, 1e6)
        for name in ("qkv_bias", "split", "std"):
            if not isinstance(getattr(self, name), bool):
                raise UniformerError(f"model config {name} must be true or false, got {getattr(self, name)!r}")
        for ratio in (*self.keep_ratio3, *self.keep_ratio4):
            _real("keep ratio", ratio, 0.0, 1.0, low_open=True)
        _real("norm_eps", self.norm_eps, 0.0, 1.0, low_open=True)

    def replace(self, **changes: object) -> ModelConfig:
        values = asdict(self)
        values.update(changes)
        return ModelConfig(**values)

    def to_json(self) -> str:
        return dump_json(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**config_fields(text, cls, ("depth", "embed_dim", "keep_ratio3", "keep_ratio4")))


def config_fields(text: str, cls: type, lists: tuple[str, ...]) -> dict[str, Any]:
    """The fields of a config dataclass `cls` from its JSON text (`jsonio.load_json`, bounded): an object
    with no unknown field, whose `lists` fields are lists; the dataclass checks the values."""
    try:
        values = load_json(text)
    except ValueError as error:
        raise UniformerError(f"a model config is not JSON: {error}") from None
    if not isinstance(values, dict):
        raise UniformerError("a model config must be a JSON object")
    for name in lists:
        if name in values and not isinstance(values[name], list):
            raise UniformerError(f"model config {name} must be a list, got {values[name]!r}")
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise UniformerError(f"unknown model config fields: {', '.join(sorted(unknown))}")
    return values


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
    """The released family (`FAMILIES` key) whose network `config` is, whatever its head, drop path and
    LayerNorm epsilon; None for a custom architecture."""
    for name, family in FAMILIES.items():
        same_head = replace(
            family,
            num_classes=config.num_classes,
            drop_path_rate=config.drop_path_rate,
            layer_scale=config.layer_scale,
            split=config.split,
            std=config.std,
            norm_eps=config.norm_eps,
        )
        if same_head == config:
            return name
    return None
