"""Supervised training, the paper's baseline (§4.2): Adam with step decay on JointsMSE.

Trains on any :class:`~metapose.data.batches.BatchStream` (the synthetic stream or COCO-format
folders) for a budget of optimiser steps, checkpoints every N steps and resumes exactly: model,
optimiser, schedule and data position are restored, so an interrupted run ends with the same
bytes as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metapose.config import TrainConfig
from metapose.data.batches import BatchStream
from metapose.device import DeviceOptions
from metapose.errors import check_finite_loss
from metapose.models import TopDownModel
from metapose.training import distributed
from metapose.training.run_folder import History, RunFolder, StepLog, restore_state
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

    With ``out_dir`` a CSV log, the resumable state (every ``checkpoint_every`` steps) and
    ``model.safetensors`` (at the end) are written there; with ``resume`` a state found there is
    continued, provided it was made with the same ``run_config`` and ``init`` (the checkpoint
    the weights came from), else ConfigError. A NaN or infinite loss raises DivergedError and
    leaves the last state as it was.
    """
    options = DeviceOptions(device, config.amp, config.channels_last)
    options.prepare(model)
    dist_info = distributed.current()
    net: nn.Module = model
    if dist_info.active:
        # Under torchrun: gradients are averaged across ranks, each rank reads its own batches.
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        stream = stream.sharded(dist_info.rank, dist_info.world_size)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, lr_milestone_steps(config), config.lr_gamma
    )
    history = History()
    start = 0
    folder = RunFolder(
        out_dir, "train", is_main=dist_info.is_main, run_config=run_config, init=init
    )
    state = folder.resume_state(device, resume, total=config.steps)
    if state is not None:
        history = restore_state(folder.state_path, state, model, optimizer, scheduler)
        start = state["step"]

    def save(step: int) -> None:
        own = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history.to_dict(),
        }
        folder.save(model, step, own)

    t0 = time.perf_counter()
    images = history.images_seen
    batches = stream.batches(start)
    train_mode(model, config.batchnorm == "frozen")
    for step in range(start, config.steps):
        batch = next(batches)
        loss = step_on_batch(net, optimizer, batch, options)
        check_finite_loss(loss, step + 1)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        images += int(batch.image.shape[0]) * dist_info.world_size
        entry = StepLog(step + 1, images, loss, lr, time.perf_counter() - t0)
        folder.record_step(history, entry, total=config.steps, log_every=config.log_every)
        if on_step is not None:
            on_step(entry)
        if (
            validate is not None
            and validate_every
            and (step + 1) % validate_every == 0
            and dist_info.is_main
        ):
            metrics = {"step": step + 1, **validate(model)}
            history.evals.append(metrics)
            folder.write_val(metrics)
            train_mode(model, config.batchnorm == "frozen")
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save(step + 1)

    if dist_info.active:
        distributed.broadcast_buffers_(model)
    if folder.writes:
        save(config.steps)
    folder.finish(
        model,
        config.steps,
        extra={"step": config.steps, "images_seen": images},
        steps_run=config.steps - start,
    )
    return history
