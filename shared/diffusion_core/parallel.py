"""Data-parallel training: the world a training process belongs to, alone or as one rank of torchrun's.

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)
makes each process one rank; NCCL joins CUDA ranks, gloo joins CPU ranks. Without a launcher a
run is a world of one: no process group, no collective, no wrapper.
"""

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import ConfigError
from .model import pick_device

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one training run."""

    device: torch.device  # where this rank trains: cuda:LOCAL_RANK under torchrun on GPUs
    rank: int = 0  # 0 evaluates, snapshots and publishes
    size: int = 1  # processes training together
    local_rank: int = 0  # rank on this host

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over every rank (a world of one returns them as they are)."""
        if self.size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def barrier(self) -> None:
        """Every rank waits here until all have come (while rank 0 evaluates or writes)."""
        if self.size > 1:
            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP around the module when there is more than one rank: gradients are averaged in backward."""
        if self.size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def accumulating(self, module: nn.Module, last: bool) -> AbstractContextManager[object]:
        """Skip the gradient all-reduce on every micro-batch but the last of a step."""
        if last or not isinstance(module, DistributedDataParallel):
            return nullcontext()
        return module.no_sync()


def _launched() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def joined(device: str) -> Iterator[World]:
    """This process's world for one run; under a launcher the process group lives as long as the block."""
    size = _launched()
    chosen = pick_device(device)
    if size == 1:
        yield World(chosen)
        return
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {size} but {', '.join(missing)} are not set; launch with torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if chosen.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} has no GPU: this host has {torch.cuda.device_count()}", "device")
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    elif chosen.type != "cpu":
        raise ConfigError(f"distributed training runs on CUDA GPUs or CPUs, not {chosen.type}", "device")
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    try:
        yield World(chosen, rank, size, local)
    finally:
        if created:
            dist.destroy_process_group()


def devices_here(device: str) -> int:
    """How many ranks this host can run for `device`: its GPUs, or its CPU cores (one rank needs one)."""
    chosen = pick_device(device)
    if chosen.type == "cuda":
        return torch.cuda.device_count()
    if chosen.type == "cpu":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1
