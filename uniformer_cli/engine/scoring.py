"""Video scoring under a test protocol: every view of a video goes through the network, the video's score
is the sum of its views' logits (PROTOCOLS.md 5.3), and top-1 / top-5 / mean class accuracy are computed over
the videos. `uniformer eval` and training's validation both score through here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from uniformer_cli.data.datasets import Sample, fetch_members, open_sample
from uniformer_cli.data.loading import decoding_workers, init_decoding_worker
from uniformer_cli.data.views import views_from_video
from uniformer_cli.device import batched_logits
from uniformer_cli.engine.results import non_finite as non_finite
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ViewProtocol

TOP_K = 5


def all_finite(values: torch.Tensor) -> bool:
    return bool(torch.isfinite(values).all())


@dataclass
class VideoResult:
    """One video's outcome: its top-5 classes by summed logits, or why it could not be read."""

    video: str
    label: int
    top5: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # softmax of the mean logits, for the top-5
    error: str | None = None

    @property
    def correct1(self) -> bool:
        return self.error is None and self.top5[:1] == [self.label]

    @property
    def correct5(self) -> bool:
        return self.error is None and self.label in self.top5


@dataclass(frozen=True)
class Metrics:
    top1: float
    top5: float
    mean_class: float
    counted: int  # videos in the denominator


def compute_metrics(results: Sequence[VideoResult], skip_broken: bool = False) -> Metrics:
    """Percentages over the counted videos: all of them, or only the readable ones with `skip_broken`.
    Mean class accuracy averages the top-1 accuracy of each class that has counted videos."""
    counted = [result for result in results if result.error is None or not skip_broken]
    if not counted:
        return Metrics(0.0, 0.0, 0.0, 0)
    per_class: dict[int, list[bool]] = {}
    for result in counted:
        per_class.setdefault(result.label, []).append(result.correct1)
    return Metrics(
        top1=100.0 * sum(result.correct1 for result in counted) / len(counted),
        top5=100.0 * sum(result.correct5 for result in counted) / len(counted),
        mean_class=100.0 * sum(sum(hits) / len(hits) for hits in per_class.values()) / len(per_class),
        counted=len(counted),
    )


Item = tuple[int, torch.Tensor | None, str | None]


class _VideoViews(Dataset):
    """Item `i`: (position of the video in the split, views `[V, 3, T, S, S]` or None, error or None).
    Reading and decoding happen here, in the DataLoader workers; a batch's packed samples are fetched
    together (`fetch_members`)."""

    def __init__(
        self, samples: Sequence[Sample], positions: Sequence[int], protocol: ViewProtocol, decoder: str
    ) -> None:
        self.samples = samples
        self.positions = positions
        self.protocol = protocol
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.positions)

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        positions = [self.positions[index] for index in indices]
        fetched = fetch_members([self.samples[position] for position in positions])
        return [self._views(position, data) for position, data in zip(positions, fetched, strict=True)]

    def __getitem__(self, index: int) -> Item:
        return self._views(self.positions[index])

    def _views(self, position: int, data: bytes | None = None) -> Item:
        sample = self.samples[position]
        try:
            with open_sample(sample, self.decoder, data=data) as video:
                return position, views_from_video(video, self.protocol, (0, sample.frame_count(video))), None
        except UniformerError as error:
            return position, None, str(error)
        except Exception as error:  # one undecodable video must not end a run of thousands
            return position, None, f"{sample.path}: {type(error).__name__}: {error}"


def decoded_batches(
    samples: Sequence[Sample],
    positions: Sequence[int],
    protocol: ViewProtocol,
    *,
    batch_size: int = 8,
    workers: int = 0,
    decoder: str = "auto",
) -> Iterator[list[Item]]:
    """The views of `samples[p]` for each p in `positions`, decoded by `workers` DataLoader processes, in
    groups of about `batch_size` views: lists of (p, views `[V, 3, T, S, S]` or None, error or None).
    Scoring and feature extraction both read videos through here; `workers` is capped at the cores."""
    workers = decoding_workers(workers)
    loader = DataLoader(
        _VideoViews(samples, positions, protocol, decoder),
        batch_size=max(1, batch_size // protocol.views),
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=init_decoding_worker if workers else None,
    )
    yield from loader


def score_videos(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    positions: Sequence[int],
    keys: Sequence[str],
    protocol: ViewProtocol,
    device: torch.device,
    *,
    batch_size: int = 8,
    workers: int = 0,
    decoder: str = "auto",
    weights: str = "loaded",
) -> Iterator[tuple[int, VideoResult]]:
    """Score `samples[p]` for each p in `positions`, yielding (p, result) as videos finish: views go
    through the network `batch_size` at a time, and a video's score is the sum of its views' logits.
    `keys[p]` names the video in its result; a video whose logits are not finite fails, naming `weights`."""
    for batch in decoded_batches(samples, positions, protocol, batch_size=batch_size, workers=workers, decoder=decoder):
        sums = iter(_summed_logits(model, [views for _, views, _ in batch if views is not None], device, batch_size))
        for position, views, error in batch:
            result = VideoResult(keys[position], samples[position].label, error=error)
            if views is not None:
                summed = next(sums)
                if not all_finite(summed):
                    result.error = non_finite(weights)
                    yield position, result
                    continue
                top = torch.softmax(summed / protocol.views, dim=0).topk(min(TOP_K, summed.numel()))
                result.top5, result.scores = top.indices.tolist(), top.values.tolist()
            yield position, result


def _summed_logits(
    model: torch.nn.Module, videos: list[torch.Tensor], device: torch.device, batch_size: int
) -> list[torch.Tensor]:
    """Per video, the float32 sum of its views' logits (PROTOCOLS.md 5.3); views of several videos share
    forward passes of at most `batch_size` views."""
    if not videos:
        return []
    logits = batched_logits(model, torch.cat(videos), device, batch_size)
    return [part.sum(0) for part in logits.split([len(v) for v in videos])]
