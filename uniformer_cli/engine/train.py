"""Training and fine-tuning (issue 6, PROTOCOLS.md 7): `train(config, runtime)` runs a planned `TrainConfig`
alone or as one rank of a `torchrun` job (DDP), and `resume=` continues it exactly.

Files in the output folder (written by rank 0):
- `last.pt`, `best.pt`: training checkpoints (model, optimiser, scaler, counters, RNG states, config),
  written atomically and readable with `torch.load(weights_only=True)`; a stop signal abandons the step
  in progress and saves the last completed one (`_Trainer.optimiser_step`, `engine.signals`);
- `best.safetensors`: the best model with its config, labels and test protocol (`predict --weights`);
- `metrics.jsonl`: one JSON object per logged step and per epoch; `config.json`: the run's config;
- `curves.png`: loss, learning rate and validation top-1, drawn at the end (not when a signal stopped the
  run) and on resume (`plot` extra);
- `tensorboard/`: event files with `--tensorboard` when TensorBoard is installed.

A run folder may be a storage URL (`-o s3://bucket/runs/a`): rank 0 then writes these files in a local
working folder and uploads each one whole after it is written (`storage.Mirror`: one put per file, which
object stores make visible at once), the checkpoint after the log; `--resume` downloads the checkpoint and
the log. The store never holds part of a file under its final name.

Every random draw is keyed by the run's seed and a position (epoch, step, sample or micro-batch), so
the same config gives the same run with any worker count, after a resume, and with N processes x 1
micro-batch or 1 process x N accumulated micro-batches (see `GlobalBatchSampler`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.hooks import RemovableHandle

from uniformer_cli import plots
from uniformer_cli.data import storage
from uniformer_cli.data.augment import ClipAugment, MixupCutmix, soft_cross_entropy
from uniformer_cli.data.datasets import Sample, class_key
from uniformer_cli.data.loading import init_decoding_worker
from uniformer_cli.device import autocast_dtype, autocast_to
from uniformer_cli.engine.checkpointing import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from uniformer_cli.engine.distributed import Session, session
from uniformer_cli.engine.scoring import compute_metrics, score_videos
from uniformer_cli.engine.signals import StepAbandoned, StopSignal
from uniformer_cli.engine.train_config import (
    CLIP,
    IMAGENET,
    SCRATCH,
    Runtime,
    TrainConfig,
    config_splits,
    starting_model,
)
from uniformer_cli.engine.train_data import (
    GlobalBatchSampler,
    TrainClips,
    keyed_rng,
    report_unavailable,
    training_order,
)
from uniformer_cli.errors import DatasetError, UniformerError, WriteError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import ensure_writable, remove_stale_temporaries, write_or_fail, write_reason
from uniformer_cli.jsonio import dump_json, load_json
from uniformer_cli.models import create_model
from uniformer_cli.models.layers import StagedModel
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.models.uniformerv2 import UniFormerV2
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import (
    inflate_image_state_dict,
    load_state_dict_strict,
    read_checkpoint,
    save_weights,
)
from uniformer_cli.weights.checkpoint import check_fits, describe_config
from uniformer_cli.weights.clip import load_clip_backbone
from uniformer_cli.weights.hub import clip_weights, image_weights
from uniformer_cli.zoo import find_entry, get_entry

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Optimisation


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases and other 1-D parameters, nor on those the network
    names (`VideoNetwork.no_weight_decay`: UniFormer's class token)."""
    exempt = model.no_weight_decay() if isinstance(model, VideoNetwork) else set()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or name.endswith(".bias") or name in exempt:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass(frozen=True)
class CosineSchedule:
    """Learning rate at a fractional epoch: linear warm-up from `min_lr` to `lr`, then a half cosine
    down to `min_lr` at `epochs` (PySlowFast's cosine policy with COSINE_AFTER_WARMUP, PROTOCOLS.md 7.3)."""

    lr: float
    min_lr: float
    warmup_epochs: float
    epochs: int

    def __call__(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return self.min_lr + (self.lr - self.min_lr) * epoch / self.warmup_epochs
        progress = min((epoch - self.warmup_epochs) / max(self.epochs - self.warmup_epochs, 1e-12), 1.0)
        return self.min_lr + (self.lr - self.min_lr) * (math.cos(math.pi * progress) + 1.0) * 0.5


FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def amp_dtype(amp: str, device: torch.device, light: bool) -> torch.dtype | None:
    """Autocast dtype: `auto` is bf16 on CUDA GPUs that have it, else fp16 with a gradient scaler
    (except for the light models, whose fp16 training overflowed, MODEL.md 11); off elsewhere."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return autocast_dtype(device, fp16_safe=not light)
    if amp == "fp16" and device.type != "cuda":
        raise UniformerError("--amp fp16 needs a CUDA GPU (its gradient scaler is CUDA-only): use bf16 or off")
    return torch.bfloat16 if amp == "bf16" else torch.float16


class TrainForward(nn.Module):
    """The model's training forward as `forward`, so that DDP sees and synchronises it: light models
    return `(logits, token_logits)` for the two-head loss, S/B models their logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        forward_train = getattr(self.model, "forward_train", None)
        return forward_train(clips) if forward_train is not None else self.model(clips)


def training_loss(outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Soft-target cross entropy; light models average their two heads' losses (PROTOCOLS.md 7.2)."""
    if isinstance(outputs, tuple):
        return 0.5 * soft_cross_entropy(outputs[0], targets) + 0.5 * soft_cross_entropy(outputs[1], targets)
    return soft_cross_entropy(outputs, targets)


# ---------------------------------------------------------------------------------------------------
# Initial weights


def _same_classes(labels: list[str] | None, classes: tuple[str, ...]) -> bool:
    return labels is not None and [class_key(name) for name in labels] == [class_key(name) for name in classes]


def build_model(config: TrainConfig, *, initialise: bool = True) -> VideoNetwork:
    """The network of `config`, with its starting weights unless `initialise` is off (resuming).

    ImageNet image weights are inflated to 3-D (MODEL.md 8); a UniFormerV2 starts its backbone from CLIP's
    (`weights.clip`); a fine-tuned checkpoint keeps its head when its classes are the run's and gets a new
    head otherwise (PROTOCOLS.md 7.5). A frozen UniFormerV2 trains its decoder and head only.
    """
    torch.manual_seed(config.seed)  # random initial weights (scratch, new heads) belong to the run's seed
    model = create_model(config.model)
    if isinstance(model, UniFormerV2) and model.config.frozen:
        model.freeze_backbone()
    if not initialise or config.init == SCRATCH:
        return model
    if config.init == CLIP:
        assert isinstance(model, UniFormerV2)
        family = find_entry(config.recipe_from).family
        load_clip_backbone(model, Path(config.init_model) if config.init_model else clip_weights(family))
        return model
    if config.init == IMAGENET:
        source = Path(config.init_model) if config.init_model else image_weights(get_entry(config.recipe_from).family)
        state = read_checkpoint(source).state_dict
    else:
        assert config.init_model is not None
        loaded = starting_model(config.init_model, config.init_weights, config.init_revision)
        source, state = loaded.path, loaded.model.state_dict()
        if not _same_classes(loaded.labels, config.classes):
            state = {key: value for key, value in state.items() if not key.startswith(model.head_prefixes)}
    load_state_dict_strict(model, inflate_image_state_dict(state, model), str(source))
    return model


# ---------------------------------------------------------------------------------------------------
# Logging


@dataclass
class TrainResult:
    output: Path | str  # a local folder, or a URL
    epochs: int  # completed
    steps: int
    best_top1: float | None
    best_epoch: int | None
    last_checkpoint: Path | str
    exported: Path | str | None
    history: list[dict[str, Any]] = field(default_factory=list)  # the epoch records
    stopped_early: bool = False  # --max-steps or a stop signal ended the run before its last epoch
    interrupted_by: str | None = None  # the signal that stopped it (SIGINT, SIGTERM), after saving last.pt


def _record(line: str) -> dict[str, Any] | None:
    """A `metrics.jsonl` line's record; None for a line that is not one (cut short by a killed run)."""
    try:
        record = load_json(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and type(record.get("step")) is int else None


def _step(line: str) -> float:
    """The step of a `metrics.jsonl` line (infinite for a line that is not a record: never kept)."""
    record = _record(line)
    return math.inf if record is None else record["step"]


class MetricsLog:
    """`metrics.jsonl` (rank 0 only), a line per record; a resumed run first drops the lines written
    after its checkpoint, so the file reads like one uninterrupted run. Optionally TensorBoard too."""

    def __init__(self, path: Path, enabled: bool, resumed_step: int | None, tensorboard: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.writer: Any = None
        if not enabled:
            return
        kept = []
        if resumed_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if _step(line) <= resumed_step]
        text = "".join(f"{line}\n" for line in kept)
        write_or_fail(path, lambda temporary: temporary.write_text(text), "training log")
        if kept:
            self.draw_curves()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("TensorBoard is not installed (pip install tensorboard): JSON log only")
            else:
                # TensorBoard hides the events of steps >= purge_step that the interrupted run wrote.
                first_step = None if resumed_step is None else resumed_step + 1
                self.writer = SummaryWriter(str(path.parent / "tensorboard"), purge_step=first_step)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(dump_json(record) + "\n")
        except OSError as error:
            raise WriteError(f"cannot append to {self.path}: {write_reason(error)}") from None
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])
            self.writer.flush()  # on disk with the JSON line: a killed run loses neither

    def draw_curves(self) -> None:
        """`curves.png` beside the log (loss, learning rate, validation top-1), when matplotlib is installed."""
        if not self.enabled:
            return
        records = [record for line in self.path.read_text(encoding="utf-8").splitlines() if (record := _record(line))]
        try:
            plots.training_curves(self.path.parent / "curves.png", records)
        except UniformerError as error:  # no matplotlib, or an unwritable folder: the run itself is fine
            logger.warning("curves.png not written: %s", error)

    def close(self, draw: bool = True) -> None:
        """Draw the curves (unless not `draw`: a run stopped by a signal leaves them to its resumption, which
        draws them first, and exits a second sooner) and close TensorBoard's writer."""
        if draw:
            self.draw_curves()
        if self.writer is not None:
            self.writer.close()


def _write_problem(path: Path) -> str | None:
    """Why `path` could not be written (`ensure_writable`), or None."""
    try:
        ensure_writable(path, "training checkpoint")
    except WriteError as error:
        return str(error)
    return None


# ---------------------------------------------------------------------------------------------------
# The loop


def _seed_micro_step(seed: int, epoch: int, step: int, chunk: int) -> None:
    """Seed torch's global generator (drop path) from the micro-batch's place in the run rather than
    a stream: resumed or differently parallelised runs draw the same masks for the same samples."""
    torch.manual_seed(int(keyed_rng(seed, epoch, step, chunk).integers(2**62)))


def _steps(loader: DataLoader, accumulation: int) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The loader's micro-batches grouped per optimiser step."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == accumulation:
            yield group
            group = []


def train(
    config: TrainConfig, runtime: Runtime, *, resume: Path | None = None, progress: ProgressCallback | None = None
) -> TrainResult:
    """Run `config`, or continue it from the checkpoint `resume`. Under torchrun every rank calls it;
    the result (and every file) comes from rank 0, which reports each step of an epoch to `progress` (with
    the running loss, learning rate and clips per second)."""
    with session(runtime.device) as processes:
        trainer = _Trainer(config, runtime, processes, resume, progress if processes.main else None)
        try:
            return trainer.run()
        finally:
            trainer.release()


class _Trainer:
    """One run's state; `run()` is the epoch loop."""

    def __init__(
        self,
        config: TrainConfig,
        runtime: Runtime,
        processes: Session,
        resume: Path | None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config, self.runtime, self.processes = config, runtime, processes
        self.progress = progress
        # A run folder at a URL: rank 0 writes in a local working folder and uploads each finished file.
        self.mirror = storage.Mirror(config.output) if storage.is_url(config.output) and processes.main else None
        self.output = self.mirror.folder if self.mirror is not None else Path(config.output)
        if resume is None and processes.from_main(processes.main and storage.exists(self.home("last.pt"))):
            raise UniformerError(f"{config.output} already holds a run: continue it with --resume, or pick another -o")
        # The run folder must take files before hours are spent on the first checkpoint.
        unwritable = processes.from_main(_write_problem(self.output / "last.pt") if processes.main else None)
        if unwritable is not None:
            raise WriteError(unwritable)
        if processes.main:  # what a killed run of this folder left half-written
            remove_stale_temporaries(self.output)
        device = processes.device
        state = load_checkpoint(resume) if resume is not None else None
        self.train_split, self.val_split = config_splits(config)

        if state is not None:  # the saved weights must fit the saved config before memory is taken for it
            with torch.device("meta"):
                planned = create_model(config.model)
            check_fits(planned.state_dict(), state["model"], str(resume), describe_config(config.model))
        self.model = build_model(config, initialise=state is None).to(device)
        if state is not None:
            load_state_dict_strict(self.model, state["model"], str(resume))
        if isinstance(self.model, StagedModel) and self.model.runs_channels_last(device):
            self.model.match_gradient_layout()
        checkpointing = runtime.grad_checkpointing
        if checkpointing is None:  # the network's default (UniFormerV2-L: every block)
            checkpointing = self.model.checkpoints_by_default
        if checkpointing:
            blocks = checkpointing if isinstance(checkpointing, tuple) else None
            if blocks is not None and len(blocks) != len(self.model.checkpoint_groups):
                groups = " and ".join(self.model.checkpoint_groups)
                raise UniformerError(
                    f"--grad-checkpointing takes {len(self.model.checkpoint_groups)} block count(s) for this "
                    f"network ({groups}), or 'all'; got {','.join(map(str, blocks))}"
                )
            self.model.set_grad_checkpointing(True, blocks)
        forward: nn.Module = TrainForward(self.model)
        if processes.world_size > 1:
            forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
        self.ddp = forward if isinstance(forward, DistributedDataParallel) else None
        # The buffers a training forward updates in place (BatchNorm statistics): an abandoned step puts
        # them back.
        saved = set(self.model.state_dict())
        self.statistics = [buffer for name, buffer in self.model.named_buffers() if name in saved]
        self.forward = torch.compile(forward) if runtime.compile else forward
        self.dtype = amp_dtype(config.amp, device, config.model.arch == "light")
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, config.weight_decay),
            lr=config.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            # One fused kernel per step instead of ~10 passes over every parameter (CPU: 3.6x faster
            # optimiser step for S, busy 2-core EPYC); PyTorch has it for CPU and CUDA.
            fused=device.type in FUSED_ADAMW_DEVICES or None,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.schedule = CosineSchedule(config.lr, config.min_lr, config.warmup_epochs, config.epochs)
        self.mixer = MixupCutmix(
            len(config.classes), config.mixup_alpha, config.cutmix_alpha, smoothing=config.label_smoothing
        )
        self.sampler = GlobalBatchSampler(
            len(self.train_split.samples),
            config.batch_size,
            accumulation=config.accum_steps,
            world_size=processes.world_size,
            rank=processes.rank,
            seed=config.seed,
            order=training_order(self.train_split),
        )
        self.loader = DataLoader(
            TrainClips(
                self.train_split.samples, config.sampling, ClipAugment(config.augment), config.seed, runtime.decoder
            ),
            batch_sampler=self.sampler,
            num_workers=runtime.workers,
            worker_init_fn=init_decoding_worker if runtime.workers else None,
            pin_memory=device.type == "cuda",
            persistent_workers=runtime.workers > 0,
            generator=torch.Generator().manual_seed(config.seed),  # leaves the global generator alone
        )
        self.step = 0
        self.best_top1: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.epoch_losses: list[float] = []  # the step losses so far in the current epoch
        self.epoch_ended = True  # False: resumed after an epoch's last step, before its end (validation)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            self.step, self.best_top1, self.best_epoch = state["step"], state["best_top1"], state["best_epoch"]
            self.history, self.epoch_losses = state["history"], state["epoch_losses"]
            self.epoch_ended = state.get("epoch_ended", True) is not False
            set_rng_state(state["rng"])
        if processes.main:
            self.output.mkdir(parents=True, exist_ok=True)
            text = dump_json(config.to_dict(), indent=2) + "\n"
            write_or_fail(self.output / "config.json", lambda temporary: temporary.write_text(text), "run config")
            if self.mirror is not None and state is not None:  # the log a resumed run continues
                self.mirror.pull("metrics.jsonl")
            self.upload()  # the store takes files (or says why not) before the first step
        # Rank 0 checks the lists (one pass over the file system), every rank stops if it must.
        unreadable = None
        if processes.main:
            try:
                report_unavailable({"train": self.train_split, "val": self.val_split}, self.output)
            except DatasetError as error:
                unreadable = str(error)
        unreadable = processes.from_main(unreadable)
        if unreadable is not None:
            raise DatasetError(unreadable)
        resumed_step = self.step if state is not None else None
        self.log = MetricsLog(self.output / "metrics.jsonl", processes.main, resumed_step, runtime.tensorboard)

    def release(self) -> None:
        """Let go of the DDP wrapper and the loader before the process group goes away: a DDP reducer
        that outlives its group (it sits in reference cycles until a garbage collection) can abort
        the process at exit. The local working folder of a run at a URL is removed."""
        self.processes.barrier()
        del self.forward, self.ddp, self.loader
        gc.collect()
        if self.mirror is not None:
            self.mirror.close()

    def home(self, name: str) -> Path | str:
        """Where the run's file `name` lives: in the run folder, or at the run's URL."""
        return storage.join(self.config.output, name) if self.mirror is not None else self.output / name

    def upload(self) -> None:
        """A run at a URL: upload every file written since the last upload, whole, one put per file, the
        checkpoint last (the log and the best model it follows are already there when it appears)."""
        if self.mirror is not None:
            self.mirror.push(last=("last.pt",))

    # -- checkpoints ---------------------------------------------------------------------------------

    def state(self, epoch: float, epoch_ended: bool = True) -> dict[str, Any]:
        """The checkpoint; `epoch_ended` is False after an epoch's last step whose end (validation, the
        epoch record) was not done yet."""
        return {
            "config": self.config.to_dict(),
            "model": {key: value.detach().cpu() for key, value in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "epoch": epoch,
            "step": self.step,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "epoch_losses": self.epoch_losses,
            "epoch_ended": epoch_ended,
            "rng": rng_state(),
        }

    def export(self, path: Path) -> Path:
        """The model as safetensors with config, class names and test protocol (`predict --weights`)."""
        protocol = self.config.protocol.as_dict()
        return save_weights(path, self.model, self.config.model, labels=list(self.config.classes), protocol=protocol)

    # -- steps ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def stop_checks(self, stop: StopSignal) -> Iterator[None]:
        """Hooks through which a stop request abandons a step within moments: before every module's
        forward and as each parameter's gradient lands in backward (`StopSignal.check`). Not under
        --compile, whose graphs would trace them: there the votes between stretches stop the step."""
        handles: list[RemovableHandle] = []
        if not self.runtime.compile:
            handles = [module.register_forward_pre_hook(lambda *_: stop.check()) for module in self.model.modules()]
            for parameter in self.model.parameters():
                if parameter.requires_grad:
                    handles.append(parameter.register_post_accumulate_grad_hook(lambda _: stop.check()))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def restore_point(self) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """What a step changes before its update (BatchNorm statistics, random generators), as the last
        completed step left it."""
        with torch.no_grad():
            return [buffer.clone() for buffer in self.statistics], rng_state()

    def abandon(self, restore: tuple[list[torch.Tensor], dict[str, Any]]) -> None:
        """Drop the step in progress: its gradients, and what its forward passes changed."""
        self.optimizer.zero_grad(set_to_none=True)
        buffers, rng = restore
        with torch.no_grad():
            for buffer, kept in zip(self.statistics, buffers, strict=True):
                buffer.copy_(kept)
        set_rng_state(rng)

    def optimiser_step(
        self, epoch: int, batches: Iterator[list[tuple[torch.Tensor, torch.Tensor]]], lr: float, stop: StopSignal
    ) -> float | None:
        """The next group of micro-batches from `batches`: forward/backward of each, then one clipped
        optimiser update. Returns the step's loss (mean over micro-batches and processes, so every rank
        sees the same value), or None when a stop request abandoned the step.

        Until the update begins, a stop request abandons the step: the loader wait, each forward pass
        and each backward pass that no collective spans (all but DDP's gradient-syncing one) end early on
        the rank that received it, every rank votes after each of them, and on a stop vote all ranks drop
        the step (`abandon`), so that the model, optimiser, scaler and generators are those of the last
        completed step, as an uninterrupted run saved them."""
        config, device, processes = self.config, self.processes.device, self.processes
        restore = self.restore_point()
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        with contextlib.suppress(StepAbandoned), stop.abandonable(at_once=True):
            group = next(batches)
        total = 0.0
        for micro_step in range(config.accum_steps):
            if stop.agreed(processes):
                self.abandon(restore)
                return None
            clips, labels = group[micro_step]
            chunk = self.sampler.chunk(micro_step)
            clips = clips.flatten(0, 1).to(device, non_blocking=True)  # [B * repeats, 3, T, S, S]
            labels = labels.repeat_interleave(config.augment.repeats).to(device)
            clips, targets = self.mixer(clips, labels, keyed_rng(config.seed, epoch, self.step, chunk, 1))
            _seed_micro_step(config.seed, epoch, self.step, chunk)
            # Gradients are all-reduced once per step, in the last micro-batch's backward, which every
            # rank must therefore finish.
            synced = micro_step == config.accum_steps - 1
            loss: torch.Tensor | None = None
            with nullcontext() if synced or self.ddp is None else self.ddp.no_sync():
                with contextlib.suppress(StepAbandoned), stop.abandonable(), autocast_to(device, self.dtype):
                    loss = training_loss(self.forward(clips), targets)
                if stop.agreed(processes) or loss is None:
                    self.abandon(restore)
                    return None
                leave = nullcontext() if synced and self.ddp is not None else stop.abandonable()
                with contextlib.suppress(StepAbandoned), leave:
                    self.scaler.scale(loss / config.accum_steps).backward()
            total += loss.item()
        if stop.agreed(processes):
            self.abandon(restore)
            return None
        step_loss = processes.mean(total / config.accum_steps)
        if not math.isfinite(step_loss):  # the same verdict on every rank, so none is left waiting
            raise UniformerError(
                f"the training loss became {step_loss} at step {self.step}: lower --lr, or try --amp off"
            )
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        if config.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return step_loss

    def run(self) -> TrainResult:
        config, runtime, processes = self.config, self.runtime, self.processes
        steps_per_epoch = self.sampler.steps_per_epoch
        clips_per_step = config.global_batch * config.augment.repeats
        stopping = False
        with StopSignal(announce=processes.main) as stop_signal, self.stop_checks(stop_signal):
            # A run stopped while validating resumes with that validation (its epoch's end).
            first = (self.step - (not self.epoch_ended)) // steps_per_epoch
            for epoch in range(first, config.epochs):
                done_in_epoch = self.step - epoch * steps_per_epoch
                self.sampler.set_position(epoch, done_in_epoch)
                task = f"epoch {epoch + 1}/{config.epochs}"
                detail: dict[str, str] = {}
                notify(self.progress, Progress(task, done_in_epoch, steps_per_epoch, sub=True))
                self.model.train()
                window: list[float] = []
                window_start = time.perf_counter()
                batches = _steps(self.loader, config.accum_steps)
                while self.step < (epoch + 1) * steps_per_epoch:
                    lr = self.schedule(self.step / steps_per_epoch)
                    loss = self.optimiser_step(epoch, batches, lr, stop_signal)
                    if loss is None:  # abandoned for a stop request: the last completed step is saved below
                        stopping = True
                        break
                    window.append(loss)
                    self.epoch_losses.append(loss)
                    if self.step % runtime.log_every == 0 or self.step % steps_per_epoch == 0:
                        mean = sum(window) / len(window)
                        speed = clips_per_step * len(window) / max(time.perf_counter() - window_start, 1e-9)
                        record = {"event": "step", "epoch": epoch + 1, "step": self.step, "loss": mean, "lr": lr}
                        self.log.write({**record, "clips_per_s": speed})
                        detail = {"loss": f"{mean:.4f}", "lr": f"{lr:.2e}", "clips/s": f"{speed:.1f}"}
                        window, window_start = [], time.perf_counter()
                    done = self.step - epoch * steps_per_epoch
                    notify(self.progress, Progress(task, done, steps_per_epoch, detail, sub=True))
                    reached_max = runtime.max_steps is not None and self.step >= runtime.max_steps
                    stopping = stop_signal.agreed(processes) or reached_max
                    if stopping:
                        break
                    # Mid-epoch saves only: the epoch's end saves after validating.
                    periodic = config.save_every > 0 and self.step % config.save_every == 0
                    if processes.main and periodic and self.step % steps_per_epoch:
                        save_checkpoint(self.state(self.step / steps_per_epoch), self.output / "last.pt")
                        self.upload()
                if self.step < (epoch + 1) * steps_per_epoch:  # stopped inside the epoch
                    # Saved unless it stopped before the epoch's first step, whose start (the previous
                    # epoch's end) is saved already; a run stopped before its first step saves step 0.
                    if processes.main and (self.step > epoch * steps_per_epoch or self.step == 0):
                        save_checkpoint(self.state(self.step / steps_per_epoch), self.output / "last.pt")
                        self.upload()
                    break
                if not self.end_epoch(epoch, sum(self.epoch_losses) / len(self.epoch_losses), stop_signal):
                    # Stopped while validating: the epoch's last step is saved with its end still to do.
                    if processes.main:
                        save_checkpoint(self.state(self.step / steps_per_epoch, False), self.output / "last.pt")
                        self.upload()
                    stopping = True
                    break
                self.epoch_losses = []
                self.epoch_ended = True
                if stopping:
                    break
        self.log.close(draw=not stop_signal.stopped)
        self.upload()  # the curves drawn at the end
        exported = self.home("best.safetensors")
        return TrainResult(
            output=self.config.output if self.mirror is not None else self.output,
            epochs=self.step // steps_per_epoch,
            steps=self.step,
            best_top1=self.best_top1,
            best_epoch=self.best_epoch,
            last_checkpoint=self.home("last.pt"),
            exported=exported if processes.main and storage.exists(exported) else None,
            history=self.history,
            stopped_early=self.step < config.epochs * steps_per_epoch,
            interrupted_by=stop_signal.name if stop_signal.stopped else None,
        )

    def end_epoch(self, epoch: int, train_loss: float, stop: StopSignal) -> bool:
        """Validate (every `val_every` epochs and after the last), log, save `last` and, when the
        validation top-1 improved, `best` and its safetensors export. False, with nothing logged or
        saved, when a stop request abandoned the validation."""
        config, processes = self.config, self.processes
        record: dict[str, Any] = {
            "event": "epoch",
            "epoch": epoch + 1,
            "step": self.step,
            "train_loss": train_loss,
        }
        improved = False
        if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
            protocol = config.protocol.with_views(config.val_clips, config.val_crops)
            batch = max(protocol.views, config.batch_size * config.augment.repeats)
            metrics = validate(self.model, self.val_split.samples, protocol, processes, self.runtime, batch, stop)
            if metrics is None:
                return False
            record.update(metrics)
            improved = self.best_top1 is None or metrics["val_top1"] > self.best_top1
            if improved:
                self.best_top1, self.best_epoch = metrics["val_top1"], epoch + 1
            record["best_top1"] = self.best_top1
        self.history.append(record)
        self.log.write(record)
        if processes.main:
            state = self.state(float(epoch + 1))
            save_checkpoint(state, self.output / "last.pt")
            if improved:
                save_checkpoint(state, self.output / "best.pt")
                self.export(self.output / "best.safetensors")
            self.upload()
            shown = ", ".join(_shown(key, value) for key, value in record.items() if isinstance(value, float))
            logger.info(f"epoch {epoch + 1}/{config.epochs}: {shown}")
        return True


PERCENTAGES = frozenset({"val_top1", "val_top5", "val_mean_class", "best_top1"})


def _shown(key: str, value: float) -> str:
    """A logged number as the epoch line shows it: accuracies in percent, with their unit."""
    return f"{key} {value:.2f}%" if key in PERCENTAGES else f"{key} {value:.4g}"


# ---------------------------------------------------------------------------------------------------
# Validation


def validate(
    model: nn.Module,
    samples: list[Sample],
    protocol: ViewProtocol,
    processes: Session,
    runtime: Runtime,
    batch_size: int,
    stop: StopSignal,
) -> dict[str, float] | None:
    """Top-1/top-5/mean-class accuracy of `samples` with the eval engine's scoring (the protocol's views,
    summed logits), each rank scoring its share of the videos; every rank gets the numbers. None when a
    stop request abandoned the scoring (on any rank: they vote before gathering)."""
    # Each rank's last forward updated its own BatchNorm statistics: validate (and save) rank 0's.
    processes.broadcast_buffers(model)
    model.eval()
    scored: dict[int, Any] = {}
    try:
        with contextlib.suppress(StepAbandoned), stop.abandonable(at_once=True):
            scored = dict(
                score_videos(
                    model,
                    samples,
                    processes.share(range(len(samples))),
                    [str(sample.path) for sample in samples],
                    protocol,
                    processes.device,
                    batch_size=batch_size,
                    workers=runtime.workers,
                    decoder=runtime.decoder,
                )
            )
    finally:
        model.train()
    if stop.agreed(processes):
        return None
    results = processes.gather(scored)
    metrics = processes.from_main(compute_metrics(list(results.values())) if processes.main else None)
    return {"val_top1": metrics.top1, "val_top5": metrics.top5, "val_mean_class": metrics.mean_class}
