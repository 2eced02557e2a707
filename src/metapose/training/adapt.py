"""Adaptation: a fresh optimiser takes a number of steps on a stream of batches.

The one ``adapt()`` of metapose: Reptile's inner loop (Nichol et al., 2018; the paper's Algorithm 1,
lines 6-8), meta-evaluation and the paper's meta-test (few-shot fine-tuning on K images of a new
domain, §4.3) all call it, so they cannot drift apart. :func:`fine_tune` can also choose how many
epochs to take on a held-out part of the shots (:func:`choose_epochs`): early stopping on a
validation split, with the count then re-run on all the shots.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from metapose.config import AdaptConfig, OptimizerConfig
from metapose.config.training import LrSchedule
from metapose.data.batches import EpochBatches, collate
from metapose.data.dataset import Sample, TopDownDataset
from metapose.device import DeviceOptions
from metapose.errors import CheckFailed, check_finite_loss
from metapose.models import TopDownModel
from metapose.models.checkpoint import first_non_finite
from metapose.models.topdown import forward_on
from metapose.training.step import (
    batch_loss,
    batchnorms,
    build_optimizer,
    step_on_batch,
    train_mode,
)

log = logging.getLogger(__name__)


# A quarter of the shots' images is held out to choose the epoch count: enough that the held-out
# loss averages over several people (4 of 16 shots, 8 of 32), few enough that the rest is nearly
# the support set whose epoch count it stands for. Whole images are held out, so no person is seen
# on both sides.
HOLD_OUT_FRACTION = 0.25
_HOLD_OUT_STREAM = 1  # the held-out draw's stream beside the seed: a draw of its own


@dataclass(frozen=True)
class EpochChoice:
    """How many epochs :func:`choose_epochs` chose, and the held-out losses it chose on."""

    epochs: int  # 0: do not adapt
    held_out_losses: tuple[float, ...]  # [e]: after e epochs on the rest (0: the starting model)
    held_out_image_ids: tuple[int, ...]


@dataclass(frozen=True)
class AdaptResult:
    losses: tuple[float, ...]  # one per step, before that step's update
    images: int  # images processed (forward and backward)
    steps_per_epoch: int = 1
    chosen: EpochChoice | None = None  # set when the epoch count was chosen on held-out shots

    @property
    def epoch_losses(self) -> tuple[float, ...]:
        return run_means(self.losses, self.steps_per_epoch)


def run_means(values: Sequence[float], n: int) -> tuple[float, ...]:
    """The mean of each run of ``n`` consecutive ``values`` (the last run may be shorter)."""
    return tuple(float(np.mean(values[i : i + n])) for i in range(0, len(values), n))


def _freeze_backbone(model: TopDownModel) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone.eval()  # frozen BatchNorm statistics too


def reestimate_batchnorm(
    model: nn.Module, batches: Sequence[Sample], options: DeviceOptions
) -> None:
    """Re-measure every BatchNorm's running statistics on ``batches`` (AdaBN, Li et al. 2017).

    The statistics become the plain average over the batches (momentum ``None``); weights and
    the model's mode are left as they were.
    """
    norms = batchnorms(model)
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            forward_on(model, batch.image, options)
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
    schedule: LrSchedule = "constant",
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """Take ``steps`` steps of a fresh optimiser on ``batches``; ``model`` is changed in place.

    ``backbone_lr_scale`` scales the backbone's learning rate (``head_only``: frozen);
    ``frozen_batchnorm`` keeps every BatchNorm's statistics; ``penalty`` is added to each loss;
    ``schedule`` scales each group's learning rate step by step (:func:`lr_scheduler`). A NaN or
    infinite loss raises :class:`~metapose.errors.DivergedError`.
    """
    train_mode(model, frozen_batchnorm)
    trainable = [p.requires_grad for p in model.parameters()]  # restored afterwards
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
        scheduler = lr_scheduler(opt, schedule, steps)
        for step in range(steps):
            batch = next(batches)
            loss = step_on_batch(model, opt, batch, options, penalty=penalty)
            scheduler.step()
            check_finite_loss(loss, step + 1)
            losses.append(loss)
            images += int(batch.image.shape[0])
            if on_step is not None:
                on_step(step, loss)
    finally:
        if head_only:  # the caller's choice of trainable parameters, not all of them
            for p, flag in zip(model.parameters(), trainable, strict=True):
                p.requires_grad_(flag)
    return AdaptResult(tuple(losses), images)


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: LrSchedule, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler of ``steps`` steps of ``optimizer`` (``step()`` it after each): step ``s``
    (0-based) takes each group's learning rate times 1 (``constant``) or
    ``(1 + cos(pi * s / steps)) / 2`` (``cosine``)."""
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if schedule == "cosine":
        span = max(steps, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / span))
        )
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


@dataclass(frozen=True)
class SupportSplit:
    """Indices into a support set's instances: the part trained on and the part held out."""

    train: tuple[int, ...]
    held_out: tuple[int, ...]


def split_support(support: TopDownDataset, seed: int) -> SupportSplit:
    """Hold out ``HOLD_OUT_FRACTION`` of the support's images (at least one), drawn by ``seed``.

    Instances are grouped by ``image_id``: every person of an image lands on the same side. With a
    single image nothing can be held out and ``held_out`` is empty.
    """
    image_ids = sorted({inst.image_id for inst in support.instances})
    if len(image_ids) < 2:
        return SupportSplit(tuple(range(len(support))), ())
    count = max(1, round(len(image_ids) * HOLD_OUT_FRACTION))
    rng = np.random.default_rng((seed, _HOLD_OUT_STREAM))
    held = {int(i) for i in rng.choice(image_ids, size=count, replace=False)}
    return SupportSplit(
        tuple(i for i, inst in enumerate(support.instances) if inst.image_id not in held),
        tuple(i for i, inst in enumerate(support.instances) if inst.image_id in held),
    )


def _subset(support: TopDownDataset, indices: Sequence[int], *, augmented: bool) -> TopDownDataset:
    """The support's instances at ``indices``; ``augmented=False``: plain crops (GT boxes)."""
    return TopDownDataset(
        [support.instances[i] for i in indices],
        support.codec,
        augment=support.augment if augmented else None,
        crop_transform=support.crop_transform if augmented else None,
        seed=support.seed,
        cache_images=support.cache_images,
        skeleton=support.skeleton,
    )


def held_out_loss(model: nn.Module, batches: Sequence[Sample], options: DeviceOptions) -> float:
    """Mean heatmap loss of ``model`` in eval mode (as it will be used) over ``batches``.

    Every module's train/eval mode is restored afterwards, so this can run between the steps of
    a fine-tune (frozen BatchNorm or a frozen backbone stay in eval mode).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            weighted = [
                float(batch_loss(model, b, options)) * int(b.image.shape[0]) for b in batches
            ]
    finally:
        for m, training in modes:
            m.training = training
    return sum(weighted) / sum(int(b.image.shape[0]) for b in batches)


def choose_epochs(
    model: nn.Module,
    support: TopDownDataset,
    config: AdaptConfig,
    options: DeviceOptions,
    *,
    seed: int = 0,
) -> EpochChoice:
    """The epoch count in ``0..config.epochs`` with the lowest loss on held-out shots.

    A copy of ``model`` (``model`` itself is not changed) is fine-tuned by ``config`` for
    ``config.epochs`` epochs on the shots :func:`split_support` keeps; the held-out crops' loss is
    measured before the first epoch and after each. Ties go to the fewer epochs. Without an image
    to hold out (one shot) the choice is ``config.epochs``, with no losses.
    """
    split = split_support(support, seed)
    if not split.held_out:
        log.warning(
            "one image in the support set: nothing to hold out, taking %d epochs", config.epochs
        )
        return EpochChoice(config.epochs, (), ())
    trial = copy.deepcopy(model)
    train_part = _subset(support, split.train, augmented=True)
    held_crops = _subset(support, split.held_out, augmented=False)
    size = config.batch_size
    held = [
        collate([held_crops[i] for i in range(start, min(start + size, len(held_crops)))])
        for start in range(0, len(held_crops), size)
    ]
    options.prepare(trial)
    losses = [held_out_loss(trial, held, options)]
    steps_per_epoch = EpochBatches(train_part, config.batch_size).batches_per_epoch

    def after_step(step: int, loss: float) -> None:
        if (step + 1) % steps_per_epoch == 0:
            losses.append(held_out_loss(trial, held, options))

    _fine_tune(trial, train_part, config, options, seed=seed, on_step=after_step)
    image_ids = tuple(sorted({support.instances[i].image_id for i in split.held_out}))
    choice = EpochChoice(int(np.argmin(losses)), tuple(losses), image_ids)
    log.info(
        "held-out loss by epoch %s: %d epochs chosen", [round(x, 6) for x in losses], choice.epochs
    )
    return choice


def fine_tune(
    model: nn.Module,
    support: TopDownDataset,
    config: AdaptConfig,
    options: DeviceOptions,
    *,
    seed: int = 0,
    on_start: Callable[[int], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """The meta-test: ``config.epochs`` epochs of shuffled batches over the support set.

    With ``config.select_epochs`` the count is first chosen on held-out shots
    (:func:`choose_epochs`), then that many epochs are taken from ``model``'s own weights on all
    the shots; a choice of 0 leaves ``model`` unchanged (and takes no step). ``on_start`` gets
    the number of steps about to be taken (after the choice), ``on_step`` each step and loss.
    """
    key = first_non_finite(model.state_dict())
    if key is not None:
        # Checked first: the loss would be NaN at step 1 and read as a divergence of this run.
        raise CheckFailed(
            f"the starting weights are not finite ({key} holds NaN or inf): the model was broken "
            "before fine-tuning; check the checkpoint"
        )
    if not config.select_epochs:
        return _fine_tune(
            model, support, config, options, seed=seed, on_start=on_start, on_step=on_step
        )
    choice = choose_epochs(model, support, config, options, seed=seed)
    if choice.epochs == 0:
        if on_start is not None:
            on_start(0)
        steps_per_epoch = EpochBatches(support, config.batch_size).batches_per_epoch
        return AdaptResult((), 0, steps_per_epoch, choice)
    chosen = replace(config, epochs=choice.epochs, select_epochs=False)
    result = _fine_tune(
        model, support, chosen, options, seed=seed, on_start=on_start, on_step=on_step
    )
    return replace(result, chosen=choice)


def _fine_tune(
    model: nn.Module,
    support: TopDownDataset,
    config: AdaptConfig,
    options: DeviceOptions,
    *,
    seed: int,
    on_start: Callable[[int], None] | None = None,
    on_step: Callable[[int, float], None] | None,
) -> AdaptResult:
    """``config.epochs`` epochs over ``support``, whatever ``config.select_epochs`` says."""
    stream = EpochBatches(support, config.batch_size, seed=seed)
    steps = config.epochs * stream.batches_per_epoch
    log.info("fine-tuning on %d crops: %d steps", len(support), steps)
    if on_start is not None:
        on_start(steps)
    if config.batchnorm == "reestimate":
        options.prepare(model)
        reestimate_batchnorm(model, list(itertools.islice(stream.batches(), 1)), options)
    result = adapt_by(model, stream.batches(), steps, config, options, on_step=on_step)
    return AdaptResult(result.losses, result.images, stream.batches_per_epoch)


def adapt_by(
    model: nn.Module,
    batches: Iterator[Sample],
    steps: int,
    config: AdaptConfig,
    options: DeviceOptions,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """:func:`adapt` with ``config``'s optimiser, head-only choice, backbone learning-rate scale,
    BatchNorm mode (statistics kept unless ``train``) and L2-SP strength."""
    return adapt(
        model,
        batches,
        steps,
        config.optimizer,
        options,
        head_only=config.head_only,
        backbone_lr_scale=config.backbone_lr_scale,
        frozen_batchnorm=config.batchnorm != "train",
        penalty=L2SP(model, config.l2sp) if config.l2sp > 0 else None,
        schedule=config.lr_schedule,
        on_step=on_step,
    )
