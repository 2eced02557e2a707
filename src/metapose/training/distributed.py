"""Multi-process training under ``torchrun`` (torch.distributed): who am I, and averaging.

Supervised training wraps the model in DistributedDataParallel (gradients averaged every step);
Reptile lets every rank adapt to its own task and averages the adapted weights across ranks, which
is batched Reptile with ``world_size`` times more tasks per meta step. Each rank reads its own
shard of the batch stream; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """The process group this process belongs to (a single process when none is set up)."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    return DistInfo()


def init_from_env() -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (NCCL on GPU, else Gloo)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return current()


def mean_across_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` in place over all ranks (no-op in a single process)."""
    info = current()
    if info.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(info.world_size)
    return tensor


def barrier() -> None:
    if current().active:
        dist.barrier()


def broadcast_buffers_(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm statistics) to every rank.

    DistributedDataParallel keeps parameters identical but lets each rank's last forward update
    its own running statistics; the model that is saved is rank 0's, so all ranks adopt it.
    """
    if current().active:
        for buffer in module.buffers():
            dist.broadcast(buffer, src)
