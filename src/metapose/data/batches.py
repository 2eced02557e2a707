"""Streams of training batches that can start at any batch number (exact resume).

Two kinds: :class:`EpochBatches` shuffles a finite dataset epoch by epoch (the permutation of epoch
``e`` comes from ``(seed, e)``); :class:`IndexedBatches` makes batch ``b`` from its number alone
(on-the-fly synthetic data, Reptile tasks), sharding whole batches across DataLoader workers so a
stream's content never depends on how many workers make it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Protocol

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from metapose.data.dataset import Sample, TopDownDataset


class BatchStream(Protocol):
    """An endless stream of collated batches; ``batches(start)`` skips the first ``start``.

    ``sharded(rank, world_size)`` is the part of the stream one of ``world_size`` processes reads
    (distributed training): disjoint, and together the whole stream.
    """

    def batches(self, start: int = 0) -> Iterator[Sample]: ...

    def sharded(self, rank: int, world_size: int) -> BatchStream: ...


def collate(samples: list[Sample]) -> Sample:
    return torch.utils.data.default_collate(samples)


def worker_init(worker_id: int) -> None:
    """Every DataLoader worker: leave stopping to the main process.

    A SIGTERM sent to the whole process group would otherwise kill the workers first, and
    PyTorch turns a killed worker into an error in the main process, which is stopping cleanly
    on its own SIGTERM; the workers end when the main process shuts them down or is gone. A
    batch being handed over (a thread of the worker) as the main process stops finds the
    connection closed: that says nothing the main process's own line does not.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # multiprocessing's resource sharer reports through sys.excepthook (errors of the worker's
    # own work reach the main process through PyTorch, not this hook).
    sys.excepthook = _quiet_handover


def _quiet_handover(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if not issubclass(kind, ConnectionError | EOFError):
        sys.__excepthook__(kind, error, trace)


@dataclass
class EpochBatches:
    """Shuffled, drop-last batches over epochs of a map-style dataset."""

    dataset: TopDownDataset
    batch_size: int
    seed: int = 0
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if len(self.dataset) == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        if self.global_batches_per_epoch < self.world_size:
            raise ValueError(
                f"{self.global_batches_per_epoch} batches per epoch for {self.world_size} ranks"
            )

    @property
    def global_batches_per_epoch(self) -> int:
        # With fewer samples than a batch (few-shot), one batch holds them all.
        return max(len(self.dataset) // self.batch_size, 1)

    @property
    def batches_per_epoch(self) -> int:
        """This rank's batches per epoch (the remainder of the division by ranks is dropped)."""
        return self.global_batches_per_epoch // self.world_size

    def sharded(self, rank: int, world_size: int) -> EpochBatches:
        return replace(self, rank=rank, world_size=world_size)

    def epoch_order(self, epoch: int) -> list[list[int]]:
        n = len(self.dataset)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        size = min(self.batch_size, n)
        order = [perm[i * size : (i + 1) * size] for i in range(self.global_batches_per_epoch)]
        return order[self.rank :: self.world_size][: self.batches_per_epoch]

    def batches(self, start: int = 0) -> Iterator[Sample]:
        epoch, offset = divmod(start, self.batches_per_epoch)
        while True:
            self.dataset.set_epoch(epoch)
            order = self.epoch_order(epoch)[offset:]
            loader = DataLoader(
                self.dataset,
                batch_sampler=order,
                num_workers=self.num_workers,
                collate_fn=collate,
                persistent_workers=False,
                worker_init_fn=worker_init,
            )
            yield from loader
            epoch, offset = epoch + 1, 0


class _IndexedBatchesDataset(IterableDataset[Sample]):
    def __init__(self, make_batch: Callable[[int], Sample], start: int) -> None:
        self.make_batch = make_batch
        self.start = start

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        b = self.start + worker
        while True:
            yield self.make_batch(b)
            b += workers


@dataclass
class IndexedBatches:
    """Batch ``b`` is ``make_batch(b)``; DataLoader workers take every n-th batch in turn.

    PyTorch's DataLoader visits its workers round robin, so the batches arrive in order 0, 1, 2, ...
    whatever ``num_workers`` is.
    """

    make_batch: Callable[[int], Sample]
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1

    def sharded(self, rank: int, world_size: int) -> IndexedBatches:
        return replace(self, rank=rank, world_size=world_size)

    def _global_batch(self, b: int) -> Sample:
        return self.make_batch(b * self.world_size + self.rank)

    def batches(self, start: int = 0) -> Iterator[Sample]:
        make = self.make_batch if self.world_size == 1 else self._global_batch
        loader = DataLoader(
            _IndexedBatchesDataset(make, start),
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=2 if self.num_workers else None,
            worker_init_fn=worker_init,
        )
        yield from loader
