"""`uniformer train`: train or fine-tune a UniFormer on a folder of videos or a known dataset."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.options import (
    DecoderOption,
    DeviceOption,
    FramesOption,
    HeadDimOption,
    SamplingOption,
    StrideOption,
    WeightsOption,
    WorkersOption,
)
from uniformer_cli.data.datasets import DATASETS
from uniformer_cli.data.loading import DEFAULT_WORKERS
from uniformer_cli.engine.train_options import AMP_CHOICES, AUG_CHOICES, TrainOptions
from uniformer_cli.errors import UniformerError
from uniformer_cli.models.config import FAMILIES
from uniformer_cli.progress import stderr_console

Stages = Annotated[str | None, typer.Option(help="Four comma-separated values, one per stage.", show_default=False)]


def _stages(text: str | None, flag: str, minimum: int = 1) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < minimum:
        raise UniformerError(f"{flag} takes four integers of at least {minimum}, one per stage, e.g. 1,1,2,1")
    return values


def _checkpointing(text: str | None) -> bool | tuple[int, int, int, int]:
    if text is None:
        return False
    return True if text.strip().lower() == "all" else _stages(text, "--grad-checkpointing", minimum=0)  # type: ignore[return-value]


def train(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="DIR/train/<class>/<video> + DIR/val/<class>/<video>, or the root of a --dataset."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help=f"Reader for --data: {', '.join(DATASETS)} (default: folder).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run folder for checkpoints and logs (default: runs/train).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Fine-tune this zoo model or weights file (new head if classes differ)."),
    ] = None,
    weights: WeightsOption = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe", help="Zoo entry whose released recipe, architecture and protocol to use, e.g. s16-sthv2-k400."
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option("--init", help="imagenet (2-D weights inflated) or an image checkpoint FILE (default: imagenet)."),
    ] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="Start from random weights.")] = False,
    arch: Annotated[
        str | None, typer.Option("--arch", help=f"Family for --init/--scratch: {', '.join(FAMILIES)} (default: s).")
    ] = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    size: Annotated[int | None, typer.Option("--size", min=16, help="Crop size (pixels).")] = None,
    depth: Stages = None,
    embed_dim: Stages = None,
    head_dim: HeadDimOption = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (with --resume: extend).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option("--warmup-epochs", min=0.0)] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, help="Peak learning rate (default: recipe's, batch-scaled).")
    ] = None,
    min_lr: Annotated[float | None, typer.Option("--min-lr", min=0.0, help="Warm-up start and cosine end.")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", min=0.0)] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "-b", min=1, help="Videos per process and micro-batch.")
    ] = None,
    accum_steps: Annotated[
        int | None, typer.Option("--accum-steps", min=1, help="Micro-batches accumulated per optimiser step.")
    ] = None,
    clip_grad: Annotated[
        float | None, typer.Option("--clip-grad", min=0.0, help="Gradient norm limit (0: off).")
    ] = None,
    drop_path: Annotated[float | None, typer.Option("--drop-path", min=0.0, max=1.0)] = None,
    label_smoothing: Annotated[float | None, typer.Option("--label-smoothing", min=0.0, max=1.0)] = None,
    aug: Annotated[
        str | None,
        typer.Option("--aug", help=f"{'|'.join(AUG_CHOICES)}: official recipe or jitter+crop+flip (default: auto)."),
    ] = None,
    randaug: Annotated[str | None, typer.Option("--randaug", help="e.g. rand-m7-n4-mstd0.5-inc1, or none.")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="Horizontal flips (default: recipe's).")] = None,
    mixup: Annotated[
        bool | None, typer.Option("--mixup/--no-mixup", help="Mixup/CutMix (default: with --aug official).")
    ] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="Augmented copies per video.")] = None,
    erase_prob: Annotated[float | None, typer.Option("--erase-prob", min=0.0, max=1.0)] = None,
    amp: Annotated[str | None, typer.Option("--amp", help=f"{'|'.join(AMP_CHOICES)} (default: auto).")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    val_every: Annotated[int | None, typer.Option("--val-every", min=1, help="Validate every N epochs.")] = None,
    val_clips: Annotated[int | None, typer.Option("--val-clips", min=1, help="Clips per validation video.")] = None,
    val_crops: Annotated[int | None, typer.Option("--val-crops", min=1, max=3)] = None,
    save_every: Annotated[
        int | None, typer.Option("--save-every", min=0, help="Also save last.pt every N steps (0: epoch ends).")
    ] = None,
    train_split: Annotated[str | None, typer.Option("--train-split")] = None,
    val_split: Annotated[str | None, typer.Option("--val-split")] = None,
    train_list: Annotated[Path | None, typer.Option("--train-list", help="List file of the training split.")] = None,
    val_list: Annotated[Path | None, typer.Option("--val-list", help="List file of the validation split.")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue a run: its folder or a checkpoint (.pt) file.")
    ] = None,
    device: DeviceOption = "auto",
    workers: WorkersOption = DEFAULT_WORKERS,
    decoder: DecoderOption = "auto",
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the training step.")] = False,
    grad_checkpointing: Annotated[
        str | None,
        typer.Option(
            "--grad-checkpointing",
            help="Recompute activations in backward to save memory: 'all' blocks, or blocks per stage, e.g. 0,0,4,0.",
        ),
    ] = None,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Steps per metrics.jsonl line.")] = 10,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop (after saving) at this optimiser step.")
    ] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to TensorBoard if installed.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved configuration and stop.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Train or fine-tune a UniFormer; defaults come from the released recipe of the starting model.

    Validates every epoch, keeps last.pt / best.pt (resumable with --resume) and exports
    best.safetensors, which `uniformer predict --weights` and `uniformer eval --weights` use directly.
    Multi-GPU / multi-node: `torchrun --nproc-per-node 8 -m uniformer_cli.cli.app train ...`.

    Example: `uniformer train --data ./videos --model s16x8-k400 --epochs 30 -o runs/mine`
    """
    if scratch and init is not None:
        raise UniformerError("--scratch and --init exclude each other")
    options = TrainOptions(
        data=data,
        output=output,
        dataset=dataset,
        train_split=train_split,
        val_split=val_split,
        train_list=train_list,
        val_list=val_list,
        model=model,
        weights=weights,
        recipe=recipe,
        init="scratch" if scratch else init,
        arch=arch,
        frames=frames,
        stride=stride,
        sampling=sampling,
        size=size,
        depth=_stages(depth, "--depth"),
        embed_dim=_stages(embed_dim, "--embed-dim"),
        head_dim=head_dim,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        accum_steps=accum_steps,
        clip_grad=clip_grad,
        drop_path=drop_path,
        label_smoothing=label_smoothing,
        aug=aug,
        randaug=randaug,
        flip=flip,
        mixup=mixup,
        repeats=repeats,
        erase_prob=erase_prob,
        amp=amp,
        seed=seed,
        val_every=val_every,
        val_clips=val_clips,
        val_crops=val_crops,
        save_every=save_every,
    )
    checkpoint = engine.train_config.checkpoint_path(resume) if resume is not None else None
    config = (
        engine.train_config.resume_config(checkpoint, options)
        if checkpoint is not None
        else engine.train_config.plan_training(options)
    )
    runtime = engine.train_config.Runtime(
        device=device,
        workers=workers,
        decoder=decoder,
        compile=compile_model,
        grad_checkpointing=_checkpointing(grad_checkpointing),
        log_every=log_every,
        max_steps=max_steps,
        progress=not json_output,
        tensorboard=tensorboard,
    )
    main = engine.distributed.main_process()
    if main and json_output and dry_run:
        _print(config.to_dict())
    elif main and not json_output:
        show_config(config, checkpoint)
    if dry_run:
        return
    result = engine.train.train(config, runtime, resume=checkpoint)
    if main and json_output:
        _print(_result_dict(result))
    elif main:
        show_result(result)
    if result.interrupted_by is not None:  # a stopped job reports it, as the signal itself would have
        raise typer.Exit(128 + getattr(signal, result.interrupted_by, signal.SIGTERM))


def _print(values: dict[str, object]) -> None:
    typer.echo(json.dumps(values, indent=2, default=str))


def _result_dict(result: engine.train.TrainResult) -> dict[str, object]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(result).items()}


def show_config(config: engine.train_config.TrainConfig, resumed_from: Path | None) -> None:
    """The resolved run, on stderr (stdout stays clean for --json)."""
    title = "training run" + (f" (resuming {resumed_from})" if resumed_from else "")
    table = Table(title=escape(title), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    augment = config.augment
    mixing = "mixup/cutmix" if config.mixup_alpha or config.cutmix_alpha else "no mixup"
    rows = [
        ("data", f"{config.data} ({config.dataset}, {len(config.classes)} classes)"),
        ("start", " ".join(part for part in (config.init, config.init_model, config.init_weights) if part)),
        ("model", f"{config.model.arch} depth {list(config.model.depth)} width {list(config.model.embed_dim)}"),
        ("protocol", config.protocol.describe()),
        ("recipe", f"{config.recipe_from} (lr scaled to the batch)"),
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
    console = Console()
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
