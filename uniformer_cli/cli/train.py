"""`uniformer train`: train or fine-tune a UniFormer on a folder of videos or a known dataset.

Each option is spelled once: the command's parameters carry the names of the engine's `TrainOptions`
(what the run is) and `Runtime` (how this process runs it) fields, and both are built from them by name
(`cli.options.fields_from`); tests/test_train.py checks that the parameters and the fields agree.
"""

from __future__ import annotations

import copy
import signal
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.console import Console
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.options import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_EPOCHS,
    MAX_REPEATS,
    MAX_SEED,
    Arch,
    Crops,
    Dataset,
    Decoder,
    DecoderOption,
    Device,
    DeviceOption,
    FramesOption,
    HeadDimOption,
    RevisionOption,
    SamplingOption,
    StrideOption,
    WeightsOption,
    WorkersOption,
    derived_choice,
    fields_from,
)
from uniformer_cli.cli.progress import ProgressBars, stderr_console
from uniformer_cli.cli.text import escape
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.engine.train_options import AMP_CHOICES, AUG_CHOICES, TrainOptions
from uniformer_cli.errors import UniformerError
from uniformer_cli.jsonio import dump_json
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config, describe_v2

DATA, MODEL, OPTIMISATION, SCHEDULE, AUGMENTATION, RUNTIME = (
    "Data",
    "Model",
    "Optimisation",
    "Schedule",
    "Augmentation",
    "Runtime",
)
PANELS = (DATA, MODEL, OPTIMISATION, SCHEDULE, AUGMENTATION, RUNTIME)


Amp = derived_choice("Amp", AMP_CHOICES)  # auto: bf16 on CUDA GPUs that have it, else fp16 + scaler; off on CPU
Aug = derived_choice("Aug", AUG_CHOICES)  # auto: official from 1000 training videos on, else basic


def _option(*names: str, panel: str, help: str, default: str | None = None, **checks: Any) -> Any:
    """A train option in its help panel; `default` says in words what an unset option becomes (its value
    is None: the plan resolves it)."""
    shown = f" \\[default: {default}]" if default is not None else ""
    return typer.Option(*names, rich_help_panel=panel, help=help + shown, show_default=default is None, **checks)


Stages = str | None  # four comma-separated values, one per stage


def _in_panel(panel: str, shared: Any, default: str | None = None) -> Any:
    """A shared option type (`cli.options`) shown in one of train's help panels (with `default` in words)."""
    base, info = get_args(shared)
    info = copy.copy(info)
    info.rich_help_panel = panel
    if default is not None:
        info.help = f"{info.help} \\[default: {default}]"
    return Annotated[base, info]


if TYPE_CHECKING:  # the plain types the commands receive
    AmpOption = str | None
    AugOption = str | None
    Weights = WeightsOption
    Revision = RevisionOption
    HeadDim = HeadDimOption
    Frames = FramesOption
    Stride = StrideOption
    SamplingChoice = SamplingOption
    DeviceChoice = DeviceOption
    Workers = WorkersOption
    DecoderChoice = DecoderOption
else:
    AmpOption = Annotated[
        Amp | None,
        _option(
            "--amp",
            panel=OPTIMISATION,
            help="Mixed precision: auto is bf16 on GPUs that have it, else fp16; off on CPU.",
            default="auto",
            case_sensitive=False,
        ),
    ]
    AugOption = Annotated[
        Aug | None,
        _option(
            "--aug",
            panel=AUGMENTATION,
            help="official recipe (RandAugment, mixup, erasing, repeats) or basic jitter + crop + flip; auto: "
            "official from 1000 training videos on.",
            default="auto",
            case_sensitive=False,
        ),
    ]
    Weights = _in_panel(MODEL, WeightsOption, default="none: start from --model or --init")
    Revision = _in_panel(MODEL, RevisionOption)
    HeadDim, Frames, Stride, SamplingChoice = (
        _in_panel(MODEL, shared) for shared in (HeadDimOption, FramesOption, StrideOption, SamplingOption)
    )
    DeviceChoice, Workers, DecoderChoice = (
        _in_panel(RUNTIME, shared) for shared in (DeviceOption, WorkersOption, DecoderOption)
    )


def _stages(text: str | None, flag: str, minimum: int = 1) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < minimum:
        raise UniformerError(f"{flag} takes four integers of at least {minimum}, one per stage, e.g. 1,1,2,1")
    return values[0], values[1], values[2], values[3]


def _checkpointing(text: str | None) -> bool | tuple[int, ...] | None:
    """`Runtime.grad_checkpointing`: None (the network's default), off, all, or block counts: four (one per
    UniFormer stage) or one (UniFormerV2's backbone)."""
    if text is None:
        return None
    if text.strip().lower() in ("off", "all"):
        return text.strip().lower() == "all"
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if len(counts) not in (1, 4) or min(counts) < 0:
        raise UniformerError(
            "--grad-checkpointing takes off, all, or block counts: four per UniFormer stage (e.g. 0,0,4,0) or one "
            "for UniFormerV2's backbone (e.g. 12)"
        )
    return counts


# Parameters of `train` that are neither `TrainOptions` nor `Runtime` fields.
COMMAND_ONLY = frozenset({"scratch", "resume", "dry_run", "json_output"})


def train(
    # -- data
    data: Annotated[
        str | None,
        _option(
            "--data",
            panel=DATA,
            help="DIR/train/<class>/<video> + DIR/val/<class>/<video>, the root of a --dataset, or a packed"
            " dataset (`uniformer data pack`: its folder, or 'DST/train-{000000..000099}.tar'). A path or a URL"
            " (s3://, gs://, https://, hf://).",
            default="none: required, except with --resume",
        ),
    ] = None,
    dataset: Annotated[
        Dataset | None,
        _option("--dataset", panel=DATA, help="Reader for --data.", default="folder", case_sensitive=False),
    ] = None,
    train_split: Annotated[
        str | None, _option("--train-split", panel=DATA, help="Split that trains.", default="train")
    ] = None,
    val_split: Annotated[
        str | None, _option("--val-split", panel=DATA, help="Split that validates.", default="val")
    ] = None,
    train_list: Annotated[
        str | None,
        _option("--train-list", panel=DATA, help="List file of the training split.", default="the dataset's"),
    ] = None,
    val_list: Annotated[
        str | None,
        _option("--val-list", panel=DATA, help="List file of the validation split.", default="the dataset's"),
    ] = None,
    # -- model
    model: Annotated[
        str | None,
        _option(
            "--model",
            "-m",
            panel=MODEL,
            help="Fine-tune this zoo model, Hub model repository (namespace/name) or weights file (new head if "
            "classes differ).",
            default="start from ImageNet",
        ),
    ] = None,
    weights: Weights = None,
    revision: Revision = None,
    recipe: Annotated[
        str | None,
        _option(
            "--recipe",
            panel=MODEL,
            help="Zoo entry whose released recipe, architecture and protocol to use, e.g. s16-sthv2-k400 or "
            "v2-l14x8-336-k400-frozen.",
            default="the starting model's, else the family's Kinetics-400 entry (UniFormerV2-L: Kinetics-710)",
        ),
    ] = None,
    init: Annotated[
        str | None,
        _option(
            "--init",
            panel=MODEL,
            help="UniFormer: imagenet (2-D weights inflated) or an image checkpoint FILE. UniFormerV2: clip (the "
            "CLIP ViT its backbone is, from the Hub) or a CLIP checkpoint FILE.",
            default="imagenet; clip for UniFormerV2",
        ),
    ] = None,
    scratch: Annotated[
        bool,
        typer.Option(
            "--scratch",
            rich_help_panel=MODEL,
            help="Start from random weights (with a from-scratch learning rate and schedule).",
        ),
    ] = False,
    arch: Annotated[
        Arch | None,
        _option(
            "--arch",
            panel=MODEL,
            help="Family for --init/--scratch: s, b, xxs, xs, or UniFormerV2's v2-b16, v2-l14, v2-l14-336.",
            default="s",
            case_sensitive=False,
        ),
    ] = None,
    depth: Annotated[
        Stages,
        _option("--depth", panel=MODEL, help="Blocks per stage, e.g. 1,1,2,1 (--scratch).", default="the family's"),
    ] = None,
    embed_dim: Annotated[
        Stages,
        _option(
            "--embed-dim", panel=MODEL, help="Width per stage, e.g. 16,32,64,128 (--scratch).", default="the family's"
        ),
    ] = None,
    head_dim: HeadDim = None,
    frames: Frames = None,
    stride: Stride = None,
    sampling: SamplingChoice = None,
    size: Annotated[
        int | None,
        _option("--size", min=16, panel=MODEL, help="Crop size in pixels.", default="the recipe's"),
    ] = None,
    # -- optimisation
    lr: Annotated[
        float | None,
        _option(
            "--lr",
            min=0.0,
            panel=OPTIMISATION,
            help="Peak learning rate.",
            default="the recipe's scaled to the batch; from scratch its own (the plan says which)",
        ),
    ] = None,
    min_lr: Annotated[
        float | None,
        _option("--min-lr", min=0.0, panel=OPTIMISATION, help="Warm-up start and cosine end.", default="1e-6"),
    ] = None,
    weight_decay: Annotated[
        float | None,
        _option("--weight-decay", min=0.0, panel=OPTIMISATION, help="AdamW weight decay.", default="the recipe's"),
    ] = None,
    batch_size: Annotated[
        int | None,
        _option(
            "--batch-size",
            "-b",
            min=1,
            max=MAX_BATCH,
            panel=OPTIMISATION,
            help="Videos per process and micro-batch.",
            default="the recipe's per-GPU share",
        ),
    ] = None,
    accum_steps: Annotated[
        int | None,
        _option(
            "--accum-steps",
            min=1,
            max=MAX_BATCH,
            panel=OPTIMISATION,
            help="Micro-batches accumulated per optimiser step.",
            default="1",
        ),
    ] = None,
    clip_grad: Annotated[
        float | None,
        _option("--clip-grad", min=0.0, panel=OPTIMISATION, help="Gradient norm limit (0: off).", default="20"),
    ] = None,
    drop_path: Annotated[
        float | None,
        _option(
            "--drop-path", min=0.0, max=1.0, panel=OPTIMISATION, help="Stochastic depth rate.", default="the recipe's"
        ),
    ] = None,
    label_smoothing: Annotated[
        float | None,
        _option("--label-smoothing", min=0.0, max=1.0, panel=OPTIMISATION, help="Label smoothing.", default="0.1"),
    ] = None,
    amp: AmpOption = None,
    seed: Annotated[
        int | None,
        _option("--seed", min=0, max=MAX_SEED, panel=OPTIMISATION, help="Seed of every random draw.", default="0"),
    ] = None,
    # -- schedule
    epochs: Annotated[
        int | None,
        _option(
            "--epochs",
            min=1,
            max=MAX_EPOCHS,
            panel=SCHEDULE,
            help="Epochs (with --resume: extend the run).",
            default="the recipe's",
        ),
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        _option(
            "--warmup-epochs",
            min=0.0,
            panel=SCHEDULE,
            help="Linear warm-up before the cosine decay.",
            default="the recipe's share of --epochs",
        ),
    ] = None,
    val_every: Annotated[
        int | None,
        _option("--val-every", min=1, max=MAX_EPOCHS, panel=SCHEDULE, help="Validate every N epochs.", default="1"),
    ] = None,
    val_clips: Annotated[
        int | None,
        _option("--val-clips", min=1, panel=SCHEDULE, help="Clips per validation video.", default="1"),
    ] = None,
    val_crops: Annotated[
        Crops | None,
        _option("--val-crops", panel=SCHEDULE, help="Crops per validation clip: 1 or 3.", default="1"),
    ] = None,
    save_every: Annotated[
        int | None,
        _option(
            "--save-every",
            min=0,
            max=MAX_COUNT,
            panel=SCHEDULE,
            help="Also save last.pt every N steps (0: at epoch ends).",
            default="0",
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            min=1,
            max=MAX_COUNT,
            rich_help_panel=SCHEDULE,
            help="Stop (after saving) at this optimiser step; --resume continues. \\[default: the whole run]",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            rich_help_panel=SCHEDULE,
            help="Continue a run: its folder or a checkpoint (.pt) file, local or at a URL. \\[default: a new run]",
            show_default=False,
        ),
    ] = None,
    # -- augmentation
    aug: AugOption = None,
    randaug: Annotated[
        str | None,
        _option("--randaug", panel=AUGMENTATION, help="e.g. rand-m7-n4-mstd0.5-inc1, or none.", default="the recipe's"),
    ] = None,
    flip: Annotated[
        bool | None,
        _option(
            "--flip/--no-flip",
            panel=AUGMENTATION,
            help="Horizontal flips (never by default on Something-Something).",
            default="the recipe's",
        ),
    ] = None,
    mixup: Annotated[
        bool | None,
        _option("--mixup/--no-mixup", panel=AUGMENTATION, help="Mixup/CutMix.", default="with --aug official"),
    ] = None,
    repeats: Annotated[
        int | None,
        _option(
            "--repeats",
            min=1,
            max=MAX_REPEATS,
            panel=AUGMENTATION,
            help="Augmented copies per video.",
            default="2 official, 1 basic",
        ),
    ] = None,
    erase_prob: Annotated[
        float | None,
        _option(
            "--erase-prob",
            min=0.0,
            max=1.0,
            panel=AUGMENTATION,
            help="Random erasing.",
            default="0.25 official, 0 basic",
        ),
    ] = None,
    # -- runtime
    output: Annotated[
        str | None,
        _option(
            "--output",
            "-o",
            panel=RUNTIME,
            help="Run folder for checkpoints and logs: a local or shared file system, or a URL (s3://...).",
            default="runs/train",
        ),
    ] = None,
    device: DeviceChoice = Device.auto,
    workers: Workers = DEFAULT_WORKERS,
    decoder: DecoderChoice = Decoder.auto,
    compile: Annotated[
        bool, typer.Option("--compile", rich_help_panel=RUNTIME, help="torch.compile the training step.")
    ] = False,
    grad_checkpointing: Annotated[
        str | None,
        _option(
            "--grad-checkpointing",
            panel=RUNTIME,
            help="Recompute activations in backward to save memory: 'all' blocks, 'off', blocks per stage "
            "(e.g. 0,0,4,0), or UniFormerV2's first N backbone blocks.",
            default="off; all for UniFormerV2-L",
        ),
    ] = None,
    log_every: Annotated[
        int,
        typer.Option(
            "--log-every", min=1, max=MAX_COUNT, rich_help_panel=RUNTIME, help="Steps per metrics.jsonl line."
        ),
    ] = 10,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", rich_help_panel=RUNTIME, help="Also log to TensorBoard if installed.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", rich_help_panel=RUNTIME, help="Print the resolved plan and stop.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", rich_help_panel=RUNTIME, help="Print the plan or the result as JSON on stdout.")
    ] = False,
) -> None:
    """Train or fine-tune a UniFormer or UniFormerV2; defaults come from the released recipe of the starting model.

    Validates every epoch, keeps last.pt / best.pt (resumable with --resume) and exports
    best.safetensors, which `uniformer predict --weights` and `uniformer eval --weights` use directly.
    UniFormerV2 starts its backbone from CLIP's ViT (`--arch v2-b16`, downloaded from the Hub).
    Multi-GPU / multi-node: `torchrun --nproc-per-node 8 -m uniformer_cli.cli.app train ...`.

    Examples:
    `uniformer train --data ./videos --model s16x8-k400 --epochs 30 -o runs/mine`
    `uniformer train --data ./videos --arch v2-b16 --epochs 5 -o runs/v2`
    """
    values = dict(locals())  # every option by its parameter name, which is its field name
    if scratch and init is not None:
        raise UniformerError("--scratch and --init exclude each other")
    values.update(
        init="scratch" if scratch else init,
        depth=_stages(depth, "--depth"),
        embed_dim=_stages(embed_dim, "--embed-dim"),
        grad_checkpointing=_checkpointing(grad_checkpointing),
    )
    options = TrainOptions(**fields_from(TrainOptions, values))
    checkpoint = engine.train_config.checkpoint_path(resume) if resume is not None else None
    with engine.train_config.local_checkpoint(checkpoint) if checkpoint is not None else nullcontext() as local:
        config = (
            engine.train_config.resume_config(local, options, origin=checkpoint)
            if local is not None and checkpoint is not None
            else engine.train_config.plan_training(options)
        )
        runtime = engine.train_config.Runtime(**fields_from(engine.train_config.Runtime, values))
        main = engine.distributed.main_process()
        if main and json_output and dry_run:
            _print(config.to_dict())
        elif main and not json_output:
            show_config(config, checkpoint)
        if dry_run:
            return
        with ProgressBars(main and not json_output and stderr_console.is_terminal) as bars:
            result = engine.train.train(config, runtime, resume=local, progress=bars)
    if main and json_output:
        _print(_result_dict(result))
    elif main:
        show_result(result)
    if result.interrupted_by is not None:  # a stopped job reports it, as the signal itself would have
        raise typer.Exit(128 + getattr(signal, result.interrupted_by, signal.SIGTERM))


def _print(values: dict[str, object]) -> None:
    typer.echo(dump_json(values, indent=2, default=str))


def _result_dict(result: engine.train.TrainResult) -> dict[str, object]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(result).items()}


def _model_line(config: ModelConfig | V2Config) -> str:
    if isinstance(config, V2Config):
        return describe_v2(config) + (" (backbone frozen)" if config.frozen else "")
    return f"{config.arch} depth {list(config.depth)} width {list(config.embed_dim)}"


def _start_line(config: engine.train_config.TrainConfig) -> str:
    revision = f"(revision {config.init_revision})" if config.init_revision else None
    return " ".join(part for part in (config.init, config.init_model, config.init_weights, revision) if part)


def show_config(config: engine.train_config.TrainConfig, resumed_from: str | Path | None) -> None:
    """The resolved run, on stderr (stdout stays clean for --json)."""
    title = "training run" + (f" (resuming {resumed_from})" if resumed_from else "")
    table = Table(title=escape(title), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    augment = config.augment
    mixing = "mixup/cutmix" if config.mixup_alpha or config.cutmix_alpha else "no mixup"
    rows = [
        ("data", f"{config.data} ({config.dataset}, {len(config.classes)} classes)"),
        ("start", _start_line(config)),
        ("model", _model_line(config.model)),
        ("protocol", config.protocol.describe()),
        ("recipe", config.recipe_from),
        ("lr", config.lr_rule or f"{config.lr:.3g}"),
        (
            "batch",
            f"{config.batch_size} x {config.accum_steps} accum x {config.world_size} proc = {config.global_batch}",
        ),
        (
            "schedule",
            f"{config.epochs} epochs, warm-up {config.warmup_epochs:g}, lr {config.lr:.3g} -> {config.min_lr:g}",
        ),
        (
            "regularise",
            f"weight decay {config.weight_decay:g}, drop path {config.model.drop_path_rate:g}, "
            f"label smoothing {config.label_smoothing:g}",
        ),
        (
            "augment",
            f"{'resized crop' if augment.resized_crop else 'jitter + crop'}, randaug {augment.randaug or 'off'}, "
            f"flip {'on' if augment.flip else 'off'}, erase {augment.erase_prob:g}, x{augment.repeats}, {mixing}",
        ),
        ("output", config.output),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    stderr_console.print(table)


def show_result(result: engine.train.TrainResult) -> None:
    console = Console(emoji=False)
    best = f"{result.best_top1:.2f}% (epoch {result.best_epoch})" if result.best_top1 is not None else "not validated"
    if result.interrupted_by is not None:
        state = f"stopped by {result.interrupted_by} at step {result.steps} (last.pt saved; continue with --resume)"
    else:
        state = "stopped at --max-steps (continue with --resume)" if result.stopped_early else "finished"
    console.print(f"[bold]{state}[/]: {result.epochs} epochs, {result.steps} steps, best val top-1 {best}")
    console.print(escape(f"last checkpoint {result.last_checkpoint}"), highlight=False)
    if result.exported is not None:
        console.print(
            escape(f"best model {result.exported}: `uniformer predict VIDEO --weights {result.exported}`"),
            highlight=False,
        )
