"""Architecture configuration of UniFormerV2 (ICCV 2023), the CLIP-ViT based family.

A `V2Config` rebuilds a UniFormerV2 network from scratch, as `ModelConfig` does for v1: it is stored
in the metadata of every safetensors file (its `arch` is "v2"), so a file alone rebuilds its model.
Needs no torch. The fields follow the official configuration (OpenGVLab/UniFormerV2,
`slowfast/config/defaults.py` section `UNIFORMERV2` and `slowfast/models/uniformerv2_model.py`):
docs/MODEL.md, section "UniFormerV2", says what each one does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, get_args

from uniformer_cli.errors import UniformerError
from uniformer_cli.jsonio import dump_json, load_json
from uniformer_cli.models.config import FAMILIES, MAX_CLASSES, ModelConfig, _real, _whole, config_fields

LocalMhra = Literal["off", "single", "double"]
LOCAL_MHRA: tuple[LocalMhra, ...] = get_args(LocalMhra)

# Far above the released models (24 blocks, width 1024, 336 px, patch 14) and low enough that a hostile
# file cannot make us allocate terabytes before its tensors are compared with the model.
MAX_V2_LAYERS = 96
MAX_V2_WIDTH = 8192
MAX_V2_RESOLUTION = 4096
MAX_V2_PATCH = 64


@dataclass(frozen=True)
class V2Config:
    """Hyper-parameters of one UniFormerV2 network.

    Backbone: a CLIP ViT (`layers` blocks of width `width`, `width // head_dim` heads, MLP 4x, a
    `patch_size` patch embedding without bias, `(resolution // patch_size) ** 2 + 1` positions),
    each block optionally armed with local MHRA (`local_mhra`: none, one before attention, or one
    before attention and one before the MLP). `temporal_downsample`: the patch embedding has a
    3-frame kernel and stride 2 in time. Decoder: one global UniBlock per block index in
    `return_layers` (0-based), width `width`, `width // head_dim` heads, MLP `decoder_mlp_ratio`.
    `frozen`: the released "frozen" models classify the decoder's token alone (no `balance`).
    The drop / dropout rates only matter for training.
    """

    arch: Literal["v2"] = "v2"
    patch_size: int = 16
    resolution: int = 224
    width: int = 768
    layers: int = 12
    head_dim: int = 64
    return_layers: tuple[int, ...] = (8, 9, 10, 11)
    decoder_mlp_ratio: float = 4.0
    local_mhra: LocalMhra = "off"
    mhra_reduction: float = 1.5
    temporal_downsample: bool = False
    frozen: bool = False
    num_classes: int = 400
    drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    decoder_dropout: float = 0.5
    head_dropout: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "return_layers", tuple(self.return_layers))  # JSON gives a list
        if self.arch != "v2":
            raise UniformerError(f"a UniFormerV2 config has arch 'v2', got {self.arch!r}")
        _whole("patch_size", self.patch_size, 1, MAX_V2_PATCH)
        _whole("resolution", self.resolution, self.patch_size, MAX_V2_RESOLUTION)
        _whole("width", self.width, 1, MAX_V2_WIDTH)
        _whole("layers", self.layers, 1, MAX_V2_LAYERS)
        _whole("head_dim", self.head_dim, 1, self.width)
        _whole("num_classes", self.num_classes, 1, MAX_CLASSES)
        if self.width % self.head_dim:
            raise UniformerError(f"width {self.width} is not a multiple of head_dim {self.head_dim}")
        if not self.return_layers:
            raise UniformerError("return_layers needs at least one block index (the decoder's inputs)")
        for index in self.return_layers:
            _whole("return layer", index, 0, self.layers - 1)
        if list(self.return_layers) != sorted(set(self.return_layers)):
            raise UniformerError(f"return_layers must be increasing block indices, got {list(self.return_layers)}")
        if self.local_mhra not in LOCAL_MHRA:
            raise UniformerError(f"local_mhra must be one of {', '.join(LOCAL_MHRA)}, got {self.local_mhra!r}")
        _real("decoder_mlp_ratio", self.decoder_mlp_ratio, 0.0, 16.0, low_open=True)
        _real("mhra_reduction", self.mhra_reduction, 1.0, float(self.width))
        for name in ("drop_path_rate", "decoder_drop_path_rate", "decoder_dropout", "head_dropout"):
            _real(name, getattr(self, name), 0.0, 1.0)
        for name in ("temporal_downsample", "frozen"):
            if not isinstance(getattr(self, name), bool):
                raise UniformerError(f"model config {name} must be true or false, got {getattr(self, name)!r}")

    @property
    def heads(self) -> int:
        """Attention heads of every backbone block and decoder layer (64 channels each when released)."""
        return self.width // self.head_dim

    @property
    def grid(self) -> int:
        """Patches per side of the positional embedding."""
        return self.resolution // self.patch_size

    @property
    def mhra_width(self) -> int:
        """Channels inside a local MHRA (the official `int(width // 1.5)`: 512 for B, 682 for L)."""
        return int(self.width // self.mhra_reduction)

    @property
    def decoder_hidden(self) -> int:
        return round(self.decoder_mlp_ratio * self.width)

    @property
    def frame_stride(self) -> int:
        """Input frames per temporal token (2 with temporal downsampling)."""
        return 2 if self.temporal_downsample else 1

    def replace(self, **changes: object) -> V2Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return dump_json(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> V2Config:
        return cls(**config_fields(text, cls, ("return_layers",)))


def last_layers(layers: int, count: int) -> tuple[int, ...]:
    """The last `count` block indices: the decoder's inputs in every released configuration."""
    return tuple(range(layers - count, layers))


# The released backbones (official `uniformerv2_b16`, `uniformerv2_l14`, `uniformerv2_l14_336`) with the
# Kinetics decoder (the last 4 blocks, no local MHRA); zoo entries change what their configs change.
V2_FAMILIES: dict[str, V2Config] = {
    "v2-b16": V2Config(patch_size=16, resolution=224, width=768, layers=12, return_layers=last_layers(12, 4)),
    "v2-l14": V2Config(patch_size=14, resolution=224, width=1024, layers=24, return_layers=last_layers(24, 4)),
    "v2-l14-336": V2Config(patch_size=14, resolution=336, width=1024, layers=24, return_layers=last_layers(24, 4)),
}


V2_DISPLAY = {"v2-b16": "B/16", "v2-l14": "L/14", "v2-l14-336": "L/14@336"}

# Every architecture a command names with `--arch`: UniFormer's (s, b, xxs, xs) and UniFormerV2's backbones.
ARCHITECTURES: dict[str, ModelConfig | V2Config] = {**FAMILIES, **V2_FAMILIES}


def v2_family_of(config: V2Config) -> str | None:
    """The released backbone (`V2_FAMILIES` key) `config` is built on, whatever its decoder and head."""
    for name, family in V2_FAMILIES.items():
        if (family.patch_size, family.resolution, family.width, family.layers, family.head_dim) == (
            config.patch_size,
            config.resolution,
            config.width,
            config.layers,
            config.head_dim,
        ):
            return name
    return None


def v2_backbone(config: V2Config) -> str:
    """The backbone's name as the paper writes it (UniFormerV2-B/16), or its shape for a custom one."""
    family = v2_family_of(config)
    if family:
        return f"UniFormerV2-{V2_DISPLAY.get(family, family)}"
    return (
        f"UniFormerV2 (patch {config.patch_size}, {config.resolution} px, width {config.width}, {config.layers} blocks)"
    )


def describe_v2(config: V2Config) -> str:
    """One line naming a UniFormerV2 architecture, for messages and tables."""
    backbone = v2_backbone(config)
    extras = [f"decoder on {len(config.return_layers)} blocks"]
    if config.local_mhra != "off":
        extras.append(f"{config.local_mhra} local MHRA")
    if config.temporal_downsample:
        extras.append("temporal downsampling")
    if config.frozen:
        extras.append("frozen")
    return f"{backbone} ({', '.join(extras)}, {config.num_classes} classes)"


def config_from_json(text: str) -> ModelConfig | V2Config:
    """The config a safetensors file stores, of either family (its `arch` says which)."""
    try:
        values = load_json(text)
    except ValueError as error:
        raise UniformerError(f"a model config is not JSON: {error}") from None
    if isinstance(values, dict) and values.get("arch") == "v2":
        return V2Config.from_json(text)
    return ModelConfig.from_json(text)
