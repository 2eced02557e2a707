"""Adaptation: a fresh optimiser takes a number of steps on a stream of batches.

The one ``adapt()`` of metapose: Reptile's inner loop (Nichol et al., 2018; the paper's Algorithm 1,
lines 6-8), meta-evaluation and the paper's meta-test (few-shot fine-tuning on K images of a new
domain, §4.3) all call it, so they cannot drift apart.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
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


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reestimate_batchnorm(
    model: nn.Module, batches: Sequence[Sample], options: DeviceOptions
) -> None:
    """Re-measure every BatchNorm's running statistics on ``batches`` (AdaBN, Li et al. 2017).

    The statistics become the plain average over the batches (momentum ``None``); weights and
    the model's mode are left as they were.
    """
    norms = _batchnorms(model)
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            images = batch.image.to(options.device).contiguous(memory_format=options.memory_format)
            with torch.autocast(options.device.type, dtype=torch.bfloat16, enabled=options.use_amp):
                model(images)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


class L2SP:
    """``strength / 2 * sum ||w - w0||^2`` over the trainable parameters (Li et al., 2018)."""

    def __init__(self, model: nn.Module, strength: float) -> None:
        self.strength = strength
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.model = model

    def __call__(self) -> torch.Tensor:
        terms = [
            (p - self.start[n]).pow(2).sum()
            for n, p in self.model.named_parameters()
            if p.requires_grad
        ]
        return 0.5 * self.strength * torch.stack(terms).sum()


def adapt(
    model: nn.Module,
    batches: Iterator[Sample],
    steps: int,
    optimizer: OptimizerConfig,
    options: DeviceOptions,
    *,
    head_only: bool = False,
    backbone_lr_scale: float = 1.0,
    frozen_batchnorm: bool = False,
    penalty: Callable[[], torch.Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """Take ``steps`` steps of a fresh optimiser on ``batches``; ``model`` is changed in place.

    ``backbone_lr_scale`` scales the backbone's learning rate (``head_only``: frozen);
    ``frozen_batchnorm`` keeps every BatchNorm's statistics; ``penalty`` is added to each loss.
    A NaN or infinite loss raises :class:`~metapose.errors.DivergedError`.
    """
    model.train()
    if frozen_batchnorm:
        for m in _batchnorms(model):
            m.eval()
    if (head_only or backbone_lr_scale != 1.0) and not isinstance(model, TopDownModel):
        raise TypeError("head-only or backbone learning-rate scaling needs a TopDownModel")
    if head_only:
        assert isinstance(model, TopDownModel)
        _freeze_backbone(model)
        groups: list[dict[str, object]] = [{"params": model.head_parameters()}]
    elif backbone_lr_scale != 1.0:
        assert isinstance(model, TopDownModel)
        groups = [
            {"params": list(model.backbone.parameters()), "lr": optimizer.lr * backbone_lr_scale},
            {"params": model.head_parameters()},
        ]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = build_optimizer(groups, optimizer)
    losses, images = [], 0
    try:
        for step in range(steps):
            batch = next(batches)
            loss = step_on_batch(model, opt, batch, options, penalty=penalty)
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
    if config.batchnorm == "reestimate":
        options.prepare(model)
        reestimate_batchnorm(model, list(itertools.islice(stream.batches(), 1)), options)
    result = adapt(
        model,
        stream.batches(),
        steps,
        config.optimizer,
        options,
        head_only=config.head_only,
        backbone_lr_scale=config.backbone_lr_scale,
        frozen_batchnorm=config.batchnorm != "train",
        penalty=L2SP(model, config.l2sp) if config.l2sp > 0 else None,
        on_step=on_step,
    )
    return AdaptResult(result.losses, result.images, stream.batches_per_epoch)
