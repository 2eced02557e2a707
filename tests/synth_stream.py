"""An endless, worker-safe stream of synthetic labelled images (a test helper: the determinism
tests read items through a DataLoader with it).

Item ``i`` of a stream with seed ``s`` is rendered from ``np.random.default_rng([s, i])`` alone
(see :mod:`metapose.synth.items`), so it is the same whoever renders it. DataLoader worker
``k`` of ``n`` takes the items ``i = k, k + n, k + 2n, ...``; with ``batch_size=None`` the
loader hands them out in index order whatever ``n`` is. (With batching
inside the loader each batch comes from one worker; batch whole indices instead, as
``metapose.data.batches.IndexedBatches`` does, when batches must not depend on ``n``.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar, overload

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from metapose.data.records import LabelledImage
from metapose.synth.domains import Domain, get_domain
from metapose.synth.items import Mode, default_size, item_rng, render_item, synth_item

T = TypeVar("T")
Transform = Callable[[LabelledImage, np.random.Generator], T]

__all__ = ["SynthStream", "Transform", "item_rng", "synth_item"]


class SynthStream(IterableDataset, Generic[T]):
    """Synthetic labelled images (or ``transform`` of them), forever or ``length`` items.

    ``domains``: one domain or several; with several, each item draws its domain (uniformly)
    from its own generator first. ``transform(labelled, rng)`` runs in the worker with the
    item's generator, after rendering, so augmentation is reproducible too.
    """

    def __init__(
        self,
        domains: Domain | str | Sequence[Domain | str],
        seed: int,
        *,
        mode: Mode = "crop",
        size: tuple[int, int] | None = None,
        length: int | None = None,
        transform: Transform[T] | None = None,
    ) -> None:
        if isinstance(domains, Domain | str):
            domains = [domains]
        self.domains = tuple(get_domain(d) for d in domains)
        if not self.domains:
            raise ValueError("SynthStream needs at least one domain")
        if mode not in ("crop", "scene"):
            raise ValueError(f"mode must be 'crop' or 'scene', got {mode!r}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = seed
        self.mode: Mode = mode
        self.size = size or default_size(mode)
        self.length = length
        self.transform = transform

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an infinite SynthStream has no length")
        return self.length

    @overload
    def item(self: SynthStream[LabelledImage], index: int) -> LabelledImage: ...
    @overload
    def item(self, index: int) -> T: ...
    def item(self, index: int) -> T | LabelledImage:
        """Item ``index`` (what iteration yields at that position)."""
        rng = item_rng(self.seed, index)
        domain = self.domains[0]
        if len(self.domains) > 1:
            domain = self.domains[int(rng.integers(len(self.domains)))]
        labelled = render_item(domain, rng, self.mode, self.size)
        return labelled if self.transform is None else self.transform(labelled, rng)

    def indices(self) -> Iterator[int]:
        """The item indices this process renders (its DataLoader worker's share)."""
        # (No cv2.setNumThreads here: in a forked worker it waits forever for the parent's
        # pool threads, which the fork did not copy.)
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.length is None:
            return itertools.count(worker, workers)
        return iter(range(worker, self.length, workers))

    def __iter__(self) -> Iterator[T | LabelledImage]:
        for index in self.indices():
            yield self.item(index)
