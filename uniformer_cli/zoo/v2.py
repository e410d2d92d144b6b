"""The UniFormerV2 zoo: one entry per checkpoint of the official model zoo page (OpenGVLab/UniFormerV2).

Each entry holds its architecture changes, its official test protocol (the `TEST.*` values its
`exp/<dataset>/<experiment>/run.sh` or `test.sh` passes over `config.yaml`), the official top-1, and
where its weights can still be downloaded (`sources`, as a UniFormer entry's): the official links (an
Aliyun bucket) are gone, so a pinned Hugging Face Hub copy where one exists, else MMAction2's published
copy (pinned by the sha256 prefix MMAction2 puts in its file names, `weights.remote`), else nothing
(`--weights FILE`). Which copy an entry uses
decides its class order (`label_set`): MMAction2 mapped the official Kinetics heads onto its own label
files (open-mmlab/mmaction2, the UniFormerV2 config folder's README, note 4). docs/MODEL.md
("UniFormerV2 zoo") has the table and the sources of each fact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

from uniformer_cli.models.config_v2 import V2_FAMILIES, V2Config, last_layers
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.zoo.recipe import Recipe
from uniformer_cli.zoo.sources import Source

# The one Hub copy of official UniFormerV2 files (the authors' account), pinned to the commit that added them.
V2_HUB_REPO = "Andy1621/uniformerv2"
V2_HUB_REVISION = "d9872b5afdc8e56fd18afadc66f1f5e07f156ee5"
MMACTION_BASE = "https://download.openmmlab.com/mmaction/v1.0/recognition/uniformerv2/"
# The official download host, which answers NoSuchBucket since 2024 (OpenGVLab/UniFormerV2 issue #77).
OFFICIAL_BASE = "https://pjlab-gvm-data.oss-cn-shanghai.aliyuncs.com/uniformerv2/"

# Class counts of the UniFormerV2 label sets; `-mmaction` orders are MMAction2's (alphabetical Kinetics).
V2_LABEL_SET_SIZES = {"k400-mmaction": 400, "k600-mmaction": 600, "k700": 700, "k710": 710, "mit": 339}
# Dataset -> classes of its heads (ActivityNet and HACS: 200 each).
V2_DATASET_CLASSES = {
    "k400": 400,
    "k600": 600,
    "k700": 700,
    "k710": 710,
    "mit": 339,
    "sthv1": 174,
    "sthv2": 174,
    "anet": 200,
    "hacs": 200,
}


# Published per-view cost of the Kinetics-design backbones by (family, frames, size), in TFLOPs to one
# decimal: the "FLOPs" column of open-mmlab/mmaction2's UniFormerV2 config folder README (the official
# repository's pages publish none). Multiply-accumulates, as the UniFormer papers count them.
PUBLISHED_TFLOPS = {
    ("v2-b16", 8, 224): 0.1,
    ("v2-l14", 8, 224): 0.7,
    ("v2-l14", 16, 224): 1.3,
    ("v2-l14", 32, 224): 2.7,
    ("v2-l14-336", 8, 336): 1.6,
    ("v2-l14-336", 32, 336): 6.3,
}
PUBLISHED_GFLOPS_STEP = 100.0  # the published figures' rounding step (0.1 TFLOPs)


# The CLIP ViTs every UniFormerV2 backbone starts from: OpenAI's CLIP visual encoders (the official
# `extract_clip/extract.ipynb` saves their `visual.` weights without `proj` and `ln_post`), in timm's Hub
# copies of OpenAI's files (whole CLIP models in OpenAI's key layout; timm's `default_cfgs` name the file).
CLIP_WEIGHTS: dict[str, tuple[str, str]] = {
    "v2-b16": ("timm/vit_base_patch16_clip_224.openai", "pytorch_model.bin"),
    "v2-l14": ("timm/vit_large_patch14_clip_224.openai", "pytorch_model.bin"),
    "v2-l14-336": ("timm/vit_large_patch14_clip_336.openai", "open_clip_pytorch_model.bin"),
}
RAND_M7 = "rand-m7-n4-mstd0.5-inc1"


def _from_clip(batch: int, lr: float, epochs: int, warmup: int, gpus: int, *, sth: bool = False) -> Recipe:
    """A recipe of an experiment that starts from CLIP (its `run.sh` over its `config.yaml`): AdamW with weight
    decay 0.05 (none on 1-D parameters and biases, ZERO_WD_1D_PARAM), RandAugment m7-n4, plain cross entropy
    (no mixup, no label smoothing), no random erasing, one clip per video (Something-Something: two, and no
    flip); `batch` is PySlowFast's TRAIN.BATCH_SIZE over all `gpus` (NUM_GPUS x NUM_SHARDS), whose BASE_LR is
    not scaled with the shards."""
    return Recipe(
        "clip", batch, lr, epochs, warmup, 0.05, RAND_M7, not sth, gpus=gpus, mixup=False, erase_prob=0.0,
        repeats=2 if sth else 1, label_smoothing=0.0,
    )  # fmt: skip


_K_B16 = _from_clip(256, 1e-5, 55, 5, 8)
_FROZEN = _from_clip(256, 8e-4, 50, 0, 16)
_STH_B16 = {16: _from_clip(128, 4e-5, 22, 5, 8, sth=True), 32: _from_clip(64, 4e-5, 22, 5, 16, sth=True)}
_STH_L14 = {16: _from_clip(64, 2e-5, 22, 5, 16, sth=True), 32: _from_clip(32, 2e-5, 22, 5, 32, sth=True)}
# The recipes of the experiments that start from CLIP, by experiment (exp/<dataset>/<experiment>); the others
# fine-tune a Kinetics-710 model, whose released file is gone for most backbones.
RECIPES: dict[str, Recipe] = {
    "k710/k710_b16_f8x224": _K_B16,
    "k710/k710_l14_f8x224": _from_clip(128, 1e-5, 40, 5, 32),
    "k710/k710_l14_f8x336": _from_clip(64, 5e-6, 40, 5, 32),
    "k710/frozen_k710_l14_f8x336": _from_clip(128, 8e-4, 50, 0, 32),
    "k400/k400_b16_f8x224": _K_B16,
    "k600/k600_b16_f8x224": _K_B16,
    "k700/k700_b16_f8x224": _K_B16,
    "k400/frozen_k400_l14_f8x336": _FROZEN,
    "k600/frozen_k600_l14_f8x336": _FROZEN,
    "k700/frozen_k700_l14_f8x336": _FROZEN,
    **{f"sthv{v}/ssv{v}_b16_f{t}x224": _STH_B16[t] for v in (1, 2) for t in (16, 32)},
    **{f"sthv{v}/ssv{v}_l14_f{t}x224": _STH_L14[t] for v in (1, 2) for t in (16, 32)},
}
# Something-Something's stochastic depth (BACKBONE_DROP_PATH_RATE, and DROP_PATH_RATE in the decoder);
# zero elsewhere.
STH_DROP_PATH, STH_DECODER_DROP_PATH = 0.2, 0.4


def released_protocol(frames: int, size: int, *, sth: bool = False, clips: int = 1, crops: int = 1) -> ViewProtocol:
    """The official test loaders' protocol: sparse sampling of RGB video (`kinetics_sparse`, `mit`, `ant`),
    or with `sth` the Something-Something loader's segments of BGR JPEG frames (OpenCV), whose 1-crop
    test takes the first crop."""
    if sth:
        return ViewProtocol(frames, None, "segment", clips, crops, size, channel_order="bgr", single_crop="first")
    return ViewProtocol(frames, None, "sparse", clips, crops, size, channel_order="rgb", single_crop="centre")


@dataclass(frozen=True)
class V2ZooEntry:
    name: str
    official_name: str  # the official checkpoint's file stem (the official model zoo page)
    family: str  # key of models.config_v2.V2_FAMILIES
    dataset: str  # k400, k600, k700, k710, mit, sthv1, sthv2, anet, hacs
    pretrain: str  # "CLIP-400M", "CLIP-400M+K710", "CLIP-400M+K710+K400"
    protocol: ViewProtocol  # the released test protocol (`released_protocol`)
    top1: float | None  # the official model zoo page (the K710 models have none)
    experiment: str  # exp/<dataset>/<experiment> of the official repository
    sth: bool = False  # the Something-Something design: local MHRA (double), temporal downsampling
    frozen: bool = False
    hub_file: str | None = None  # the authors' copy in V2_HUB_REPO, at V2_HUB_REVISION
    mmaction2_url: str | None = None  # MMAction2's published copy
    retrained: bool = False  # MMAction2's copy is its own training of the official recipe, not the official file
    label_set: str | None = None  # None: no checked class names for this head
    gflops_per_view: float | None = None  # the published figure (`PUBLISHED_TFLOPS`), None where none is
    gflops_step: float = PUBLISHED_GFLOPS_STEP  # what the published figure is rounded to

    hub_bytes: None = None  # not recorded: the Hub's sha256 checks the file
    drive_id: None = None  # no UniFormerV2 file is on Google Drive

    @property
    def num_classes(self) -> int:
        return V2_DATASET_CLASSES[self.dataset]

    @property
    def recipe(self) -> Recipe | None:
        """The released recipe when the experiment starts from CLIP (`RECIPES`), else None."""
        return RECIPES.get(self.experiment)

    @property
    def drop_path(self) -> float:
        """The backbone's stochastic depth in training (the decoder's is in `config`)."""
        return STH_DROP_PATH if self.sth else 0.0

    @property
    def gflops(self) -> None:
        """No total over the test views is published (MMAction2 gives the figure per view)."""
        return None

    @property
    def hub_repo(self) -> str | None:
        return V2_HUB_REPO if self.hub_file is not None else None

    @property
    def hub_revision(self) -> str | None:
        """The Hub commit the file is pinned to (the one that added it)."""
        return V2_HUB_REVISION if self.hub_file is not None else None

    @property
    def on_hub(self) -> bool:
        return self.hub_file is not None

    @property
    def sources(self) -> tuple[Source, ...]:
        """Where the weights download from (`ZooEntry.sources`): the Hub copy or MMAction2's; empty when
        no copy survives."""
        return ("hub",) if self.hub_file is not None else ("mmaction2",) if self.mmaction2_url is not None else ()

    @property
    def official_url(self) -> str:
        folder = {"mit": "mitv1"}.get(self.dataset, self.dataset)
        return f"{OFFICIAL_BASE}{folder}/{self.official_name}.pyth"

    @property
    def config(self) -> V2Config:
        base = V2_FAMILIES[self.family]
        changes: dict[str, object] = {"num_classes": self.num_classes, "frozen": self.frozen}
        if self.sth:
            # Something-Something: the decoder reads the last 2/3 of the blocks (8 of 12, 16 of 24).
            changes |= {
                "local_mhra": "double",
                "temporal_downsample": True,
                "return_layers": last_layers(base.layers, base.layers * 2 // 3),
                "decoder_drop_path_rate": STH_DECODER_DROP_PATH,
            }
        return base.replace(**changes)

    def as_dict(self) -> dict[str, object]:
        """The `uniformer models` record (docs/OUTPUT.md), with the same fields as a UniFormer entry's."""
        return {
            "model": self.name,
            "aliases": [alias for alias, target in V2_ALIASES.items() if target == self.name],
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
            "layer_scale": None,
            "head_classes": None,
            "drop_path": self.drop_path,
            "recipe": None if self.recipe is None else asdict(self.recipe),
            "label_set": self.label_set,
        }


class _Copy(NamedTuple):
    """A surviving copy, as the table below names it."""

    kind: Literal["hub", "mmaction2"]
    location: str  # the Hub file name, or the URL
    retrained: bool = False


def _mm(path: str, *, retrained: bool = False) -> _Copy:
    """An MMAction2 copy; `path` is below MMACTION_BASE and ends in `-<sha256 prefix>.pth`."""
    return _Copy("mmaction2", MMACTION_BASE + path, retrained)


def _hub(filename: str) -> _Copy:
    return _Copy("hub", filename)


_B_MM = "uniformerv2-base-p16-res224_clip"
_L_MM = "uniformerv2-large-p14-res{}_clip-kinetics710-pre_u{}_kinetics{}-rgb_20221219-{}.pth"


def _large(dataset: str, size: int, frames: int, digest: str) -> _Copy:
    folder = {"k400": "kinetics400", "k600": "kinetics600", "k700": "kinetics700"}[dataset]
    return _mm(f"{folder}/" + _L_MM.format(size, frames, dataset.removeprefix("k"), digest))


def _k(
    name: str,
    official: str,
    family: str,
    dataset: str,
    pretrain: str,
    frames: int,
    views: str,
    top1: float | None,
    experiment: str,
    source: _Copy | None = None,
    *,
    frozen: bool = False,
) -> V2ZooEntry:
    """A Kinetics / K710 / MiT / ActivityNet / HACS entry: sparse sampling (`kinetics_sparse`, `mit`, `ant`
    test loaders), the decoder on the last 4 blocks, no local MHRA. `views` is clips x crops."""
    clips, crops = (int(n) for n in views.split("x"))
    protocol = released_protocol(frames, V2_FAMILIES[family].resolution, clips=clips, crops=crops)
    label_set = None
    if source is not None and dataset in ("k400", "k600"):
        # The official file keeps the official order; MMAction2's copies follow MMAction2's label files.
        label_set = dataset if source.kind == "hub" else f"{dataset}-mmaction"
    elif source is not None and dataset in V2_LABEL_SET_SIZES:
        label_set = dataset
    hub = source is not None and source.kind == "hub"
    tflops = PUBLISHED_TFLOPS.get((family, frames, protocol.size))
    return V2ZooEntry(
        name, official, family, dataset, pretrain, protocol, top1, experiment, frozen=frozen,
        hub_file=source.location if source and hub else None,
        mmaction2_url=source.location if source and not hub else None,
        retrained=source.retrained if source else False, label_set=label_set,
        gflops_per_view=None if tflops is None else round(tflops * 1000, 1),
    )  # fmt: skip


def _sth(name: str, official: str, family: str, dataset: str, frames: int, top1: float, experiment: str) -> V2ZooEntry:
    """A Something-Something entry: the official `sth` loader (segment sampling over JPEG frames, BGR),
    1 clip x 3 crops, all of the UniFormerV2 design. No copy of these weights survives."""
    protocol = released_protocol(frames, V2_FAMILIES[family].resolution, sth=True, crops=3)
    return V2ZooEntry(name, official, family, dataset, "CLIP-400M", protocol, top1, experiment, sth=True)


C, CK, CKK = "CLIP-400M", "CLIP-400M+K710", "CLIP-400M+K710+K400"
B, L, L336 = "v2-b16", "v2-l14", "v2-l14-336"

# fmt: off
_ENTRIES: tuple[V2ZooEntry, ...] = (
    # name                            official checkpoint                          family data   pretrain T   views  top-1 experiment
    _k("v2-b16x8-k710",               "k710_uniformerv2_b16_8x224",                B,    "k710", C,   8,  "4x3", None, "k710/k710_b16_f8x224",
       _mm(f"{_B_MM}-pre_u8_kinetics710-rgb/{_B_MM}-pre_u8_kinetics710-rgb_20230612-63cdbad9.pth")),
    _k("v2-l14x8-k710",               "k710_uniformerv2_l14_8x224",                L,    "k710", C,   8,  "4x3", None, "k710/k710_l14_f8x224",
       _mm("kinetics710/uniformerv2-large-p14-res224_clip-pre_u8_kinetics710-rgb_20230612-d002a407.pth")),
    _k("v2-l14x8-336-k710",           "k710_uniformerv2_l14_8x336",                L336, "k710", C,   8,  "4x3", None, "k710/k710_l14_f8x336",
       _mm("kinetics710/uniformerv2-large-p14-res336_clip-pre_u8_kinetics710-rgb_20230612-d723ddc1.pth")),
    _k("v2-l14x8-336-k710-frozen",    "frozen_k710_uniformerv2_l14_8x336",         L336, "k710", C,   8,  "3x1", None, "k710/frozen_k710_l14_f8x336", frozen=True),
    # Kinetics-400
    _k("v2-b16x8-k400",               "k400_uniformerv2_b16_8x224",                B,    "k400", C,   8,  "4x3", 84.4, "k400/k400_b16_f8x224",
       _mm(f"{_B_MM}_8xb32-u8_kinetics400-rgb/{_B_MM}_8xb32-u8_kinetics400-rgb_20230313-e29fc968.pth", retrained=True)),
    _k("v2-b16x8-k400-k710",          "k400_k710_uniformerv2_b16_8x224",           B,    "k400", CK,  8,  "4x3", 85.6, "k400/k400+k710_b16_f8x224",
       _hub("k400+k710_uniformerv2_b16_8x224.pyth")),
    _k("v2-l14x8-k400-k710",          "k400_k710_uniformerv2_l14_8x224",           L,    "k400", CK,  8,  "4x3", 88.8, "k400/k400+k710_l14_f8x224", _large("k400", 224, 8, "972ea063")),
    _k("v2-l14x16-k400-k710",         "k400_k710_uniformerv2_l14_16x224",          L,    "k400", CK,  16, "4x3", 89.1, "k400/k400+k710_l14_f16x224", _large("k400", 224, 16, "6dc86d05")),
    _k("v2-l14x32-k400-k710",         "k400_k710_uniformerv2_l14_32x224",          L,    "k400", CK,  32, "4x3", 89.3, "k400/k400+k710_l14_f32x224", _large("k400", 224, 32, "56a46f64")),
    _k("v2-l14x32-336-k400-k710",     "k400_k710_uniformerv2_l14_32x336",          L336, "k400", CK,  32, "4x3", 89.7, "k400/k400+k710_l14_f32x336", _large("k400", 336, 32, "1dd7650f")),
    _k("v2-l14x64-336-k400-k710",     "k400_k710_uniformerv2_l14_64x336",          L336, "k400", CK,  64, "4x3", 90.0, "k400/k400+k710_l14_f64x336"),
    _k("v2-l14x8-336-k400-frozen",    "frozen_k400_uniformerv2_l14_8x336",         L336, "k400", C,   8,  "3x1", 86.7, "k400/frozen_k400_l14_f8x336", frozen=True),
    _k("v2-l14x8-336-k400-k710-frozen", "frozen_k400_k710_uniformerv2_l14_8x336",  L336, "k400", CK,  8,  "3x1", 87.8, "k400/frozen_k400+k710_l14_f8x336", frozen=True),
    _k("v2-l14x32-336-k400-k710-frozen", "frozen_k400_k710_uniformerv2_l14_32x336", L336, "k400", CK, 32, "3x1", 88.9, "k400/frozen_k400+k710_l14_f32x336", frozen=True),
    # Kinetics-600
    _k("v2-b16x8-k600",               "k600_uniformerv2_b16_8x224",                B,    "k600", C,   8,  "4x3", 85.0, "k600/k600_b16_f8x224"),
    _k("v2-b16x8-k600-k710",          "k600_k710_uniformerv2_b16_8x224",           B,    "k600", CK,  8,  "4x3", 86.1, "k600/k600+k710_b16_f8x224",
       _mm(f"{_B_MM}-kinetics710-pre_8xb32-u8_kinetics600-rgb/{_B_MM}-kinetics710-pre_8xb32-u8_kinetics600-rgb_20230313-544f06f0.pth", retrained=True)),
    _k("v2-l14x8-k600-k710",          "k600_k710_uniformerv2_l14_8x224",           L,    "k600", CK,  8,  "4x3", 89.0, "k600/k600+k710_l14_f8x224", _large("k600", 224, 8, "cf88e4c2")),
    _k("v2-l14x16-k600-k710",         "k600_k710_uniformerv2_l14_16x224",          L,    "k600", CK,  16, "4x3", 89.4, "k600/k600+k710_l14_f16x224", _large("k600", 224, 16, "38ff0e3e")),
    _k("v2-l14x32-k600-k710",         "k600_k710_uniformerv2_l14_32x224",          L,    "k600", CK,  32, "4x3", 89.5, "k600/k600+k710_l14_f32x224", _large("k600", 224, 32, "d450d071")),
    _k("v2-l14x32-336-k600-k710",     "k600_k710_uniformerv2_l14_32x336",          L336, "k600", CK,  32, "4x3", 89.9, "k600/k600+k710_l14_f32x336", _large("k600", 336, 32, "f984f5d2")),
    _k("v2-l14x64-336-k600-k710",     "k600_k710_uniformerv2_l14_64x336",          L336, "k600", CK,  64, "4x3", 90.1, "k600/k600+k710_l14_f64x336"),
    _k("v2-l14x8-336-k600-frozen",    "frozen_k600_uniformerv2_l14_8x336",         L336, "k600", C,   8,  "3x1", 87.4, "k600/frozen_k600_l14_f8x336", frozen=True),
    _k("v2-l14x8-336-k600-k710-frozen", "frozen_k600_k710_uniformerv2_l14_8x336",  L336, "k600", CK,  8,  "3x1", 88.2, "k600/frozen_k600+k710_l14_f8x336", frozen=True),
    _k("v2-l14x32-336-k600-k710-frozen", "frozen_k600_k710_uniformerv2_l14_32x336", L336, "k600", CK, 32, "3x1", 89.2, "k600/frozen_k600+k710_l14_f32x336", frozen=True),
    # Kinetics-700
    _k("v2-b16x8-k700",               "k700_uniformerv2_b16_8x224",                B,    "k700", C,   8,  "4x3", 75.8, "k700/k700_b16_f8x224",
       _mm(f"{_B_MM}_8xb32-u8_kinetics700-rgb/{_B_MM}_8xb32-u8_kinetics700-rgb_20230313-f02e48ad.pth", retrained=True)),
    _k("v2-b16x8-k700-k710",          "k700_k710_uniformerv2_b16_8x224",           B,    "k700", CK,  8,  "4x3", 76.3, "k700/k700+k710_b16_f8x224",
       _mm(f"{_B_MM}-kinetics710-pre_8xb32-u8_kinetics700-rgb/{_B_MM}-kinetics710-pre_8xb32-u8_kinetics700-rgb_20230313-69070837.pth", retrained=True)),
    _k("v2-l14x8-k700-k710",          "k700_k710_uniformerv2_l14_8x224",           L,    "k700", CK,  8,  "4x3", 80.8, "k700/k700+k710_l14_f8x224", _large("k700", 224, 8, "bfb9f401")),
    _k("v2-l14x16-k700-k710",         "k700_k710_uniformerv2_l14_16x224",          L,    "k700", CK,  16, "4x3", 81.2, "k700/k700+k710_l14_f16x224", _large("k700", 224, 16, "745209d2")),
    _k("v2-l14x32-k700-k710",         "k700_k710_uniformerv2_l14_32x224",          L,    "k700", CK,  32, "4x3", 81.5, "k700/k700+k710_l14_f32x224", _large("k700", 224, 32, "eebe7056")),
    _k("v2-l14x32-336-k700-k710",     "k700_k710_uniformerv2_l14_32x336",          L336, "k700", CK,  32, "4x3", 82.1, "k700/k700+k710_l14_f32x336", _large("k700", 336, 32, "95cf9046")),
    _k("v2-l14x64-336-k700-k710",     "k700_k710_uniformerv2_l14_64x336",          L336, "k700", CK,  64, "4x3", 82.7, "k700/k700+k710_l14_f64x336"),
    _k("v2-l14x8-336-k700-frozen",    "frozen_k700_uniformerv2_l14_8x336",         L336, "k700", C,   8,  "3x1", 79.6, "k700/frozen_k700_l14_f8x336", frozen=True),
    _k("v2-l14x8-336-k700-k710-frozen", "frozen_k700_k710_uniformerv2_l14_8x336",  L336, "k700", CK,  8,  "3x1", 79.7, "k700/frozen_k700+k710_l14_f8x336", frozen=True),
    _k("v2-l14x32-336-k700-k710-frozen", "frozen_k700_k710_uniformerv2_l14_32x336", L336, "k700", CK, 32, "3x1", 80.8, "k700/frozen_k700+k710_l14_f32x336", frozen=True),
    # Moments in Time V1
    _k("v2-b16x8-mit",                "mit_uniformerv2_b16_8x224",                 B,    "mit",  CKK, 8,  "4x3", 42.6, "mit/mit_b16_f8x224", _hub("mit_uniformerv2_b16_8x224.pyth")),
    _k("v2-l14x8-mit",                "mit_uniformerv2_l14_8x224",                 L,    "mit",  CKK, 8,  "4x3", 47.0, "mit/mit_l14_f8x224",
       _mm("mitv1/uniformerv2-large-p16-res224_clip-kinetics710-kinetics-k400-pre_u8_mitv1-rgb_20221219-882c0598.pth")),
    _k("v2-l14x8-336-mit",            "mit_uniformerv2_l14_8x336",                 L336, "mit",  CKK, 8,  "4x3", 47.8, "mit/mit_l14_f8x336",
       _mm("mitv1/uniformerv2-large-p16-res336_clip-kinetics710-kinetics-k400-pre_u8_mitv1-rgb_20221219-9020986e.pth")),
    # Something-Something V1 / V2 (no copy survives)
    _sth("v2-b16x16-sthv1",           "sthv1_uniformerv2_b16_16x224",              B,    "sthv1", 16, 56.8, "sthv1/ssv1_b16_f16x224"),
    _sth("v2-b16x32-sthv1",           "sthv1_uniformerv2_b16_32x224",              B,    "sthv1", 32, 59.4, "sthv1/ssv1_b16_f32x224"),
    _sth("v2-l14x16-sthv1",           "sthv1_uniformerv2_l14_16x224",              L,    "sthv1", 16, 60.5, "sthv1/ssv1_l14_f16x224"),
    _sth("v2-l14x32-sthv1",           "sthv1_uniformerv2_l14_32x224",              L,    "sthv1", 32, 62.7, "sthv1/ssv1_l14_f32x224"),
    _sth("v2-b16x16-sthv2",           "sthv2_uniformerv2_b16_16x224",              B,    "sthv2", 16, 69.5, "sthv2/ssv2_b16_f16x224"),
    _sth("v2-b16x32-sthv2",           "sthv2_uniformerv2_b16_32x224",              B,    "sthv2", 32, 70.7, "sthv2/ssv2_b16_f32x224"),
    _sth("v2-l14x16-sthv2",           "sthv2_uniformerv2_l14_16x224",              L,    "sthv2", 16, 72.1, "sthv2/ssv2_l14_f16x224"),
    _sth("v2-l14x32-sthv2",           "sthv2_uniformerv2_l14_32x224",              L,    "sthv2", 32, 73.0, "sthv2/ssv2_l14_f32x224"),
    # ActivityNet / HACS: sparse sampling over the whole (untrimmed) video, 10 clips x 3 crops (no copy survives)
    _k("v2-l14x16-anet",              "anet_uniformerv2_l14_16x224",               L,    "anet", CKK, 16, "10x3", 94.3, "anet/anet_l14_16x224"),
    _k("v2-l14x32-anet",              "anet_uniformerv2_l14_32x224",               L,    "anet", CKK, 32, "10x3", 94.7, "anet/anet_l14_32x224"),
    _k("v2-l14x16-hacs",              "hacs_uniformerv2_l14_16x224",               L,    "hacs", CKK, 16, "10x3", 95.5, "hacs/hacs_l14_16x224"),
    _k("v2-l14x32-hacs",              "hacs_uniformerv2_l14_32x224",               L,    "hacs", CKK, 32, "10x3", 95.4, "hacs/hacs_l14_32x224"),
)
# fmt: on

V2_ZOO: dict[str, V2ZooEntry] = {entry.name: entry for entry in _ENTRIES}

# Friendly names: the best downloadable entry of each backbone and label set.
V2_ALIASES: dict[str, str] = {
    "v2-b-k400": "v2-b16x8-k400-k710",
    "v2-l-k400": "v2-l14x32-336-k400-k710",
    "v2-b-k600": "v2-b16x8-k600-k710",
    "v2-l-k600": "v2-l14x32-336-k600-k710",
    "v2-b-k700": "v2-b16x8-k700-k710",
    "v2-l-k700": "v2-l14x32-336-k700-k710",
    "v2-b-k710": "v2-b16x8-k710",
    "v2-b-mit": "v2-b16x8-mit",
    "v2-l-mit": "v2-l14x8-336-mit",
}


def find_v2_entry(key: str) -> V2ZooEntry | None:
    """The entry a lower-case name, alias or official checkpoint name (with or without `.pyth`) names."""
    key = V2_ALIASES.get(key, key).removesuffix(".pyth").replace("+", "_")
    if key in V2_ZOO:
        return V2_ZOO[key]
    return next((entry for entry in _ENTRIES if entry.official_name == key), None)
