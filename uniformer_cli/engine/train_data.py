"""Training inputs: which videos form each step's batch, and one augmented sample per video.

Randomness is keyed, not streamed: the order of an epoch is a function of (seed, epoch), a sample's
temporal position and augmentation of (seed, epoch, sample index). So a run gives the same batches
with any number of processes or DataLoader workers, and a resumed run picks up exactly where the
interrupted one was, from nothing but the epoch and step counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from uniformer_cli.data.augment import ClipAugment
from uniformer_cli.data.datasets import DatasetSplit, Sample, fetch_members, open_sample, unavailable_videos
from uniformer_cli.data.sampling import train_indices
from uniformer_cli.data.shards import epoch_order
from uniformer_cli.errors import DatasetError, VideoError
from uniformer_cli.protocol import Sampling

logger = logging.getLogger(__name__)

SampleKey = tuple[int, int]  # (epoch, index into the sample list)
DECODE_RETRIES = 10  # a broken video is replaced by another random one, as the official loader does


UNAVAILABLE_LIST = "unavailable_videos.txt"  # in the run folder: every listed video that cannot be read
SHOWN_UNAVAILABLE = 3


def report_unavailable(splits: Mapping[str, DatasetSplit], output: Path) -> int:
    """Check that every listed video is there and readable (no decoding) before training starts: one
    warning line with the counts and the first few names, the full list in `output/unavailable_videos.txt`
    (`split<TAB>reason<TAB>path`). Training replaces an unreadable video by another random one, as the
    official loader does, but never silently; a training list with no readable video is refused.
    Returns how many are unavailable."""
    found = {name: unavailable_videos(split.samples) for name, split in splits.items()}
    listing = output / UNAVAILABLE_LIST
    total = sum(len(bad) for bad in found.values())
    if total == 0:
        listing.unlink(missing_ok=True)  # a stale list of a resumed run's earlier start
        return 0
    lines = [f"{name}\t{reason}\t{path}" for name, bad in found.items() for path, reason in bad]
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = " and ".join(f"{len(bad)} of {len(splits[name].samples)} {name}" for name, bad in found.items() if bad)
    first = [
        path.relative_to(splits[name].root) if path.is_relative_to(splits[name].root) else path
        for name, bad in found.items()
        for path, _ in bad
    ][:SHOWN_UNAVAILABLE]
    shown = ", ".join(str(path) for path in first) + (", ..." if total > SHOWN_UNAVAILABLE else "")
    logger.warning("%s videos are missing or unreadable (%s): the full list is in %s", counts, shown, listing)
    train = splits.get("train")
    if train is not None and len(found["train"]) == len(train.samples):
        raise DatasetError(f"none of the {len(train.samples)} training videos can be read (see {listing})")
    return total


def keyed_rng(*key: int) -> np.random.Generator:
    """A generator determined by integer `key` (e.g. seed, epoch, index)."""
    return np.random.default_rng([int(part) for part in key])


@dataclass(frozen=True)
class ClipSampling:
    """Where a training clip's frames come from (PROTOCOLS.md 3): dense T x stride, segment or sparse."""

    frames: int
    stride: int | None
    sampling: Sampling

    def indices(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        return train_indices(self.sampling, num_frames, self.frames, self.stride, rng)


def training_order(split: DatasetSplit) -> Callable[[int, int], np.ndarray] | None:
    """How an epoch visits a split (for `GlobalBatchSampler(order=)`): a packed split shard by shard
    (`shards.epoch_order`); None for loose files, which take a plain seeded permutation."""
    sizes = split.shard_sizes
    if sizes is None:
        return None
    return lambda seed, epoch: epoch_order(sizes, seed, epoch)


class TrainClips(Dataset):
    """`dataset[(epoch, index)]` -> (`[R, 3, T, S, S]` augmented views of video `index`, its label). A
    micro-batch's packed samples are fetched together (`fetch_members`), then decoded one by one."""

    def __init__(
        self,
        samples: Sequence[Sample],
        sampling: ClipSampling,
        augment: ClipAugment,
        seed: int,
        decoder: str = "auto",
    ) -> None:
        self.samples = list(samples)
        self.sampling = sampling
        self.augment = augment
        self.seed = seed
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, sample: Sample, rng: np.random.Generator, data: bytes | None) -> torch.Tensor:
        with open_sample(sample, self.decoder, "train", data) as video:
            frames = video.read(self.sampling.indices(sample.frame_count(video), rng))
        return self.augment(torch.from_numpy(frames), rng)

    def __getitems__(self, keys: Sequence[SampleKey]) -> list[tuple[torch.Tensor, int]]:
        fetched = fetch_members([self.samples[index] for _, index in keys])
        return [self._item(key, data) for key, data in zip(keys, fetched, strict=True)]

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int]:
        return self._item(key)

    def _item(self, key: SampleKey, data: bytes | None = None) -> tuple[torch.Tensor, int]:
        epoch, index = key
        rng = keyed_rng(self.seed, epoch, index)
        errors = []
        for _ in range(DECODE_RETRIES):
            sample = self.samples[index]
            try:
                return self._load(sample, rng, data), sample.label
            except (VideoError, DatasetError) as error:  # a damaged video, or a shard member that is not one
                errors.append(str(error))
                index = int(rng.integers(len(self.samples)))
                data = None
        raise DatasetError(f"{DECODE_RETRIES} training videos in a row failed to decode; the first: {errors[0]}")


class GlobalBatchSampler(Sampler[list[SampleKey]]):
    """This process's micro-batches of sample keys.

    Every optimiser step consumes one global batch of `micro_batch * accumulation * world_size` videos,
    a contiguous slice of a seeded permutation of the dataset (the incomplete last slice is dropped):
    `order(seed, epoch)`, a random permutation by default; packed datasets pass `shards.epoch_order`.
    The slice is cut into `accumulation * world_size` chunks; rank r's m-th micro-batch is chunk
    `r * accumulation + m`. So 2 processes with 1 micro-batch each and 1 process accumulating 2
    micro-batches see the same chunks (same BatchNorm statistics, same mixing partners).
    """

    def __init__(
        self,
        size: int,
        micro_batch: int,
        *,
        accumulation: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        order: Callable[[int, int], np.ndarray] | None = None,
    ) -> None:
        self.size = size
        self.order = order or (lambda seed, epoch: keyed_rng(seed, epoch).permutation(size))
        self.micro_batch = micro_batch
        self.accumulation = accumulation
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.start_step = 0
        if self.steps_per_epoch == 0:
            raise DatasetError(
                f"the training set has {size} videos, fewer than one global batch of {self.global_batch} "
                "(batch size x accumulation x processes): lower --batch-size or --accum-steps"
            )

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def chunk(self, micro_step: int) -> int:
        """Index of this process's `micro_step`-th micro-batch within its global batch."""
        return self.rank * self.accumulation + micro_step

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        """The epoch to iterate next, starting at optimiser step `start_step` of it (for resuming)."""
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = self.order(self.seed, self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            for micro_step in range(self.accumulation):
                first = step * self.global_batch + self.chunk(micro_step) * self.micro_batch
                yield [(self.epoch, int(index)) for index in order[first : first + self.micro_batch]]
