"""The model zoo: one entry per released UniFormer video checkpoint, the single source of truth.

Every command (predict, eval, flops, train, convert, models) reads these entries; nothing else in the
package repeats an architecture, a protocol, a Hub file or a paper figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Literal

from uniformer_cli.errors import UniformerError
from uniformer_cli.models.config import FAMILIES, ModelConfig

Sampling = Literal["dense", "segment", "sparse"]
ChannelOrder = Literal["rgb", "bgr"]

LABEL_SETS = ("k400", "k600", "sthv1", "sthv2", "ucf101", "hmdb51")
# Class counts of the label sets (the HMDB51 head may carry 101 rows, MODEL.md 6.2).
LABEL_SET_SIZES = {"k400": 400, "k600": 600, "sthv1": 174, "sthv2": 174, "ucf101": 101, "hmdb51": 51}
# Datasets the official code reads as JPEG frame folders (Sth, HMDB51 loaders; DATA.md 2.2, 4.2).
FRAME_FOLDER_SETS = ("sthv1", "sthv2", "hmdb51")


@dataclass(frozen=True)
class Recipe:
    """The released training recipe after the official run.sh overrides (DATA.md 7.4)."""

    init: str  # "imagenet" or the zoo name of the video checkpoint it was fine-tuned from
    batch_size: int  # videos per step on one 8-GPU machine
    lr: float
    epochs: int
    warmup_epochs: int
    weight_decay: float
    randaug: str
    flip: bool


@dataclass(frozen=True)
class ZooEntry:
    name: str
    official_name: str
    family: str  # key of models.config.FAMILIES: s, b, xxs, xs
    dataset: str  # label set (k400, k600, sthv1, sthv2, ucf101, hmdb51)
    frames: int
    stride: int | None  # dense sampling rate; None for segment / sparse sampling
    sampling: Sampling
    clips: int
    crops: int
    size: int  # test short side and square crop
    channel_order: ChannelOrder  # what the checkpoint was trained on (Sth/HMDB frames are BGR)
    top1: float  # paper / official README, multi-view
    gflops: float  # total over all test views, multiply-accumulates
    gflops_per_view: float
    drop_path: float
    recipe: Recipe
    hub_repo: str | None = None  # None: only on the authors' Google Drive / Baidu
    hub_file: str | None = None
    hub_bytes: int | None = None
    layer_scale: float | None = None  # the light "ls_fp32" checkpoints
    head_classes: int | None = None  # head rows when they differ from the label set (HMDB51)

    @property
    def num_classes(self) -> int:
        return LABEL_SET_SIZES[self.dataset]

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @property
    def single_crop(self) -> Literal["centre", "first"]:
        """The crop a 1-crop test takes: the frame-folder loaders take the first (left/top) one, the
        video loaders the centre (DATA.md 4.2)."""
        return "first" if self.dataset in FRAME_FOLDER_SETS else "centre"

    @property
    def on_hub(self) -> bool:
        return self.hub_repo is not None

    @property
    def config(self) -> ModelConfig:
        """The inference architecture (drop path only matters for training: see `recipe`)."""
        return FAMILIES[self.family].replace(
            num_classes=self.head_classes or self.num_classes, layer_scale=self.layer_scale
        )

    @property
    def protocol(self) -> str:
        from uniformer_cli.data.views import ViewProtocol  # the data layer imports the zoo

        return ViewProtocol.from_entry(self).describe()

    def labels(self) -> list[str]:
        return load_labels(self.dataset)

    def as_dict(self) -> dict[str, object]:
        row = asdict(self)
        row.pop("recipe")
        row.pop("official_name")
        row.update(
            arch=self.family,
            num_classes=self.num_classes,
            views=self.views,
            official_name=self.official_name,
            recipe=asdict(self.recipe),
        )
        return row


def _recipe(
    init: str,
    batch: int,
    lr: float,
    epochs: int,
    warmup: int,
    *,
    wd: float = 0.05,
    randaug: str = "rand-m7-n4-mstd0.5-inc1",
    flip: bool = True,
) -> Recipe:
    return Recipe(init, batch, lr, epochs, warmup, wd, randaug, flip)


def _kinetics(
    name: str,
    family: str,
    dataset: str,
    frames: int,
    stride: int,
    top1: float,
    gflops: float,
    per_view: float,
    recipe: Recipe,
    hub: tuple[str, str, int] | None = None,
) -> ZooEntry:
    return ZooEntry(
        name=name,
        official_name=f"uniformer_{family}{frames}x{stride}_{dataset}",
        family=family,
        dataset=dataset,
        frames=frames,
        stride=stride,
        sampling="dense",
        clips=4,
        crops=1,
        size=224,
        channel_order="rgb",
        top1=top1,
        gflops=gflops,
        gflops_per_view=per_view,
        drop_path=0.1 if family == "s" else 0.3,
        recipe=recipe,
        hub_repo=hub[0] if hub else None,
        hub_file=hub[1] if hub else None,
        hub_bytes=hub[2] if hub else None,
    )


def _sth(
    family: str,
    dataset: str,
    frames: int,
    pre: str,
    top1: float,
    drop_path: float,
    recipe: Recipe,
    hub: tuple[str, str, int | None] | None = None,
) -> ZooEntry:
    per_view = 41.7 if (family, frames) == ("s", 16) else 109.7 if family == "s" else (96.7 if frames == 16 else 259.0)
    gflops = {("s", 16): 125.0, ("s", 32): 329.0, ("b", 16): 290.0, ("b", 32): 777.0}[(family, frames)]
    return ZooEntry(
        name=f"{family}{frames}-{dataset}-{pre}",
        official_name=f"uniformer_{family}{frames}_{dataset}_pre{pre}",
        family=family,
        dataset=dataset,
        frames=frames,
        stride=None,
        sampling="segment",
        clips=1,
        crops=3,
        size=224,
        channel_order="bgr",
        top1=top1,
        gflops=gflops,
        gflops_per_view=per_view,
        drop_path=drop_path,
        recipe=recipe,
        hub_repo=hub[0] if hub else None,
        hub_file=hub[1] if hub else None,
        hub_bytes=hub[2] if hub else None,
    )


def _light(
    family: str,
    frames: int,
    size: int,
    top1: float,
    gflops: float,
    recipe: Recipe,
    layer_scale: float | None = None,
    hub: tuple[str, str, int | None] | None = None,
) -> ZooEntry:
    return ZooEntry(
        name=f"{family}{frames}-{size}-k400",
        official_name=f"uniformer_{family}{frames}_{size}_k400",
        family=family,
        dataset="k400",
        frames=frames,
        stride=None,
        sampling="sparse",
        clips=1,
        crops=1,
        size=size,
        channel_order="rgb",
        top1=top1,
        gflops=gflops,
        gflops_per_view=gflops,
        drop_path=0.05 if family == "xxs" else 0.1,
        recipe=recipe,
        layer_scale=layer_scale,
        hub_repo=hub[0] if hub else None,
        hub_file=hub[1] if hub else None,
        hub_bytes=hub[2] if hub else None,
    )


SENSE_X = "Sense-X/uniformer_video"

_S_K = _recipe("imagenet", 32, 1e-4, 110, 10)
_B_K16 = _recipe("imagenet", 40, 1.25e-4, 110, 10)
_B_K32 = _recipe("imagenet", 32, 1e-4, 110, 10)
_STH_FLIP = dict(flip=False)

_ENTRIES: tuple[ZooEntry, ...] = (
    # Kinetics-400 (4 clips x 1 centre crop)
    _kinetics("s8x8-k400", "s", "k400", 8, 8, 78.4, 70.0, 17.5, _recipe("imagenet", 128, 4e-4, 100, 10)),
    _kinetics("s16x4-k400", "s", "k400", 16, 4, 80.8, 167.0, 41.8, _S_K),
    _kinetics(
        "s16x8-k400",
        "s",
        "k400",
        16,
        8,
        80.8,
        167.0,
        41.8,
        _S_K,
        (SENSE_X, "uniformer_small_k400_16x8.pth", 85_735_325),
    ),
    # No checkpoint was released for S32x4 (only its log); kept for FLOPs and training.
    _kinetics("s32x4-k400", "s", "k400", 32, 4, 82.0, 438.0, 109.5, _S_K),
    _kinetics("b8x8-k400", "b", "k400", 8, 8, 79.8, 161.0, 40.3, _recipe("imagenet", 64, 2e-4, 100, 10)),
    _kinetics(
        "b16x4-k400",
        "b",
        "k400",
        16,
        4,
        82.0,
        387.0,
        96.7,
        _B_K16,
        ("Andy1621/uniformer", "uniformer_base_k400_16x4.pth", 199_525_573),
    ),
    _kinetics("b16x8-k400", "b", "k400", 16, 8, 81.7, 387.0, 96.7, _B_K16),
    _kinetics(
        "b32x4-k400",
        "b",
        "k400",
        32,
        4,
        82.9,
        1036.0,
        259.0,
        _B_K32,
        (SENSE_X, "uniformer_base_k400_32x4.pth", 199_525_573),
    ),
    # Kinetics-600
    _kinetics("s16x4-k600", "s", "k600", 16, 4, 82.8, 167.0, 41.8, _recipe("imagenet", 96, 3e-4, 110, 10)),
    _kinetics(
        "s16x8-k600",
        "s",
        "k600",
        16,
        8,
        82.7,
        167.0,
        41.8,
        _S_K,
        (SENSE_X, "uniformer_small_k600_16x8.pth", 86_145_693),
    ),
    _kinetics("b16x4-k600", "b", "k600", 16, 4, 84.0, 387.0, 96.7, _B_K16),
    _kinetics("b16x8-k600", "b", "k600", 16, 8, 83.4, 387.0, 96.7, _recipe("imagenet", 32, 1.25e-4, 110, 10)),
    _kinetics(
        "b32x4-k600",
        "b",
        "k600",
        32,
        4,
        84.5,
        1036.0,
        259.0,
        _recipe("imagenet", 128, 4e-4, 110, 10),
        (SENSE_X, "uniformer_base_k600_32x4.pth", 199_935_941),
    ),
    # Something-Something V1 (1 clip x 3 crops, BGR frames)
    _sth("s", "sthv1", 16, "k400", 57.2, 0.2, _recipe("s16x4-k400", 32, 2e-4, 60, 5, **_STH_FLIP)),
    _sth(
        "s",
        "sthv1",
        16,
        "k600",
        57.6,
        0.2,
        _recipe("s16x4-k600", 32, 2e-4, 60, 5, **_STH_FLIP),
        (SENSE_X, "uniformer_small_sthv1_16_prek600.pth", None),
    ),
    _sth("s", "sthv1", 32, "k400", 58.8, 0.2, _recipe("s16x4-k400", 32, 2e-4, 60, 5, **_STH_FLIP)),
    _sth("s", "sthv1", 32, "k600", 59.9, 0.3, _recipe("s16x4-k600", 32, 2e-4, 60, 5, **_STH_FLIP)),
    _sth("b", "sthv1", 16, "k400", 59.1, 0.6, _recipe("b16x4-k400", 40, 2.5e-4, 60, 5, **_STH_FLIP)),
    _sth("b", "sthv1", 16, "k600", 58.8, 0.5, _recipe("b16x4-k600", 40, 2.5e-4, 60, 5, **_STH_FLIP)),
    _sth("b", "sthv1", 32, "k400", 60.9, 0.6, _recipe("b16x4-k400", 32, 2e-4, 60, 5, **_STH_FLIP)),
    _sth(
        "b",
        "sthv1",
        32,
        "k600",
        61.0,
        0.6,
        _recipe("b16x4-k600", 32, 2e-4, 60, 5, **_STH_FLIP),
        (SENSE_X, "uniformer_base_sthv1_32_prek600.pth", 199_061_829),
    ),
    # Something-Something V2
    _sth("s", "sthv2", 16, "k400", 67.7, 0.3, _recipe("s16x4-k400", 32, 2e-4, 50, 5, **_STH_FLIP)),
    _sth(
        "s",
        "sthv2",
        16,
        "k600",
        69.4,
        0.3,
        _recipe("s16x4-k600", 32, 2e-4, 50, 5, **_STH_FLIP),
        (SENSE_X, "uniformer_small_sthv2_16_prek600.pth", 85_271_581),
    ),
    _sth("s", "sthv2", 32, "k400", 69.0, 0.3, _recipe("s16x4-k400", 32, 2e-4, 50, 5, **_STH_FLIP)),
    _sth("s", "sthv2", 32, "k600", 70.4, 0.3, _recipe("s16x4-k600", 32, 2e-4, 50, 5, **_STH_FLIP)),
    _sth("b", "sthv2", 16, "k400", 70.4, 0.4, _recipe("b16x4-k400", 40, 2.5e-4, 50, 5, **_STH_FLIP)),
    _sth("b", "sthv2", 16, "k600", 70.2, 0.5, _recipe("b16x4-k600", 40, 2.5e-4, 50, 5, **_STH_FLIP)),
    _sth("b", "sthv2", 32, "k400", 71.1, 0.5, _recipe("b16x4-k400", 32, 2e-4, 50, 5, **_STH_FLIP)),
    _sth(
        "b",
        "sthv2",
        32,
        "k600",
        71.2,
        0.5,
        _recipe("b16x4-k600", 32, 2e-4, 50, 5, **_STH_FLIP),
        (SENSE_X, "uniformer_base_sthv2_32_prek600.pth", 199_061_829),
    ),
    # UCF101 / HMDB51 (5 clips x 3 crops); HMDB51 trained on BGR frame folders with a 101-row head.
    ZooEntry(
        name="s16x4-ucf101-k400",
        official_name="uniformer_s16x4_ucf101_prek400",
        family="s",
        dataset="ucf101",
        frames=16,
        stride=4,
        sampling="dense",
        clips=5,
        crops=3,
        size=224,
        channel_order="rgb",
        top1=98.3,
        gflops=625.0,
        gflops_per_view=41.7,
        drop_path=0.2,
        recipe=_recipe("s16x4-k400", 128, 5e-5, 25, 5, randaug="rand-m5-n2-mstd0.25"),
    ),
    ZooEntry(
        name="s16x4-hmdb51-k400",
        official_name="uniformer_s16x4_hmdb51_prek400",
        family="s",
        dataset="hmdb51",
        frames=16,
        stride=4,
        sampling="dense",
        clips=5,
        crops=3,
        size=224,
        channel_order="bgr",
        top1=77.5,
        gflops=625.0,
        gflops_per_view=41.7,
        drop_path=0.2,
        recipe=_recipe("s16x4-k400", 128, 5e-5, 25, 5, randaug="rand-m5-n2-mstd0.25"),
        head_classes=101,
    ),
    # Light models (sparse sampling, 1 view at their own resolution)
    _light("xxs", 4, 128, 63.2, 1.0, _recipe("imagenet", 256, 4e-4, 110, 10, wd=0.1, randaug="rand"), 0.1),
    _light("xxs", 4, 160, 65.8, 1.6, _recipe("imagenet", 256, 4e-4, 110, 10, wd=0.1, randaug="rand"), 0.1),
    _light("xxs", 8, 128, 68.3, 2.0, _recipe("imagenet", 256, 4e-4, 110, 10, wd=0.1, randaug="rand"), 0.1),
    _light("xxs", 8, 160, 71.4, 3.3, _recipe("imagenet", 256, 4e-4, 110, 10, wd=0.1, randaug="rand-m5-n2-mstd0.25")),
    _light("xxs", 16, 128, 73.3, 4.2, _recipe("imagenet", 256, 8e-4, 110, 10, wd=0.1, randaug="rand-m5-n2-mstd0.25")),
    _light(
        "xxs",
        16,
        160,
        75.1,
        6.9,
        _recipe("imagenet", 256, 8e-4, 110, 10, wd=0.1, randaug="rand-m5-n2-mstd0.25"),
        hub=("Andy1621/uniformer_light", "uniformer_xxs16_160_k400.pth", None),
    ),
    _light("xxs", 32, 160, 77.9, 15.4, _recipe("imagenet", 256, 8e-4, 110, 10, wd=0.1, randaug="rand-m5-n2-mstd0.25")),
    _light("xs", 32, 192, 78.6, 34.2, _recipe("imagenet", 128, 4e-4, 110, 10)),
)

ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}

# Friendly names: the best entry of each family and dataset whose file can be downloaded.
ALIASES: dict[str, str] = {
    "s-k400": "s16x8-k400",
    "b-k400": "b32x4-k400",
    "s-k600": "s16x8-k600",
    "b-k600": "b32x4-k600",
    "s-sthv1": "s16-sthv1-k600",
    "b-sthv1": "b32-sthv1-k600",
    "s-sthv2": "s16-sthv2-k600",
    "b-sthv2": "b32-sthv2-k600",
    "xxs-k400": "xxs16-160-k400",
}

# ImageNet-1K image checkpoints used to initialise Kinetics training (inflated 2D -> 3D).
IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    "s": ("Sense-X/uniformer_image", "uniformer_small_in1k.pth"),
    "b": ("Sense-X/uniformer_image", "uniformer_base_in1k.pth"),
    "xxs": ("Andy1621/uniformer_light", "uniformer_xxs_160_in1k.pth"),
}


def get_entry(name: str) -> ZooEntry:
    """Resolve a zoo name, an alias or an official experiment name; unknown names fail clearly."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in ZOO:
        return ZOO[key]
    for entry in _ENTRIES:
        if entry.official_name == key:
            return entry
    close = sorted(n for n in [*ZOO, *ALIASES] if key.split("-")[0] and n.startswith(key.split("-")[0]))
    hint = f" Did you mean: {', '.join(close[:5])}?" if close else " Run `uniformer models` for the list."
    raise UniformerError(f"unknown model {name!r}.{hint}")


@cache
def load_labels(label_set: str) -> list[str]:
    """Class names of a label set, index = line number (the checkpoints' output order)."""
    if label_set not in LABEL_SETS:
        raise UniformerError(f"unknown label set {label_set!r} (known: {', '.join(LABEL_SETS)})")
    text = resources.files("uniformer_cli.zoo").joinpath("labels", f"{label_set}.txt").read_text("utf-8")
    names = [line for line in text.splitlines() if line]
    if len(names) != LABEL_SET_SIZES[label_set]:
        raise UniformerError(
            f"label file {label_set}.txt has {len(names)} names, expected {LABEL_SET_SIZES[label_set]}"
        )
    return names
