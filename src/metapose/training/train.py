"""Supervised training, the paper's baseline (§4.2): Adam with step decay on JointsMSE.

Trains on any :class:`~metapose.data.batches.BatchStream` (the synthetic stream or COCO-format
folders) for a budget of optimiser steps. The step is one forward, loss, backward and update
(:func:`metapose.training.step.step_on_batch`; under torchrun through DistributedDataParallel);
logging, validation, checkpoints and the exact resume (model, optimiser, schedule and data
position, so an interrupted run ends with the same bytes as an uninterrupted one) are the one
training loop's, :func:`metapose.training.loop.run_loop`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metapose.config import TrainConfig
from metapose.data.batches import BatchStream
from metapose.data.dataset import Sample
from metapose.device import DeviceOptions
from metapose.errors import check_finite_loss
from metapose.models import TopDownModel
from metapose.training import distributed
from metapose.training.loop import Loop, StepResult, run_loop
from metapose.training.run_folder import History, StepLog
from metapose.training.step import build_optimizer, step_on_batch, train_mode


def lr_milestone_steps(config: TrainConfig) -> list[int]:
    return sorted({max(1, round(m * config.steps)) for m in config.lr_milestones})


def train(
    model: TopDownModel,
    stream: BatchStream,
    config: TrainConfig,
    device: torch.device,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    run_config: Any = None,
    on_step: Callable[[StepLog], None] | None = None,
    validate: Callable[[TopDownModel], dict[str, float]] | None = None,
    validate_every: int = 0,
    init: str | None = None,
) -> History:
    """Train ``model`` in place for ``config.steps`` steps; returns the loss history.

    The run folder ``out_dir`` (CSV log, resume state every ``checkpoint_every`` steps, final
    ``model.safetensors``), ``resume`` (refused for another ``run_config`` or ``init``),
    ``on_step`` and ``validate`` (every ``validate_every`` steps, ``val.csv``) are those of the
    one training loop, :func:`metapose.training.loop.run_loop`. A NaN or infinite loss raises
    DivergedError and leaves the last state as it was.
    """
    options = DeviceOptions(device, config.amp, config.channels_last)
    options.prepare(model)
    net: nn.Module = model
    if distributed.current().active:
        # Under torchrun: gradients are averaged across ranks (each rank reads its own batches).
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, lr_milestone_steps(config), config.lr_gamma
    )
    train_mode(model, config.batchnorm == "frozen")

    def step(index: int, batches: Sequence[Sample]) -> StepResult:
        (batch,) = batches
        loss = step_on_batch(net, optimizer, batch, options)
        check_finite_loss(loss, index + 1)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        return StepResult(loss, int(batch.image.shape[0]), lr)

    loop = Loop(
        "train",
        config.steps,
        step,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        optimizer=optimizer,
        scheduler=scheduler,
    )
    return run_loop(
        model,
        stream,
        loop,
        device,
        out_dir=out_dir,
        resume=resume,
        run_config=run_config,
        on_step=on_step,
        validate=validate,
        validate_every=validate_every,
        init=init,
    )
