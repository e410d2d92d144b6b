"""What a training run is: `TrainOptions` (`train_options.py`: what the user asked, None = default) ->
`TrainConfig` (complete).

`plan_training` resolves every default: classes from the data, architecture and test protocol from the
weights the run starts from, hyper-parameters from the released recipe of the matching zoo entry
(PROTOCOLS.md 7.4; UniFormerV2: its experiments from CLIP, `zoo.v2.RECIPES`) with the learning rate scaled
linearly to the user's batch. The config is saved in every checkpoint, so `--resume` needs nothing else.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from uniformer_cli.data import storage
from uniformer_cli.data.augment import AugmentConfig
from uniformer_cli.data.datasets import DatasetSplit, locate_packed, mirroring_changes_labels, read_dataset, read_split
from uniformer_cli.data.loading import DEFAULT_WORKERS, decoding_workers
from uniformer_cli.data.shards import is_packed
from uniformer_cli.device import check_device_name
from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.engine.distributed import main_process, world_size
from uniformer_cli.engine.train_data import ClipSampling
from uniformer_cli.engine.train_options import AMP_CHOICES, AUG_CHOICES, TrainOptions
from uniformer_cli.errors import CheckpointError, DatasetError, UniformerError
from uniformer_cli.files import ensure_writable
from uniformer_cli.models.config import FAMILIES, ModelConfig
from uniformer_cli.models.config_v2 import ARCHITECTURES, V2_FAMILIES, V2Config, v2_family_of
from uniformer_cli.protocol import ProtocolOverrides, ViewProtocol, resolve_protocol
from uniformer_cli.weights import LoadedModel, resolve_model
from uniformer_cli.weights.checkpoint import light_keep_ratios
from uniformer_cli.zoo import IMAGENET_WEIGHTS, ZooEntry, best_entry, find_entry
from uniformer_cli.zoo.recipe import Recipe
from uniformer_cli.zoo.v2 import V2_ZOO, V2ZooEntry

# The official augmentation (RandAugment, mixup/cutmix, erasing, 2 repeats) needs data to pay off;
# below this many training videos `--aug auto` uses the plain jitter + crop + flip chain.
OFFICIAL_AUG_MIN_VIDEOS = 1000
WARMUP_START_LR = 1e-6  # warm-up start and cosine end learning rate (PROTOCOLS.md 7.3)
CLIP_GRAD_NORM = 20.0
MIXUP_ALPHA, CUTMIX_ALPHA = 0.8, 1.0
# Where a run starts: random weights, ImageNet image weights (UniFormer), CLIP's ViT (UniFormerV2), or a
# video checkpoint it fine-tunes.
SCRATCH, IMAGENET, CLIP, FINETUNE = "scratch", "imagenet", "clip", "finetune"
# Training from scratch follows UniFormer's ImageNet-from-scratch recipe (Sense-X/UniFormer,
# image_classification/main.py and exp/uniformer_small/run.sh): AdamW at 5e-4 per 512 images, i.e. 1e-3 for
# its 1024 per step, warm-up over 5 of 300 epochs, cosine down to 1e-5 (weight decay stays the recipe's).
# The video recipes' rates are for fine-tuning and, scaled to a handful of videos, leave a new network where
# it started. The scratch rate is not scaled below its 1024 images: at 8 videos a linear rule gives 7.8e-6
# and even the square-root rule (6.3e-5) kept a tiny model near chance for 12 epochs on the motion test set,
# where 1e-3 reached 69%.
SCRATCH_LR, SCRATCH_LR_BATCH = 1e-3, 1024
SCRATCH_WARMUP_SHARE = 5 / 300
SCRATCH_MIN_LR = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (saved in every checkpoint; `--resume` reuses it)."""

    output: str
    data: str
    dataset: str
    classes: tuple[str, ...]
    init: str  # SCRATCH, IMAGENET, CLIP or FINETUNE
    init_model: str | None  # IMAGENET / CLIP: a checkpoint file (None: the Hub's); FINETUNE: zoo name, Hub repo or file
    init_weights: str | None  # FINETUNE from a zoo name: the local file of that entry (None: download)
    model: ModelConfig | V2Config
    protocol: ViewProtocol  # test protocol of the exported model; frames/stride/sampling drive training
    augment: AugmentConfig
    recipe_from: str  # the zoo entry whose recipe gave the defaults
    epochs: int
    warmup_epochs: float
    lr: float
    min_lr: float
    weight_decay: float
    batch_size: int  # videos per process and micro-batch
    accum_steps: int
    world_size: int
    clip_grad: float
    label_smoothing: float
    mixup_alpha: float  # 0 disables mixup
    cutmix_alpha: float  # 0 disables cutmix
    amp: str
    seed: int
    val_every: int
    val_clips: int
    val_crops: int
    save_every: int  # optimiser steps between mid-epoch checkpoints (0: at epoch ends only)
    train_split: str = "train"
    val_split: str = "val"
    train_list: str | None = None
    val_list: str | None = None
    lr_rule: str = ""  # where `lr` came from and what was scaled, in words (the plan shows it)
    init_revision: str | None = None  # FINETUNE from a zoo name or Hub repository: its Hub revision (None: main)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def global_batch(self) -> int:
        """Videos per optimiser step over all processes."""
        return self.batch_size * self.accum_steps * self.world_size

    @property
    def sampling(self) -> ClipSampling:
        return ClipSampling(self.protocol.frames, self.protocol.stride, self.protocol.sampling)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(
            classes=list(self.classes),
            model=asdict(self.model),
            protocol=self.protocol.as_dict(),
            augment=asdict(self.augment),
        )
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        augment: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value for key, value in values["augment"].items()
        }
        return cls(
            **{
                **values,
                "model": (V2Config if values["model"].get("arch") == "v2" else ModelConfig)(**values["model"]),
                "protocol": ViewProtocol.from_dict(values["protocol"]),
                "augment": AugmentConfig(**augment),
            }
        )


@dataclass(frozen=True)
class Runtime:
    """How this process runs the job; free to change between a run and its resumption."""

    device: str = "auto"
    workers: int = DEFAULT_WORKERS
    decoder: str = "auto"
    compile: bool = False
    # True: every block; a tuple: the first N blocks of each of the network's `checkpoint_groups` (UniFormer: 4
    # stages; UniFormerV2: its backbone); None: the network's default (`VideoNetwork.checkpoints_by_default`).
    grad_checkpointing: bool | tuple[int, ...] | None = None
    log_every: int = 10
    max_steps: int | None = None  # stop, after saving `last.pt`, once this many optimiser steps are done
    tensorboard: bool = False

    def __post_init__(self) -> None:
        check_device_name(self.device)  # a dry run checks it too, without a device
        object.__setattr__(self, "workers", decoding_workers(self.workers))


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _absolute(path: str | Path | None) -> str | None:
    """A local path made absolute (a resumed run may start elsewhere); a storage URL as it is."""
    if path is None or storage.is_url(path):
        return None if path is None else str(path)
    return str(Path(path).expanduser().resolve())


def default_entry(family: str) -> ZooEntry | V2ZooEntry:
    """The entry of a family that a new run takes its recipe and protocol from. UniFormer: the
    Kinetics-400 one, downloadable first, then the best top-1 (S 16x8, B 32x4, XXS 16x160, XS 32x192).
    UniFormerV2: its experiment from CLIP on Kinetics-400, else on Kinetics-710 (B/16 8x224 K400, L/14 and
    L/14@336 8-frame K710; the frozen ones only with --recipe)."""
    if family in V2_FAMILIES:
        released = [e for e in V2_ZOO.values() if e.family == family and e.recipe is not None and not e.frozen]
        return min(released, key=lambda entry: (entry.dataset != "k400", entry.dataset != "k710"))
    if family not in FAMILIES:
        raise UniformerError(f"unknown architecture {family!r} (use one of {', '.join(ARCHITECTURES)})")
    entry = best_entry("k400", family)
    if entry is None:
        raise UniformerError(f"the zoo has no Kinetics-400 model of {family!r} to take a recipe from: use --recipe")
    return entry


def read_splits(
    data: str | Path | None,
    dataset: str | None,
    *,
    classes: list[str] | None = None,
    train_split: str = "train",
    val_split: str = "val",
    train_list: str | Path | None = None,
    val_list: str | Path | None = None,
) -> tuple[DatasetSplit, DatasetSplit]:
    """The train and val splits. Classes come from `classes`, else the dataset's label set, else the
    train split's class folders / names; the val split is read against the same classes. A packed
    `data` (`uniformer data pack`: folder, index, or the training shards `DST/train-{000000..000099}.tar`,
    local or a URL) gives both splits from its index; its classes are the packed ones."""
    if data is None:
        raise DatasetError("--data DIR is required: a folder with train/ and val/ class folders, or a dataset root")
    if is_packed(data):
        if train_list is not None or val_list is not None:
            raise DatasetError("--data names a packed dataset, whose index lists its videos: drop the list options")
        location = locate_packed(dataset, data, train_split)
        train = read_split(location, classes=classes)
        val_location = locate_packed(dataset, location.packed.root, val_split)
        return train, read_split(val_location, classes=train.classes)
    root = storage.local_or_url(data)
    if dataset is None:
        if not storage.is_dir(storage.join(root, "train")):
            raise DatasetError(
                f"{root} has no train/ folder: use DIR/train/<class>/<video> and DIR/val/<class>/<video>, "
                "or name the layout with --dataset (k400, k600, sthv1, sthv2, ucf101, hmdb51, csv)"
            )
        dataset = "folder"
    train = read_dataset(dataset, root, split=train_split, list_file=train_list, classes=classes)
    val = read_dataset(dataset, root, split=val_split, list_file=val_list, classes=train.classes)
    return train, val


def config_splits(config: TrainConfig) -> tuple[DatasetSplit, DatasetSplit]:
    return read_splits(
        config.data,
        config.dataset,
        classes=list(config.classes),
        train_split=config.train_split,
        val_split=config.val_split,
        train_list=config.train_list,
        val_list=config.val_list,
    )


@dataclass(frozen=True)
class StartPoint:
    """The weights a run starts from and what they imply."""

    init: str  # SCRATCH, IMAGENET, CLIP or FINETUNE
    init_model: str | None  # IMAGENET / CLIP: a checkpoint file (None: the Hub's); FINETUNE: zoo name, Hub repo or file
    init_weights: str | None  # FINETUNE from a zoo name: the local file of that entry
    recipe: ZooEntry | V2ZooEntry  # whose recipe gives the default hyper-parameters
    architecture: ModelConfig | V2Config
    protocol: ViewProtocol
    revision: str | None = None  # FINETUNE: the Hub revision of `init_model`

    @property
    def hyper(self) -> Recipe:
        """The recipe itself (every entry a run takes its recipe from has one: `recipe_entry`)."""
        assert self.recipe.recipe is not None
        return self.recipe.recipe


def recipe_entry(name: str) -> ZooEntry | V2ZooEntry:
    """The zoo entry `--recipe` names; a UniFormerV2 one must be an experiment from CLIP (`zoo.v2.RECIPES`)."""
    entry = find_entry(name)
    if isinstance(entry, V2ZooEntry) and entry.recipe is None:
        usable = ", ".join(e.name for e in V2_ZOO.values() if e.recipe is not None and e.family == entry.family)
        raise UniformerError(
            f"{entry.name} fine-tunes a Kinetics-710 model, whose recipe is not one this command runs: pick a "
            f"{entry.family} recipe that starts from CLIP ({usable}), or fine-tune with --model"
        )
    return entry


def start_point(options: TrainOptions) -> StartPoint:
    """Where the run starts and which recipe applies.

    - `--model NAME|FILE` (or `--weights FILE`, or a `--recipe` whose released run started from a video
      model, e.g. Sth from K400) fine-tunes that checkpoint, of either family: its architecture, and its
      protocol with the channel order it was trained on;
    - otherwise `--init` (UniFormer: `imagenet` or an image checkpoint FILE, 2-D weights inflated;
      UniFormerV2: `clip` or a CLIP checkpoint FILE) or `--scratch` builds `--arch` (custom
      `--depth/--embed-dim/--head-dim`: UniFormer from scratch only), in RGB.
    The recipe (hyper-parameters, and the protocol of new runs) is `--recipe`'s, else the fine-tuned
    checkpoint's zoo entry's, else the family's (`default_entry`).
    """
    recipe = recipe_entry(options.recipe) if options.recipe else None
    if recipe is not None and options.arch is not None:
        raise UniformerError("--recipe names the architecture: drop --arch")
    asked = {"depth": options.depth, "embed_dim": options.embed_dim, "head_dim": options.head_dim}
    custom: dict[str, Any] = {key: value for key, value in asked.items() if value is not None}
    source = options.model
    if source is None and options.init is None and recipe is not None and recipe.recipe is not None:
        source = None if recipe.recipe.init in (IMAGENET, CLIP) else recipe.recipe.init
    if source is not None or options.weights is not None:
        if options.init is not None or options.arch is not None or custom:
            raise UniformerError(
                "fine-tuning keeps the checkpoint's architecture: drop --init/--scratch/--arch/--depth"
            )
        weights = str(options.weights) if options.weights is not None else None
        init_model, init_weights = (source, weights) if source is not None else (weights, None)
        assert init_model is not None
        loaded = starting_model(init_model, init_weights, options.revision)
        config = loaded.config
        entry = loaded.entry if loaded.entry is not None and loaded.entry.recipe is not None else None
        recipe = recipe or entry or default_entry(_family(config))
        own = loaded.protocol
        protocol = own if own is not None and options.recipe is None else recipe.protocol
        protocol = replace(protocol, channel_order=own.channel_order if own else "rgb")
        return StartPoint(FINETUNE, init_model, init_weights, recipe, config, protocol, options.revision)
    if options.revision is not None:
        raise UniformerError(
            "--revision selects the Hub version of the zoo model or Hub repository that --model names: add --model"
        )
    recipe = recipe or default_entry(options.arch or "s")
    architecture = recipe.config
    v2 = isinstance(architecture, V2Config)
    if v2 and custom:
        raise UniformerError("UniFormerV2 keeps its CLIP backbone's widths: drop --depth/--embed-dim/--head-dim")
    if options.depth is not None and isinstance(architecture, ModelConfig) and architecture.arch == "light":
        custom["keep_ratio3"], custom["keep_ratio4"] = light_keep_ratios(options.depth[2], options.depth[3])
    init, init_model = SCRATCH, None
    if options.init != SCRATCH:
        released = CLIP if v2 else IMAGENET
        wrong = IMAGENET if v2 else CLIP
        if options.init == wrong:
            raise UniformerError(
                f"--init {wrong} does not start a {'UniFormerV2' if v2 else 'UniFormer'}: use --init {released}, "
                "a checkpoint FILE, or --scratch"
            )
        init, init_model = released, None if options.init in (None, released) else options.init
        if init_model is None and custom:
            raise UniformerError("custom --depth/--embed-dim/--head-dim have no ImageNet weights: add --scratch")
        if init_model is None and not v2 and recipe.family not in IMAGENET_WEIGHTS:
            raise UniformerError(
                f"no ImageNet weights of {recipe.family} are published: pass an image checkpoint with --init FILE, "
                "or --scratch"
            )
    protocol = replace(recipe.protocol, channel_order="rgb")
    return StartPoint(init, init_model, None, recipe, architecture.replace(**custom), protocol)


def starting_model(init_model: str, init_weights: str | None, revision: str | None) -> LoadedModel:
    """The checkpoint a fine-tuning run starts from, resolved as `predict --model` resolves a model
    (`weights.resolve_model`: a zoo name, a Hub repository `namespace/name` or a file, at `revision`); with
    `init_weights`, the local file of the zoo entry `init_model`. The plan and the run resolve it here alike."""
    if init_weights is not None:
        return resolve_model(init_weights, device="cpu", revision=revision, zoo_name=init_model)
    return resolve_model(init_model, device="cpu", revision=revision)


def _family(config: ModelConfig | V2Config) -> str:
    """The family whose default recipe a fine-tuned checkpoint without a recipe of its own follows."""
    if isinstance(config, V2Config):
        family = v2_family_of(config)
        if family is None:
            raise UniformerError("this UniFormerV2 checkpoint is no released backbone: name a recipe with --recipe")
        return family
    return "xxs" if config.arch == "light" else "s"


def _augment(
    options: TrainOptions, official: bool, size: int, flip: bool, recipe: Recipe, channel_order: str
) -> AugmentConfig:
    """The recipe's chain (PROTOCOLS.md 7.1; UniFormerV2's: RandAugment alone) or the plain one (4.3), with
    the user's overrides."""
    base = (
        AugmentConfig(
            size=size, randaug=recipe.randaug, flip=flip, erase_prob=recipe.erase_prob, repeats=recipe.repeats
        )
        if official
        else AugmentConfig.basic(size, flip=flip)
    )
    augment = replace(
        base,
        randaug=_pick(options.randaug, base.randaug),
        erase_prob=_pick(options.erase_prob, base.erase_prob),
        repeats=_pick(options.repeats, base.repeats),
        channel_order=channel_order,
    )
    return replace(augment, randaug=None) if augment.randaug in ("none", "") else augment


def plan_training(options: TrainOptions) -> TrainConfig:
    """The complete run for `options`: every default resolved and the learning rate scaled.

    The recipe gives lr, epochs, warm-up, weight decay, RandAugment, flip and drop path; its lr is
    scaled linearly from the recipe's batch (videos per step on one 8-GPU machine) to this run's
    `batch x accumulation x processes`, and the default batch is the recipe's per-GPU share.
    """
    # Absolute paths: a resumed run may start from another working directory.
    data, train_list, val_list = (_absolute(path) for path in (options.data, options.train_list, options.val_list))
    # A run folder at a URL is written in a local working folder and uploaded file by file (train.py).
    output = str(_absolute(_pick(options.output, Path("runs") / "train")))
    if main_process() and not storage.is_url(output):  # the run folder must take files: say so now
        ensure_writable(Path(output) / "last.pt", "training checkpoint")
    train_split, val_split = _pick(options.train_split, "train"), _pick(options.val_split, "val")
    train, _ = read_splits(
        data, options.dataset, train_split=train_split, val_split=val_split, train_list=train_list, val_list=val_list
    )
    start = start_point(options)
    recipe = start.hyper
    protocol = resolve_protocol(
        start.protocol,
        ProtocolOverrides(frames=options.frames, stride=options.stride, sampling=options.sampling, size=options.size),
        "the start point",
    )
    aug = _pick(options.aug, "auto")
    if aug not in AUG_CHOICES:
        raise UniformerError(f"unknown --aug {aug!r} (use one of {', '.join(AUG_CHOICES)})")
    official = aug == "official" or (aug == "auto" and len(train.samples) >= OFFICIAL_AUG_MIN_VIDEOS)
    # Something-Something classes name directions ("from left to right"): a mirrored clip would carry the
    # wrong label, so such data never flips unless --flip asks for it, whatever the recipe's data was.
    flip = _pick(options.flip, recipe.flip and not mirroring_changes_labels(train))
    augment = _augment(options, official, protocol.size, flip, recipe, protocol.channel_order)
    mixup = _pick(options.mixup, official and recipe.mixup)
    batch_size = _pick(options.batch_size, max(1, recipe.batch_size // recipe.gpus))
    accum_steps = _pick(options.accum_steps, 1)
    if mixup and batch_size * augment.repeats < 2:
        raise UniformerError("mixup/cutmix pairs clips of a micro-batch: use --batch-size 2 or more, or --no-mixup")
    schedule = _schedule(options, start, batch_size * accum_steps * world_size())
    amp = _pick(options.amp, "auto")
    if amp not in AMP_CHOICES:
        raise UniformerError(f"unknown --amp {amp!r} (use one of {', '.join(AMP_CHOICES)})")
    epochs = _pick(options.epochs, recipe.epochs)
    lr = schedule.lr
    return TrainConfig(
        output=output,
        data=str(data),
        dataset=train.dataset,
        classes=tuple(train.classes),
        init=start.init,
        init_model=start.init_model,
        init_weights=start.init_weights,
        init_revision=start.revision,
        model=start.architecture.replace(
            num_classes=len(train.classes), drop_path_rate=_pick(options.drop_path, start.recipe.drop_path)
        ),
        protocol=protocol,
        augment=augment,
        recipe_from=start.recipe.name,
        epochs=epochs,
        # A shortened schedule keeps the recipe's warm-up share (10 of 110 epochs), not its length.
        warmup_epochs=min(_pick(options.warmup_epochs, schedule.warmup_share * epochs), epochs),
        lr=lr,
        min_lr=min(_pick(options.min_lr, schedule.min_lr), lr),
        weight_decay=_pick(options.weight_decay, schedule.weight_decay),
        batch_size=batch_size,
        accum_steps=accum_steps,
        world_size=world_size(),
        clip_grad=_pick(options.clip_grad, CLIP_GRAD_NORM),
        label_smoothing=_pick(options.label_smoothing, recipe.label_smoothing),
        mixup_alpha=MIXUP_ALPHA if mixup else 0.0,
        cutmix_alpha=CUTMIX_ALPHA if mixup else 0.0,
        amp=amp,
        seed=_pick(options.seed, 0),
        val_every=_pick(options.val_every, 1),
        val_clips=_pick(options.val_clips, 1),
        val_crops=_pick(options.val_crops, 1),
        save_every=_pick(options.save_every, 0),
        train_split=train_split,
        val_split=val_split,
        train_list=train_list,
        val_list=val_list,
        lr_rule=schedule.rule,
    )


@dataclass(frozen=True)
class _Schedule:
    lr: float
    rule: str  # where lr came from, for the plan
    warmup_share: float  # of the epochs
    min_lr: float
    weight_decay: float


def _schedule(options: TrainOptions, start: StartPoint, global_batch: int) -> _Schedule:
    """Learning rate, warm-up and weight decay: the recipe's, its lr scaled linearly to the global batch;
    from scratch, the rate and warm-up of UniFormer's ImageNet recipe (`SCRATCH_LR`)."""
    recipe = start.hyper
    if start.init == SCRATCH:
        lr = SCRATCH_LR * max(global_batch, SCRATCH_LR_BATCH) / SCRATCH_LR_BATCH
        scaled = (
            f"scaled linearly to {global_batch}"
            if global_batch > SCRATCH_LR_BATCH
            else f"not scaled down to {global_batch} (AdamW from scratch needs it)"
        )
        rule = (
            f"{lr:.3g}: from scratch, UniFormer's ImageNet rate {SCRATCH_LR:g} for {SCRATCH_LR_BATCH} images, {scaled}"
        )
        base = _Schedule(lr, rule, SCRATCH_WARMUP_SHARE, SCRATCH_MIN_LR, recipe.weight_decay)
    else:
        lr = recipe.lr * global_batch / recipe.batch_size
        rule = (
            f"{lr:.3g}: {start.recipe.name}'s {recipe.lr:g} for {recipe.batch_size} videos per step, "
            f"scaled linearly to {global_batch}"
        )
        base = _Schedule(lr, rule, recipe.warmup_epochs / recipe.epochs, WARMUP_START_LR, recipe.weight_decay)
    if options.lr is not None:
        return replace(base, lr=options.lr, rule=f"{options.lr:.3g} (--lr)")
    return base


def checkpoint_path(resume: str | Path) -> str | Path:
    """`--resume` takes a run folder (its `last.pt`) or a checkpoint file, local or at a URL."""
    location = storage.local_or_url(resume)
    return storage.join(location, "last.pt") if storage.is_dir(location) else location


@contextmanager
def local_checkpoint(checkpoint: str | Path) -> Iterator[Path]:
    """`checkpoint` as a local file: a checkpoint at a URL is downloaded into a temporary folder, removed
    afterwards."""
    if not storage.is_url(checkpoint):
        yield Path(checkpoint)
        return
    if not storage.is_file(checkpoint):
        raise CheckpointError(f"training checkpoint {checkpoint} does not exist")
    with tempfile.TemporaryDirectory(prefix="uniformer-resume-") as folder:
        local = Path(folder) / storage.name_of(checkpoint)
        storage.download(str(checkpoint), local)
        yield local


def resume_config(checkpoint: Path, options: TrainOptions, origin: str | Path | None = None) -> TrainConfig:
    """The config saved in `checkpoint`, writing into the folder of the checkpoint (or of `origin`: where
    a downloaded checkpoint came from); `--epochs` may extend the run, any other run option is refused (it
    would make the resumed run a different one)."""
    changed = [
        f"--{f.name.replace('_', '-')}"
        for f in fields(options)
        if f.name != "epochs" and getattr(options, f.name) is not None
    ]
    if changed:
        raise UniformerError(
            f"--resume continues the saved run: drop {', '.join(changed)} (only --epochs and runtime options)"
        )
    saved = TrainConfig.from_dict(load_checkpoint(checkpoint)["config"])
    if world_size() != saved.world_size:
        raise UniformerError(
            f"{checkpoint} was trained by {saved.world_size} process(es), this run has {world_size()}: resume "
            "with the same torchrun --nnodes x --nproc-per-node, so every step sees the same batch"
        )
    output = str(checkpoint.parent if origin is None else storage.parent(origin))
    return replace(saved, output=output, epochs=_pick(options.epochs, saved.epochs))
