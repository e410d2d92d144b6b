"""The model zoo: one entry per released UniFormer video checkpoint, the single source of truth.

Every command (predict, eval, flops, train, convert, models) reads these entries; nothing else in the
package repeats an architecture, a protocol, a Hub file or a paper figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cache
from importlib import resources

from uniformer_cli.errors import UniformerError
from uniformer_cli.jsonio import load_json
from uniformer_cli.models.config import FAMILIES, ModelConfig
from uniformer_cli.protocol import Sampling, ViewProtocol
from uniformer_cli.zoo.recipe import Recipe
from uniformer_cli.zoo.sources import Source
from uniformer_cli.zoo.v2 import V2_ALIASES, V2_LABEL_SET_SIZES, V2_ZOO, V2ZooEntry, find_v2_entry

# Class counts of the label sets (the HMDB51 head may carry 101 rows, MODEL.md 6.2).
LABEL_SET_SIZES = {"k400": 400, "k600": 600, "sthv1": 174, "sthv2": 174, "ucf101": 101, "hmdb51": 51}
LABEL_SETS = tuple(LABEL_SET_SIZES)
# The datasets' own names, for model cards.
LABEL_SET_NAMES = {
    "k400": "Kinetics-400",
    "k600": "Kinetics-600",
    "sthv1": "Something-Something V1",
    "sthv2": "Something-Something V2",
    "ucf101": "UCF101",
    "hmdb51": "HMDB51",
}
# Datasets the official code reads as JPEG frame folders (Sth, HMDB51 loaders; PROTOCOLS.md 2.2, 4.2).
FRAME_FOLDER_SETS = ("sthv1", "sthv2", "hmdb51")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    official_name: str
    family: str  # key of models.config.FAMILIES: s, b, xxs, xs
    dataset: str  # label set (k400, k600, sthv1, sthv2, ucf101, hmdb51)
    protocol: ViewProtocol  # the released test protocol
    top1: float  # paper / official README, multi-view
    gflops: float  # total over all test views, multiply-accumulates
    gflops_per_view: float
    drop_path: float
    recipe: Recipe
    hub_repo: str | None = None  # None: not on the Hugging Face Hub
    hub_file: str | None = None
    hub_bytes: int | None = None
    drive_id: str | None = None  # the official README's Google Drive file id (`DRIVE_IDS`)
    mmaction2_url: str | None = None  # MMAction2's published copy (`MMACTION2_URLS`)
    layer_scale: float | None = None  # the light "ls_fp32" checkpoints
    head_classes: int | None = None  # head rows when they differ from the label set (HMDB51)

    @property
    def num_classes(self) -> int:
        return LABEL_SET_SIZES[self.dataset]

    @property
    def on_hub(self) -> bool:
        return self.hub_repo is not None

    @property
    def sources(self) -> tuple[Source, ...]:
        """Where the checkpoint can be downloaded from, in the order they are tried: the Hub (verified by
        its sha256), MMAction2's server (pinned by the sha256 prefix in its file names), the authors'
        Google Drive (pinned at the first download). Empty: no checkpoint was released."""
        found: list[Source] = []
        if self.hub_repo is not None and self.hub_file is not None:
            found.append("hub")
        if self.mmaction2_url is not None:
            found.append("mmaction2")
        if self.drive_id is not None:
            found.append("drive")
        return tuple(found)

    @property
    def config(self) -> ModelConfig:
        """The inference architecture (drop path only matters for training: see `recipe`)."""
        return FAMILIES[self.family].replace(
            num_classes=self.head_classes or self.num_classes, layer_scale=self.layer_scale
        )

    def labels(self) -> list[str]:
        return load_labels(self.dataset)

    def as_dict(self) -> dict[str, object]:
        """The `uniformer models` record (docs/OUTPUT.md): paper figures are named `paper_*`."""
        return {
            "model": self.name,
            "aliases": [alias for alias, target in ALIASES.items() if target == self.name],
            "arch": self.family,
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "protocol": self.protocol.as_dict(),
            "paper_top1": self.top1,
            "paper_gflops_per_view": self.gflops_per_view,
            "paper_gflops": self.gflops,
            "hub_repo": self.hub_repo,
            "hub_file": self.hub_file,
            "hub_bytes": self.hub_bytes,
            "sources": list(self.sources),
            "drive_id": self.drive_id,
            "mmaction2_url": self.mmaction2_url,
            "official_name": self.official_name,
            "layer_scale": self.layer_scale,
            "head_classes": self.head_classes,
            "drop_path": self.drop_path,
            "recipe": asdict(self.recipe),
            "label_set": self.dataset,
        }


Hub = tuple[str, str, int | None]  # repo, file, size in bytes (None: not recorded)


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


def _entry(
    name: str,
    official: str,
    family: str,
    dataset: str,
    frames: int,
    stride: int | None,
    views: str,
    size: int,
    top1: float,
    gflops: float,
    per_view: float,
    drop_path: float,
    recipe: Recipe,
    hub: Hub | None = None,
    **extra: object,
) -> ZooEntry:
    """One zoo row; the sampling follows from the dataset and family (PROTOCOLS.md 5.1), the channel order
    and the crop of a 1-crop test from the official loader (frame folders are read as BGR, and their
    loaders take the first, left/top crop; the video loaders the centre: PROTOCOLS.md 1.3, 4.2)."""
    clips, crops = (int(n) for n in views.split("x"))
    sampling: Sampling = "dense" if stride else "sparse" if FAMILIES[family].arch == "light" else "segment"
    frame_folders = dataset in FRAME_FOLDER_SETS
    protocol = ViewProtocol(
        frames=frames,
        stride=stride,
        sampling=sampling,
        clips=clips,
        crops=crops,
        size=size,
        channel_order="bgr" if frame_folders else "rgb",
        single_crop="first" if frame_folders else "centre",
    )
    return ZooEntry(
        name=name,
        official_name=official,
        family=family,
        dataset=dataset,
        protocol=protocol,
        top1=top1,
        gflops=gflops,
        gflops_per_view=per_view,
        drop_path=drop_path,
        recipe=recipe,
        hub_repo=hub[0] if hub else None,
        hub_file=hub[1] if hub else None,
        hub_bytes=hub[2] if hub else None,
        **extra,  # type: ignore[arg-type]
    )


SENSE_X = "Sense-X/uniformer_video"
RAND_M5 = "rand-m5-n2-mstd0.25"

_S_K = _recipe("imagenet", 32, 1e-4, 110, 10)
_B_K16 = _recipe("imagenet", 40, 1.25e-4, 110, 10)
_B_K32 = _recipe("imagenet", 32, 1e-4, 110, 10)
_XXS_LS = _recipe("imagenet", 256, 4e-4, 110, 10, wd=0.1, randaug="rand")


def _sth(init: str, batch: int, lr: float, epochs: int) -> Recipe:
    return _recipe(init, batch, lr, epochs, 5, flip=False)  # left/right is part of the Sth labels


# fmt: off
_ENTRIES: tuple[ZooEntry, ...] = (
    # name               official name                      fam  data     T   stride views  size top1  GFLOPs per-view drop recipe
    _entry("s8x8-k400",  "uniformer_s8x8_k400",             "s", "k400",  8,  8,  "4x1", 224, 78.4, 70,   17.5, 0.1, _recipe("imagenet", 128, 4e-4, 100, 10)),
    _entry("s16x4-k400", "uniformer_s16x4_k400",            "s", "k400",  16, 4,  "4x1", 224, 80.8, 167,  41.8, 0.1, _S_K),
    _entry("s16x8-k400", "uniformer_s16x8_k400",            "s", "k400",  16, 8,  "4x1", 224, 80.8, 167,  41.8, 0.1, _S_K,
           (SENSE_X, "uniformer_small_k400_16x8.pth", 85_735_325)),
    # No checkpoint was released for S32x4 (only its log); kept for FLOPs and training.
    _entry("s32x4-k400", "uniformer_s32x4_k400",            "s", "k400",  32, 4,  "4x1", 224, 82.0, 438, 109.5, 0.1, _S_K),
    _entry("b8x8-k400",  "uniformer_b8x8_k400",             "b", "k400",  8,  8,  "4x1", 224, 79.8, 161,  40.3, 0.3, _recipe("imagenet", 64, 2e-4, 100, 10)),
    _entry("b16x4-k400", "uniformer_b16x4_k400",            "b", "k400",  16, 4,  "4x1", 224, 82.0, 387,  96.7, 0.3, _B_K16,
           ("Andy1621/uniformer", "uniformer_base_k400_16x4.pth", 199_525_573)),
    _entry("b16x8-k400", "uniformer_b16x8_k400",            "b", "k400",  16, 8,  "4x1", 224, 81.7, 387,  96.7, 0.3, _B_K16),
    _entry("b32x4-k400", "uniformer_b32x4_k400",            "b", "k400",  32, 4,  "4x1", 224, 82.9, 1036, 259,  0.3, _B_K32,
           (SENSE_X, "uniformer_base_k400_32x4.pth", 199_525_573)),
    _entry("s16x4-k600", "uniformer_s16x4_k600",            "s", "k600",  16, 4,  "4x1", 224, 82.8, 167,  41.8, 0.1, _recipe("imagenet", 96, 3e-4, 110, 10)),
    _entry("s16x8-k600", "uniformer_s16x8_k600",            "s", "k600",  16, 8,  "4x1", 224, 82.7, 167,  41.8, 0.1, _S_K,
           (SENSE_X, "uniformer_small_k600_16x8.pth", 86_145_693)),
    _entry("b16x4-k600", "uniformer_b16x4_k600",            "b", "k600",  16, 4,  "4x1", 224, 84.0, 387,  96.7, 0.3, _B_K16),
    _entry("b16x8-k600", "uniformer_b16x8_k600",            "b", "k600",  16, 8,  "4x1", 224, 83.4, 387,  96.7, 0.3, _recipe("imagenet", 32, 1.25e-4, 110, 10)),
    # The B32x4-K600 run used 4 nodes (batch 32 per node, lr 1e-4 per node).
    _entry("b32x4-k600", "uniformer_b32x4_k600",            "b", "k600",  32, 4,  "4x1", 224, 84.5, 1036, 259,  0.3, _recipe("imagenet", 128, 4e-4, 110, 10),
           (SENSE_X, "uniformer_base_k600_32x4.pth", 199_935_941)),
    # Something-Something: segment sampling, 1 clip x 3 crops, BGR frame folders.
    _entry("s16-sthv1-k400", "uniformer_s16_sthv1_prek400", "s", "sthv1", 16, None, "1x3", 224, 57.2, 125,  41.7, 0.2, _sth("s16x4-k400", 32, 2e-4, 60)),
    _entry("s16-sthv1-k600", "uniformer_s16_sthv1_prek600", "s", "sthv1", 16, None, "1x3", 224, 57.6, 125,  41.7, 0.2, _sth("s16x4-k600", 32, 2e-4, 60),
           (SENSE_X, "uniformer_small_sthv1_16_prek600.pth", None)),
    _entry("s32-sthv1-k400", "uniformer_s32_sthv1_prek400", "s", "sthv1", 32, None, "1x3", 224, 58.8, 329, 109.7, 0.2, _sth("s16x4-k400", 32, 2e-4, 60)),
    _entry("s32-sthv1-k600", "uniformer_s32_sthv1_prek600", "s", "sthv1", 32, None, "1x3", 224, 59.9, 329, 109.7, 0.3, _sth("s16x4-k600", 32, 2e-4, 60)),
    _entry("b16-sthv1-k400", "uniformer_b16_sthv1_prek400", "b", "sthv1", 16, None, "1x3", 224, 59.1, 290,  96.7, 0.6, _sth("b16x4-k400", 40, 2.5e-4, 60)),
    _entry("b16-sthv1-k600", "uniformer_b16_sthv1_prek600", "b", "sthv1", 16, None, "1x3", 224, 58.8, 290,  96.7, 0.5, _sth("b16x4-k600", 40, 2.5e-4, 60)),
    _entry("b32-sthv1-k400", "uniformer_b32_sthv1_prek400", "b", "sthv1", 32, None, "1x3", 224, 60.9, 777, 259,   0.6, _sth("b16x4-k400", 32, 2e-4, 60)),
    _entry("b32-sthv1-k600", "uniformer_b32_sthv1_prek600", "b", "sthv1", 32, None, "1x3", 224, 61.0, 777, 259,   0.6, _sth("b16x4-k600", 32, 2e-4, 60),
           (SENSE_X, "uniformer_base_sthv1_32_prek600.pth", 199_061_829)),
    _entry("s16-sthv2-k400", "uniformer_s16_sthv2_prek400", "s", "sthv2", 16, None, "1x3", 224, 67.7, 125,  41.7, 0.3, _sth("s16x4-k400", 32, 2e-4, 50)),
    _entry("s16-sthv2-k600", "uniformer_s16_sthv2_prek600", "s", "sthv2", 16, None, "1x3", 224, 69.4, 125,  41.7, 0.3, _sth("s16x4-k600", 32, 2e-4, 50),
           (SENSE_X, "uniformer_small_sthv2_16_prek600.pth", 85_271_581)),
    _entry("s32-sthv2-k400", "uniformer_s32_sthv2_prek400", "s", "sthv2", 32, None, "1x3", 224, 69.0, 329, 109.7, 0.3, _sth("s16x4-k400", 32, 2e-4, 50)),
    _entry("s32-sthv2-k600", "uniformer_s32_sthv2_prek600", "s", "sthv2", 32, None, "1x3", 224, 70.4, 329, 109.7, 0.3, _sth("s16x4-k600", 32, 2e-4, 50)),
    _entry("b16-sthv2-k400", "uniformer_b16_sthv2_prek400", "b", "sthv2", 16, None, "1x3", 224, 70.4, 290,  96.7, 0.4, _sth("b16x4-k400", 40, 2.5e-4, 50)),
    _entry("b16-sthv2-k600", "uniformer_b16_sthv2_prek600", "b", "sthv2", 16, None, "1x3", 224, 70.2, 290,  96.7, 0.5, _sth("b16x4-k600", 40, 2.5e-4, 50)),
    _entry("b32-sthv2-k400", "uniformer_b32_sthv2_prek400", "b", "sthv2", 32, None, "1x3", 224, 71.1, 777, 259,   0.5, _sth("b16x4-k400", 32, 2e-4, 50)),
    _entry("b32-sthv2-k600", "uniformer_b32_sthv2_prek600", "b", "sthv2", 32, None, "1x3", 224, 71.2, 777, 259,   0.5, _sth("b16x4-k600", 32, 2e-4, 50),
           (SENSE_X, "uniformer_base_sthv2_32_prek600.pth", 199_061_829)),
    # UCF101 / HMDB51: dense 16x4, 5 clips x 3 crops; the HMDB51 head has 101 rows (MODEL.md 6.2).
    _entry("s16x4-ucf101-k400", "uniformer_s16x4_ucf101_prek400", "s", "ucf101", 16, 4, "5x3", 224, 98.3, 625, 41.7, 0.2,
           _recipe("s16x4-k400", 128, 5e-5, 25, 5, randaug=RAND_M5)),
    _entry("s16x4-hmdb51-k400", "uniformer_s16x4_hmdb51_prek400", "s", "hmdb51", 16, 4, "5x3", 224, 77.5, 625, 41.7, 0.2,
           _recipe("s16x4-k400", 128, 5e-5, 25, 5, randaug=RAND_M5), head_classes=101),
    # Light models: sparse sampling, 1 view at their own resolution; "ls" checkpoints have layer scale.
    _entry("xxs4-128-k400",  "uniformer_xxs4_128_k400",     "xxs", "k400", 4,  None, "1x1", 128, 63.2, 1.0,  1.0, 0.05, _XXS_LS, layer_scale=0.1),
    _entry("xxs4-160-k400",  "uniformer_xxs4_160_k400",     "xxs", "k400", 4,  None, "1x1", 160, 65.8, 1.6,  1.6, 0.05, _XXS_LS, layer_scale=0.1),
    _entry("xxs8-128-k400",  "uniformer_xxs8_128_k400",     "xxs", "k400", 8,  None, "1x1", 128, 68.3, 2.0,  2.0, 0.05, _XXS_LS, layer_scale=0.1),
    _entry("xxs8-160-k400",  "uniformer_xxs8_160_k400",     "xxs", "k400", 8,  None, "1x1", 160, 71.4, 3.3,  3.3, 0.05,
           _recipe("imagenet", 256, 4e-4, 110, 10, wd=0.1, randaug=RAND_M5)),
    _entry("xxs16-128-k400", "uniformer_xxs16_128_k400",    "xxs", "k400", 16, None, "1x1", 128, 73.3, 4.2,  4.2, 0.05,
           _recipe("imagenet", 256, 8e-4, 110, 10, wd=0.1, randaug=RAND_M5)),
    _entry("xxs16-160-k400", "uniformer_xxs16_160_k400",    "xxs", "k400", 16, None, "1x1", 160, 75.1, 6.9,  6.9, 0.05,
           _recipe("imagenet", 256, 8e-4, 110, 10, wd=0.1, randaug=RAND_M5),
           ("Andy1621/uniformer_light", "uniformer_xxs16_160_k400.pth", None)),
    _entry("xxs32-160-k400", "uniformer_xxs32_160_k400",    "xxs", "k400", 32, None, "1x1", 160, 77.9, 15.4, 15.4, 0.05,
           _recipe("imagenet", 256, 8e-4, 110, 10, wd=0.1, randaug=RAND_M5)),
    _entry("xs32-192-k400",  "uniformer_xs32_192_k400",     "xs",  "k400", 32, None, "1x1", 192, 78.6, 34.2, 34.2, 0.1,
           _recipe("imagenet", 128, 4e-4, 110, 10)),
)

# The Google Drive file ids of the "Model" links in the official video README (Sense-X/UniFormer,
# folder video_classification); S32x4-K400 has none (only its log was released).
DRIVE_IDS: dict[str, str] = {
    "xxs4-128-k400":     "1EFBxDS2m4mpk_sYejnPuGSDRH_1ELDhx",
    "xxs4-160-k400":     "1DtTFT7FZ_kUjxqXAYyWhfXSr_EIHQi8a",
    "xxs8-128-k400":     "1E9VwV-XJQCmo9nBhxLxa9DdphZiIg38z",
    "xxs8-160-k400":     "1Dxq82X8mBsfVOzij0HSeb1g4sdez71FM",
    "xxs16-128-k400":    "1DngSOmw0rStnYZlaCnz1xII6CU2d2R_j",
    "xxs16-160-k400":    "1DxqrNHb4h1ZKnEFaqbkKJAXQsyIFeD7b",
    "xxs32-160-k400":    "1EIVXRYn5UIkLaJGDpTBxTcyog_dKbcZe",
    "xs32-192-k400":     "1DtdX-keSB-RkH23KqtQH36IMOUmol1kw",
    "s8x8-k400":         "1-kitVTkWErHXI_x-sLItvK9-sOmb53j6",
    "s16x4-k400":        "1-jGZIIuTM5IYIpqkNTojhGhfMc7Gu9Kt",
    "s16x8-k400":        "174muWZJcZHieABDZMKiJ0tNeFLoEkJLx",
    "b8x8-k400":         "1hBxGU-QE8hGRBjSNCymJ7Au06LhluvTv",
    "b16x4-k400":        "15ipzFaZdTt-aHv7jcr_h_vgYD2X7D6AD",
    "b16x8-k400":        "1VoZcpFZbk9lEyRQ7gqRgT4CsnVt9g7uk",
    "b32x4-k400":        "1gHxx8cr1H0CNvngj1kB9ArgcPfJtqjCV",
    "s16x4-k600":        "1-dqzjm5RZVspWHQLRD4S1vo4_6jyVltb",
    "s16x8-k600":        "1-c835NJjg_015WxLBQF-1cPdQsyWMWfY",
    "b16x4-k600":        "1nBQCBCsCflhZ4OGUoGB3pAkc_GDau7vd",
    "b16x8-k600":        "1aidHdSd-h65-_EUkfNOdMMw0ZB8G5maY",
    "b32x4-k600":        "1-DwdVf8w8lYj-iFpU40pfEpog9VE5PQB",
    "s16-sthv1-k400":    "1-bdFsmXt2Ztf43lrVgmqS8_VYJ8tub6J",
    "s16-sthv1-k600":    "1-YbYGjM15MDtQnrmCeZ9H2ybNdYTFkgO",
    "s32-sthv1-k400":    "1-Y5ADssqM2C8o_1jix48fQM788mVGWQ3",
    "s32-sthv1-k600":    "1-XEgaGqXGp1EGzFl63ctApnvU54X27WP",
    "b16-sthv1-k400":    "1uMq4W5lf17vOHUmccNjYLeTMqaWHSh6v",
    "b16-sthv1-k600":    "1xpiL8zEDWYHFR55gOsbQiI41YEjTD89J",
    "b32-sthv1-k400":    "18A3FuUUbdQ8ehMQ0D78qTTtm6YmIVWaO",
    "b32-sthv1-k600":    "1xE1aJYAYFOlXOkpiIbJFHu_jSrr8reKm",
    "s16-sthv2-k400":    "1-Wq22024HB7tT8kPX6eSMn2GUNMI-_gY",
    "s16-sthv2-k600":    "1-V1mQp4fIIYhaXUWCgZXkJ0H6ne0Z8rz",
    "s32-sthv2-k400":    "1-5Q5S-NRmHFkIBygaRYpJLT7aI9cpmky",
    "s32-sthv2-k600":    "1-1K5R3Ed4t8d_DZnJ62xysIt1dBNmx96",
    "b16-sthv2-k400":    "1s78JBpnykyJ7pYEGRDK8BZL9seIRIUlC",
    "b16-sthv2-k600":    "16nCBGWzMM8n8Vr_EY0UmvgzLG0S_QYef",
    "b32-sthv2-k400":    "1-rpMARXnyvyj6YUJkIvVqtna86egpjoS",
    "b32-sthv2-k600":    "1-lkRB3546l_ECuObN_IrHws1C9a-qKPr",
    "s16x4-ucf101-k400": "1Ey8JIGcP8G2H0bKxyNnD61lvHV1eerVt",
    "s16x4-hmdb51-k400": "1Es4xtcEvQSomnbp6Eo7TC3JejIwHf5yS",
}

# MMAction2's converted copies (open-mmlab/mmaction2, configs/recognition/uniformer/metafile.yml): the
# official weights with MMAction2's keys, head rows in its own Kinetics label order and its LayerNorm
# eps (`weights/mmaction.py` reads them). The 8 hex digits before `.pth` begin the file's sha256.
_MMACTION2_UNIFORMER = "https://download.openmmlab.com/mmaction/v1.0/recognition/uniformerv1/"
MMACTION2_URLS: dict[str, str] = {
    "s16x4-k400": _MMACTION2_UNIFORMER + "uniformer-small_imagenet1k-pre_16x4x1_kinetics400-rgb_20221219-c630a037.pth",
    "b16x4-k400": _MMACTION2_UNIFORMER + "uniformer-base_imagenet1k-pre_16x4x1_kinetics400-rgb_20221219-157c2e66.pth",
    "b32x4-k400": _MMACTION2_UNIFORMER + "uniformer-base_imagenet1k-pre_32x4x1_kinetics400-rgb_20221219-b776322c.pth",
}
# fmt: on

ZOO: dict[str, ZooEntry] = {
    entry.name: replace(entry, drive_id=DRIVE_IDS.get(entry.name), mmaction2_url=MMACTION2_URLS.get(entry.name))
    for entry in _ENTRIES
}

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


# A zoo entry of either family.
AnyEntry = ZooEntry | V2ZooEntry

# What `uniformer predict clip.mp4` uses: the small Kinetics-400 model on the Hub (80.8% top-1, 4 views).
DEFAULT_MODEL = "s-k400"


def get_entry(name: str) -> ZooEntry:
    """Resolve a zoo name, an alias or an official experiment name of a UniFormer (v1) model (`find_entry`
    takes both families); unknown names, and UniFormerV2 ones, fail clearly."""
    entry = find_entry(name)
    if isinstance(entry, V2ZooEntry):
        raise UniformerError(f"{entry.name} is a UniFormerV2 model; a UniFormer (v1) one is needed here")
    return entry


def find_entry(name: str) -> ZooEntry | V2ZooEntry:
    """Resolve a zoo name, an alias or an official checkpoint name of either family."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in ZOO:
        return ZOO[key]
    for entry in ZOO.values():
        if entry.official_name == key:
            return entry
    v2 = find_v2_entry(key)
    if v2 is not None:
        return v2
    names = [*ZOO, *ALIASES, *V2_ZOO, *V2_ALIASES]
    close = sorted(n for n in names if key.split("-")[0] and n.startswith(key.split("-")[0]))
    hint = f" Did you mean: {', '.join(close[:5])}?" if close else " Run `uniformer models` for the list."
    raise UniformerError(f"unknown model {name!r}.{hint}")


def best_entry(dataset: str, family: str | None = None) -> ZooEntry | None:
    """The zoo's pick for a label set (and family): downloadable first, then the best paper top-1; None
    when the zoo has no such entry."""
    entries = [entry for entry in ZOO.values() if entry.dataset == dataset and family in (None, entry.family)]
    return max(entries, key=lambda entry: (entry.on_hub, entry.top1)) if entries else None


def dataset_model(dataset: str) -> AnyEntry | None:
    """The model a dataset's eval runs by default: the UniFormer pick (`best_entry`), else the best
    downloadable UniFormerV2 entry whose head has checked class names for it (Kinetics-700, Moments in
    Time); None when neither family has one."""
    v1 = best_entry(dataset)
    if v1 is not None:
        return v1
    usable = [e for e in V2_ZOO.values() if e.dataset == dataset and e.sources and e.label_set is not None]
    return max(usable, key=lambda entry: (entry.top1 or 0.0, -entry.protocol.frames)) if usable else None


def entry_labels(entry: ZooEntry | V2ZooEntry) -> list[str] | None:
    """The class names of a zoo entry's head in output order (None: a head without checked names)."""
    if isinstance(entry, V2ZooEntry):
        return load_labels(entry.label_set) if entry.label_set else None
    return entry.labels()


# Every label file: the v1 label sets and UniFormerV2's (the labels folder's README says where each is from).
ALL_LABEL_SET_SIZES = LABEL_SET_SIZES | V2_LABEL_SET_SIZES


@cache
def load_labels(label_set: str) -> list[str]:
    """Class names of a label set, index = line number (the checkpoints' output order)."""
    if label_set not in ALL_LABEL_SET_SIZES:
        raise UniformerError(f"unknown label set {label_set!r} (known: {', '.join(ALL_LABEL_SET_SIZES)})")
    text = resources.files("uniformer_cli.zoo").joinpath("labels").joinpath(f"{label_set}.txt").read_text("utf-8")
    names = [line for line in text.splitlines() if line]
    if len(names) != ALL_LABEL_SET_SIZES[label_set]:
        raise UniformerError(
            f"label file {label_set}.txt has {len(names)} names, expected {ALL_LABEL_SET_SIZES[label_set]}"
        )
    return names


def k710_rows(label_set: str) -> list[int]:
    """The rows of a Kinetics-710 head (MMAction2's `k710` order) that classify `label_set` ("k400-mmaction",
    "k600-mmaction" or "k700", MMAction2's orders), in that label set's order: MMAction2's channel maps
    (configs/recognition/uniformerv2/k710_channel_map); K400 is the first 400 rows, as in the official
    fine-tuning code (slowfast/models/uniformerv2.py)."""
    if label_set == "k400-mmaction":
        return list(range(400))
    if label_set not in ("k600-mmaction", "k700"):
        raise UniformerError(f"a Kinetics-710 head has no {label_set!r} rows (k400-mmaction, k600-mmaction or k700)")
    name = {"k600-mmaction": "k600", "k700": "k700"}[label_set]
    text = resources.files("uniformer_cli.zoo").joinpath("labels").joinpath(f"k710_to_{name}.json").read_text()
    return [int(row) for row in load_json(text)]


def label_set_of(labels: list[str] | None) -> str | None:
    """The label set whose class names, in order, `labels` are; None for other names."""
    return next((name for name in LABEL_SETS if labels is not None and labels == load_labels(name)), None)
