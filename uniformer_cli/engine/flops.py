"""What a network costs, UniFormer or UniFormerV2: parameters, multiply-accumulates per view (the papers'
"GFLOPs"), their split over the network's parts (`VideoNetwork.cost_groups`: a UniFormer's patch embeddings
and stages, a UniFormerV2's patch embedding, backbone blocks, position convs and decoder), and measured
latency, throughput and peak memory.

Counting runs the real model code on meta tensors (shapes only, no arithmetic, no memory) under PyTorch's
`FlopCounterMode`, with attention switched to the explicit matmul path so that the counter sees both
attention products (it does not count the fused CPU attention kernel).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, cast

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from uniformer_cli.device import autocast_dtype, inference_autocast, select_device, synchronize
from uniformer_cli.errors import UniformerError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.models import ModelConfig, create_model, exact_attention, fp16_safe
from uniformer_cli.models.config_v2 import ARCHITECTURES, V2Config
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.models.layers import StagedModel
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.protocol import ViewProtocol, check_clip_size
from uniformer_cli.zoo import ZOO, AnyEntry, find_entry
from uniformer_cli.zoo.v2 import V2_ZOO, V2ZooEntry

# The papers' main clip length: what `--arch` costs unless `--frames` says otherwise (UniFormer: 16;
# UniFormerV2, whose every released backbone was trained at 8 first: 8).
DEFAULT_FRAMES = 16
V2_DEFAULT_FRAMES = 8

# A UniFormer's cost groups (`StagedModel.cost_groups`) and "head" for everything outside them (final
# BatchNorm and classifier; for the light models also the class-token upsampling).
STAGE_GROUPS = (*StagedModel.cost_groups, "head")


@dataclass(frozen=True)
class Workload:
    """A network, the clip shape it sees and how many views a test runs: what one cost row describes."""

    name: str
    family: str
    config: ModelConfig | V2Config
    frames: int
    size: int
    clips: int
    crops: int
    paper_gflops_per_view: float | None = None
    paper_gflops: float | None = None
    paper_step: float | None = None  # the published figure's rounding (UniFormerV2's: 0.1 TFLOPs); None: exact

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass(frozen=True)
class MacCount:
    """Parameters and multiply-accumulates of one view, in total and per cost group (the network's
    `cost_groups`, then "head")."""

    params: int
    macs: int
    stage_macs: dict[str, int]


@dataclass(frozen=True)
class BenchSettings:
    device: str = "auto"
    batch_size: int = 1
    warmup: int = 2
    runs: int = 5
    precision: str = "auto"  # see `optimize_for_inference`


@dataclass(frozen=True)
class BenchResult:
    """Measured forward passes of a randomly initialised model on random clips (inference mode)."""

    device: str
    precision: str  # "fp32", "bf16", or the autocast dtype on CUDA / MPS
    batch_size: int
    warmup: int
    runs: int
    latency_ms: float  # median time of one forward pass of `batch_size` clips
    clips_per_s: float
    peak_memory_mb: float | None  # weights + activations allocated by torch; None where not measurable


@dataclass(frozen=True)
class CostRow:
    name: str
    family: str
    frames: int
    size: int
    clips: int
    crops: int
    params: int
    macs_per_view: int
    paper_gflops_per_view: float | None
    paper_gflops: float | None
    stages: dict[str, float] | None = None  # GFLOPs per view by cost group
    bench: BenchResult | None = None
    paper_step: float | None = None  # `Workload.paper_step`

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops_per_view(self) -> float:
        return self.macs_per_view / 1e9

    @property
    def gflops(self) -> float:
        return self.gflops_per_view * self.views

    @property
    def diff_pct(self) -> float | None:
        """Relative difference of the per-view count to the published per-view figure, in percent; 0 where
        the figure is rounded (`paper_step`) and the count rounds to it."""
        if not self.paper_gflops_per_view:
            return None
        if self.paper_step and abs(self.gflops_per_view - self.paper_gflops_per_view) <= self.paper_step / 2:
            return 0.0
        return (self.gflops_per_view / self.paper_gflops_per_view - 1) * 100

    def as_dict(self) -> dict[str, object]:
        """The `flops` record (docs/OUTPUT.md): the scalar fields, then `stages` and `bench` objects when
        they were computed. Measured figures are `gflops*`, the paper's `paper_gflops*`."""
        row: dict[str, object] = {
            "model": self.name,
            "arch": self.family,
            "frames": self.frames,
            "size": self.size,
            "clips": self.clips,
            "crops": self.crops,
            "views": self.views,
            "params": self.params,
            "params_m": self.params_m,
            "macs_per_view": self.macs_per_view,
            "gflops_per_view": self.gflops_per_view,
            "gflops": self.gflops,
            "paper_gflops_per_view": self.paper_gflops_per_view,
            "paper_gflops": self.paper_gflops,
            "diff_pct": self.diff_pct,
        }
        if self.stages is not None:
            row["stages"] = dict(self.stages)
        if self.bench is not None:
            row["bench"] = asdict(self.bench)
        return row


def select_workloads(
    model: str | None = None,
    arch: str | None = None,
    frames: int | None = None,
    size: int | None = None,
    clips: int | None = None,
    crops: int | None = None,
) -> list[Workload]:
    """The rows to cost.

    - `arch` (s, b, xxs, xs, v2-b16, v2-l14, v2-l14-336): that architecture (400 classes) at `frames` x
      `size` with `clips` x `crops` views; defaults: 16 frames (UniFormerV2: 8), the largest size the family
      was released at for that length, 1x1 views.
    - `model`: that zoo entry, at its own protocol unless `frames`, `size`, `clips`, `crops` override it.
    - neither: every zoo entry of both families released at `frames` / `size` (all entries when both are
      None); when no entry matches, each family at that clip shape instead (at its released sizes unless
      `size` is given).
    The published figures are kept only where the row is the released protocol's (per view: same clip shape).
    """
    if model is not None and arch is not None:
        raise UniformerError("give either --model or --arch, not both")
    if arch is not None:
        return [_architecture_workload(arch, frames, size, clips, crops)]
    if model is not None:
        return [_entry_workload(find_entry(model), frames, size, clips, crops)]
    entries = [
        entry
        for entry in _all_entries()
        if (frames is None or entry.protocol.frames == frames) and (size is None or entry.protocol.size == size)
    ]
    if entries:
        return [_entry_workload(entry, None, None, clips, crops) for entry in entries]
    shapes = dict.fromkeys((entry.family, size or entry.protocol.size) for entry in _all_entries())
    return [_architecture_workload(family, frames, family_size, clips, crops) for family, family_size in shapes]


def _all_entries() -> list[AnyEntry]:
    return [*ZOO.values(), *V2_ZOO.values()]


def check_shape(frames: int, size: int, config: ModelConfig | V2Config, name: str) -> None:
    """A clip shape within the bounds every test protocol keeps (`ViewProtocol`: `--bench` allocates real
    clips of it), and one the network takes (UniFormerV2: its resolution)."""
    ViewProtocol(frames=frames, stride=1, size=size)
    check_clip_size(config.resolution if isinstance(config, V2Config) else None, size, name)


def _entry_workload(
    entry: AnyEntry, frames: int | None, size: int | None, clips: int | None, crops: int | None
) -> Workload:
    released = entry.protocol
    frames, size = frames or released.frames, size or released.size
    clips, crops = clips or released.clips, crops or released.crops
    check_shape(frames, size, entry.config, entry.name)
    released_shape = (frames, size) == (released.frames, released.size)
    released_views = (clips, crops) == (released.clips, released.crops)
    return Workload(
        name=entry.name,
        family=entry.family,
        config=entry.config,
        frames=frames,
        size=size,
        clips=clips,
        crops=crops,
        paper_gflops_per_view=entry.gflops_per_view if released_shape else None,
        paper_gflops=entry.gflops if released_shape and released_views else None,
        paper_step=entry.gflops_step if isinstance(entry, V2ZooEntry) else None,
    )


def _architecture_workload(
    family: str, frames: int | None, size: int | None, clips: int | None, crops: int | None
) -> Workload:
    family = family.lower()
    if family not in ARCHITECTURES:
        raise UniformerError(f"unknown architecture {family!r} (choose one of {', '.join(ARCHITECTURES)})")
    config = ARCHITECTURES[family]
    released = [entry for entry in _all_entries() if entry.family == family]
    frames = frames or (V2_DEFAULT_FRAMES if isinstance(config, V2Config) else DEFAULT_FRAMES)
    shapes = [(e.protocol.frames, e.protocol.size) for e in released]
    size = size or max([side for length, side in shapes if length == frames] or [side for _, side in shapes])
    check_shape(frames, size, config, family)
    # The published per-view figure of any released model with this architecture and clip shape.
    paper = next(
        (
            e
            for e in released
            if (e.protocol.frames, e.protocol.size) == (frames, size) and e.gflops_per_view is not None
        ),
        None,
    )
    return Workload(
        name=family,
        family=family,
        config=config,
        frames=frames,
        size=size,
        clips=clips or 1,
        crops=crops or 1,
        paper_gflops_per_view=paper.gflops_per_view if paper else None,
        paper_step=paper.gflops_step if isinstance(paper, V2ZooEntry) else None,
    )


# Counting keys: every field that changes the counted work except the class count, which only sizes the
# classifier (see `count_macs`); each architecture and clip shape is then counted once per process.
COUNTED_CLASSES = 400


@cache
def _shape_only_model(config: ModelConfig | V2Config) -> VideoNetwork:
    """The network on the meta device: it runs the real code on shapes, without memory or arithmetic
    (several times faster than fake tensors; the exact attention path leaves autocast alone on meta)."""
    with torch.device("meta"):
        model = create_model(config)
    # No autograd state: the counter's module tracker would otherwise hook gradients of parameter views.
    model.eval().requires_grad_(False)
    exact_attention(model)
    return model


def _classifiers(model: nn.Module) -> dict[str, nn.Linear]:
    """The layers with one output row per class, by module path: `head` (UniFormerV2's `transformer.proj.2`),
    and the light models' token head `head_cls`."""
    heads = [layer for name in ("head", "head_cls") if isinstance(layer := getattr(model, name, None), nn.Linear)]
    return {path: module for path, module in model.named_modules() if any(module is head for head in heads)}


def _signature(module: nn.Module) -> tuple[object, ...]:
    """What decides a module's work besides its inputs: types, plain attributes and parameter shapes of it
    and its children (a token block's keep ratio is an attribute; drop-path rates are zero here)."""
    plain = (bool, int, float, str, tuple, type(None))
    return tuple(
        (
            name,
            type(child).__qualname__,
            tuple((key, value) for key, value in sorted(vars(child).items()) if isinstance(value, plain)),
            tuple((key, tuple(value.shape)) for key, value in child.named_parameters(recurse=False)),
        )
        for name, child in module.named_modules()
    )


def _meta_like(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, tuple):
        return tuple(_meta_like(item) for item in value)
    return value


def _shape_key(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), tuple(value.stride()), value.dtype)
    if isinstance(value, tuple | list):
        return tuple(_shape_key(item) for item in value)
    return value


@contextlib.contextmanager
def _blocks_counted_once(model: nn.Module, counter: FlopCounterMode) -> Iterator[None]:
    """Run each distinct block (same signature, same input shapes) once: a repeat returns outputs of the
    recorded shapes and adds the recorded operation counts to the modules the counter attributes work to
    at that point (the block and its parents), as running it would. UniFormer-B's 40 blocks are 4 kinds.

    Reads the counter's `flop_counts` and module tracker; where a PyTorch release lacks them, every block
    simply runs.
    """
    tracker: Any = getattr(counter, "mod_tracker", None)
    if not isinstance(getattr(counter, "flop_counts", None), dict) or not hasattr(tracker, "parents"):
        yield
        return
    recorded: dict[tuple[object, ...], tuple[object, dict[object, int]]] = {}
    patched = []

    def memoised(forward: Callable[..., object], signature: tuple[object, ...]) -> Callable[..., object]:
        def run(*args: object) -> object:
            key = (signature, _shape_key(args))
            if key in recorded:
                outputs, ops = recorded[key]
                for parent in set(tracker.parents):
                    for op, count in ops.items():
                        counter.flop_counts[parent][op] += count
                return _meta_like(outputs)
            before = dict(counter.flop_counts.get("Global", {}))
            outputs = forward(*args)
            after = counter.flop_counts.get("Global", {})
            recorded[key] = (_meta_like(outputs), {op: after[op] - before.get(op, 0) for op in after})
            return outputs

        return run

    for block in cast(VideoNetwork, model).repeated_blocks():
        block.forward = memoised(block.forward, _signature(block))
        patched.append(block)
    try:
        yield
    finally:
        for block in patched:
            del block.forward


@cache
def _count_architecture(config: ModelConfig | V2Config, frames: int, size: int) -> tuple[MacCount, int]:
    """`count_macs` for a config whose class count is `COUNTED_CLASSES`, and the classifiers' share."""
    model = _shape_only_model(config)
    try:
        with FlopCounterMode(display=False) as counter, _blocks_counted_once(model, counter):
            model(torch.empty(1, 3, frames, size, size, device="meta"))
    except RuntimeError as error:
        raise UniformerError(f"cannot run this architecture on {frames}-frame {size}x{size} clips: {error}") from error
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate; the paper counts 1.
    counts = {module: sum(ops.values()) // 2 for module, ops in counter.get_flop_counts().items()}
    total = counts.get("Global", 0)
    root = type(model).__name__

    def module_macs(path: str, module: nn.Module) -> int:
        # The tracker records modules that were called; containers such as ModuleList never are.
        if f"{root}.{path}" in counts:
            return counts[f"{root}.{path}"]
        return sum(module_macs(f"{path}.{name}", child) for name, child in module.named_children())

    stage_macs = {group: module_macs(group, model.get_submodule(group)) for group in model.cost_groups}
    stage_macs["head"] = total - sum(stage_macs.values())
    params = sum(parameter.numel() for parameter in model.parameters())
    classifier_macs = sum(counts.get(f"{root}.{path}", 0) for path in _classifiers(model))
    return MacCount(params=params, macs=total, stage_macs=stage_macs), classifier_macs


def count_macs(config: ModelConfig | V2Config, frames: int, size: int) -> MacCount:
    """Multiply-accumulates of one `[1, 3, frames, size, size]` view through `config`'s network.

    Zoo entries that differ only in their class count share one count: the classifier's work and
    parameters grow linearly with the classes (one pooled vector per view), so they are rescaled from
    the count at `COUNTED_CLASSES` (the drop-path rate, which does nothing in eval, is ignored too).
    """
    base = config.replace(num_classes=COUNTED_CLASSES, drop_path_rate=0.0)
    count, classifier_macs = _count_architecture(base, frames, size)
    extra = config.num_classes - COUNTED_CLASSES
    if not extra:
        return count
    per_class_macs = classifier_macs // COUNTED_CLASSES
    per_class_params = sum(
        layer.in_features + (layer.bias is not None) for layer in _classifiers(_shape_only_model(base)).values()
    )
    stage_macs = dict(count.stage_macs)
    stage_macs["head"] += extra * per_class_macs
    return MacCount(
        params=count.params + extra * per_class_params,
        macs=count.macs + extra * per_class_macs,
        stage_macs=stage_macs,
    )


def benchmark(
    config: ModelConfig | V2Config,
    frames: int,
    size: int,
    settings: BenchSettings,
    progress: ProgressCallback | None = None,
) -> BenchResult:
    """Median latency over `runs` forward passes after `warmup` ones, throughput and peak memory, of the
    fast inference path (`optimize_for_inference`) under the device's autocast. Each pass (warm-up,
    timed, and the memory profile's) is reported to `progress` as a sub step."""
    device = select_device(settings.device)
    model = optimize_for_inference(create_model(config).to(device), inplace=True, precision=settings.precision)
    clips = torch.randn(settings.batch_size, 3, frames, size, size, device=device)
    passes = settings.warmup + settings.runs + 1
    done = 0

    def forward() -> None:
        nonlocal done
        with torch.inference_mode(), inference_autocast(model, device):
            model(clips)
        done += 1
        stage = "warm-up" if done <= settings.warmup else "timed" if done < passes else "memory"
        notify(progress, Progress("forward passes", done, passes, {"pass": stage}, sub=True))

    notify(progress, Progress("forward passes", 0, passes, {"pass": "warm-up"}, sub=True))
    for _ in range(settings.warmup):
        forward()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(settings.runs):
        synchronize(device)
        start = time.perf_counter()
        forward()
        synchronize(device)
        times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    precision = "fp32" if settings.precision == "auto" else settings.precision
    if settings.precision == "auto" and (dtype := autocast_dtype(device, fp16_safe=fp16_safe(model))) is not None:
        precision = f"{str(dtype).removeprefix('torch.')} autocast"
    memory = peak_memory(device, model, clips, forward)
    if done < passes:  # no pass was profiled (a GPU): the sub step ends all the same
        notify(progress, Progress("forward passes", passes, passes, sub=True))
    return BenchResult(
        device=str(device),
        precision=precision,
        batch_size=settings.batch_size,
        warmup=settings.warmup,
        runs=settings.runs,
        latency_ms=latency * 1e3,
        clips_per_s=settings.batch_size / latency,
        peak_memory_mb=memory,
    )


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Discard what native code writes to file descriptor 2 meanwhile: the CPU profiler prints a
    "profiler_start" / "profiler_stop" line there on every use. Python errors still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(
    device: torch.device, model: nn.Module, clips: torch.Tensor, forward: Callable[[], None]
) -> float | None:
    """Peak bytes held by torch tensors during the timed runs (CUDA) or one profiled run (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type != "cpu":
        return None  # MPS exposes current, not peak, allocation
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        forward()
    # Replay the allocations and frees the profiler recorded, in time order, to find the high-water mark.
    held = peak = 0
    for event in sorted(profiler.events(), key=lambda event: event.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    resident = sum(tensor.numel() * tensor.element_size() for tensor in (*model.parameters(), *model.buffers(), clips))
    return (resident + peak) / 2**20


def cost_rows(
    workloads: list[Workload],
    *,
    by_stage: bool = False,
    bench: BenchSettings | None = None,
    progress: ProgressCallback | None = None,
) -> list[CostRow]:
    """Count (and optionally benchmark) every workload; identical networks are measured once. Each workload
    is reported to `progress` as it starts and when it is done."""
    benches: dict[tuple[ModelConfig | V2Config, int, int], BenchResult] = {}
    rows: list[CostRow] = []
    task = "benchmarking" if bench else "counting"
    for workload in workloads:
        notify(progress, Progress(task, len(rows), len(workloads), {"model": workload.name}))
        count = count_macs(workload.config, workload.frames, workload.size)
        key = (workload.config, workload.frames, workload.size)
        if bench is not None and key not in benches:
            benches[key] = benchmark(workload.config, workload.frames, workload.size, bench, progress)
        rows.append(
            CostRow(
                name=workload.name,
                family=workload.family,
                frames=workload.frames,
                size=workload.size,
                clips=workload.clips,
                crops=workload.crops,
                params=count.params,
                macs_per_view=count.macs,
                paper_gflops_per_view=workload.paper_gflops_per_view,
                paper_gflops=workload.paper_gflops,
                paper_step=workload.paper_step,
                stages={group: macs / 1e9 for group, macs in count.stage_macs.items()} if by_stage else None,
                bench=benches.get(key),
            )
        )
    notify(progress, Progress(task, len(rows), len(workloads)))
    return rows
