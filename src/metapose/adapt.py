"""Adaptation: a fresh optimiser takes a number of steps on a stream of batches.

The one ``adapt()`` of metapose: Reptile's inner loop (Nichol et al., 2018; the paper's Algorithm 1,
lines 6-8), meta-evaluation and the paper's meta-test (few-shot fine-tuning on K images of a new
domain, §4.3) all call it, so they cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from metapose.config import AdaptConfig, ConfigError, OptimizerConfig
from metapose.data.batches import EpochBatches
from metapose.data.coco import CocoDataset
from metapose.data.dataset import Sample, TopDownDataset
from metapose.errors import DataError, check_finite_loss
from metapose.models import TopDownModel
from metapose.optim import DeviceOptions, build_optimizer, step_on_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptResult:
    losses: tuple[float, ...]  # one per step, before that step's update
    images: int  # images processed (forward and backward)
    steps_per_epoch: int = 1

    @property
    def epoch_losses(self) -> tuple[float, ...]:
        n = self.steps_per_epoch
        return tuple(float(np.mean(self.losses[i : i + n])) for i in range(0, len(self.losses), n))


def _freeze_backbone(model: TopDownModel) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone.eval()  # frozen BatchNorm statistics too


def adapt(
    model: nn.Module,
    batches: Iterator[Sample],
    steps: int,
    optimizer: OptimizerConfig,
    options: DeviceOptions,
    *,
    head_only: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """Take ``steps`` steps of a fresh optimiser on ``batches``; ``model`` is changed in place.

    A NaN or infinite loss raises :class:`~metapose.errors.DivergedError`.
    """
    model.train()
    if head_only:
        if not isinstance(model, TopDownModel):
            raise TypeError("head_only adaptation needs a TopDownModel")
        _freeze_backbone(model)
        params = model.head_parameters()
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, optimizer)
    losses, images = [], 0
    try:
        for step in range(steps):
            batch = next(batches)
            loss = step_on_batch(model, opt, batch, options)
            check_finite_loss(loss, step + 1)
            losses.append(loss)
            images += int(batch.image.shape[0])
            if on_step is not None:
                on_step(step, loss)
    finally:
        if head_only:
            for p in model.parameters():
                p.requires_grad_(True)
    return AdaptResult(tuple(losses), images)


def choose_shots(
    dataset: CocoDataset, k: int, seed: int, *, pool: Sequence[int] | None = None
) -> list[int]:
    """K image ids with a labelled person, drawn from ``pool`` (default: all) by ``seed``."""
    if k < 1:
        raise ConfigError(f"shots must be >= 1, got {k}")
    allowed = None if pool is None else set(pool)
    candidates = sorted(
        {
            a.image_id
            for a in dataset.annotations
            if a.trainable and (allowed is None or a.image_id in allowed)
        }
    )
    if k > len(candidates):
        raise DataError(
            dataset.annotation_file,
            f"asked for {k} shots but the pool has only {len(candidates)} labelled images: "
            "ask for fewer shots or give a larger pool",
        )
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(candidates, size=k, replace=False))


def fine_tune(
    model: nn.Module,
    support: TopDownDataset,
    config: AdaptConfig,
    options: DeviceOptions,
    *,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """The meta-test: ``config.epochs`` epochs of shuffled batches over the support set."""
    stream = EpochBatches(support, config.batch_size, seed=seed)
    steps = config.epochs * stream.batches_per_epoch
    log.info("fine-tuning on %d crops: %d steps", len(support), steps)
    result = adapt(
        model,
        stream.batches(),
        steps,
        config.optimizer,
        options,
        head_only=config.head_only,
        on_step=on_step,
    )
    return AdaptResult(result.losses, result.images, stream.batches_per_epoch)
