"""The distributed session: this process's place in a `torchrun` job (or a lone process), and the few
collectives the jobs use.

Under `torchrun` (RANK / WORLD_SIZE set) every rank enters `session()`: gloo on CPU, NCCL on CUDA with
one GPU per rank. A lone process gets a one-rank session whose collectives are no-ops, so the jobs call
the same methods either way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from uniformer_cli.device import select_device

# Gathering waits for the slowest rank; the default 30 min collective timeout is too short for a shard
# of Kinetics on a slow disk.
DISTRIBUTED_TIMEOUT = datetime.timedelta(hours=12)

Value = TypeVar("Value")


def world_size() -> int:
    """Processes of this job: torchrun's WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main_process() -> bool:
    """Rank 0 of a torchrun job, or a lone process: the one that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Session:
    """This process's place in a (possibly single-process) job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[Value]) -> list[Value]:
        """This rank's part of `items`: a contiguous run, the runs of the ranks differing in length by at
        most one. Contiguous, so that a rank reads packed samples shard after shard, front to back."""
        count = len(items)
        return list(items[self.rank * count // self.world_size : (self.rank + 1) * count // self.world_size])

    def gather(self, results: dict[int, Value]) -> dict[int, Value]:
        """Every rank's results merged on rank 0 (other ranks get an empty dict)."""
        if self.world_size == 1:
            return results
        gathered: list[dict[int, Value] | None] = [None] * self.world_size if self.main else []
        dist.gather_object(results, gathered if self.main else None, dst=0)
        merged: dict[int, Value] = {}
        for part in gathered:
            merged.update(part or {})
        return merged

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks, on every rank."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank, on every rank."""
        if self.world_size == 1:
            return flag
        votes = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return bool(votes.item())

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank, so that all of them take the same branch."""
        if self.world_size == 1:
            return value
        shared = [value]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (e.g. BatchNorm statistics) in every rank's copy of `module`."""
        if self.world_size == 1:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Session]:
    """One process, or one rank of a `torchrun` job: gloo on CPU, NCCL on CUDA, one GPU per rank."""
    device = select_device(device_name)
    if world_size() == 1:
        yield Session(0, 1, device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend, timeout=DISTRIBUTED_TIMEOUT)
    try:
        yield Session(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if started:
            dist.destroy_process_group()
