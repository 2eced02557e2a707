"""Reptile meta-training of the initial weights (Nichol, Achiam & Schulman, 2018; the paper's §3.3).

Each meta step draws tasks (a task is one batch of augmented source crops, §3.1), adapts a copy of
the weights to each with a fresh inner optimiser (:func:`metapose.training.adapt.adapt`, Algorithm 1
lines 6-8) and moves the weights a meta step ``beta`` towards the mean adapted weights (eq. 2):
``theta <- theta + beta * mean_i(theta'_i - theta)``.

Algorithm 1's line 10 as printed (``theta = theta + beta(theta_new - theta_old)`` after ``theta``
was overwritten by the inner loop) would extrapolate past the adapted weights; eq. 2 and Reptile
interpolate, which is what is implemented. The full state is interpolated: parameters and
BatchNorm running statistics; integer buffers (``num_batches_tracked``) are copied from the last
adapted copy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metapose.config import ReptileConfig
from metapose.data.batches import BatchStream
from metapose.data.dataset import Sample
from metapose.device import DeviceOptions
from metapose.errors import DivergedError, diverged
from metapose.models import TopDownModel
from metapose.training import distributed
from metapose.training.adapt import adapt
from metapose.training.run_folder import History, RunFolder, StepLog, restore_state

State = dict[str, torch.Tensor]


# ------------------------------------------------------------------------ weight arithmetic


def clone_state(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def interpolate_states(old: State, targets: Sequence[State], beta: float) -> State:
    """``old + beta * mean(target - old)`` for floating tensors; others from the last target.

    ``torch.lerp`` computes the interpolation so that beta 0 and beta 1 give ``old`` and the
    (mean) target exactly, not up to rounding.
    """
    out: State = {}
    for key, value in old.items():
        if value.is_floating_point():
            mean_target = torch.stack([t[key] for t in targets]).mean(dim=0)
            out[key] = torch.lerp(value, mean_target, beta)
        else:
            out[key] = targets[-1][key].clone()
    return out


def reptile_step(
    model: nn.Module,
    tasks: Sequence[Sample],
    config: ReptileConfig,
    options: DeviceOptions,
    *,
    beta: float | None = None,
) -> float:
    """One meta step over ``tasks``: snapshot, adapt to each, restore, interpolate.

    Returns the mean inner loss of the first inner step (the pre-adaptation task loss).
    """
    beta = config.meta_step if beta is None else beta
    before = clone_state(model)
    adapted: list[State] = []
    first_losses = []
    for task in tasks:
        model.load_state_dict(before)
        result = adapt(
            model,
            itertools.repeat(task),
            config.inner_steps,
            config.inner,
            options,
            frozen_batchnorm=config.batchnorm == "frozen",
        )
        first_losses.append(result.losses[0])
        adapted.append(clone_state(model))
    if distributed.current().active:
        # Every rank adapted to its own tasks: average the adapted weights over all of them.
        local_mean = interpolate_states(before, adapted, 1.0)
        for value in local_mean.values():
            if value.is_floating_point():
                distributed.mean_across_ranks_(value)
        adapted = [local_mean]
    model.load_state_dict(interpolate_states(before, adapted, beta))
    return float(sum(first_losses) / len(first_losses))


def meta_train(
    model: TopDownModel,
    tasks: BatchStream,
    config: ReptileConfig,
    device: torch.device,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    run_config: Any = None,
    on_step: Callable[[StepLog], None] | None = None,
    init: str | None = None,
) -> History:
    """Reptile for ``config.meta_steps`` meta steps on a stream of task batches, in place.

    Task ``t`` is batch ``t`` of ``tasks``, so a resumed run sees the tasks it would have seen.
    Checkpoints and the resume state go to ``out_dir`` as in :func:`metapose.training.train.train`
    (same refusal of a different configuration, same stop on a NaN or infinite loss).
    """
    options = DeviceOptions(device, config.amp, config.channels_last)
    options.prepare(model)
    dist_info = distributed.current()
    if dist_info.active:
        tasks = tasks.sharded(dist_info.rank, dist_info.world_size)
    history = History()
    start = 0
    folder = RunFolder(out_dir, "meta", is_main=dist_info.is_main, run_config=run_config, init=init)
    state = folder.resume_state(device, resume, total=config.meta_steps)
    if state is not None:
        history = restore_state(folder.state_path, state, model)
        start = state["step"]

    def save(step: int) -> None:
        folder.save(model, step, {"history": history.to_dict()})

    stream: Iterator[Sample] = tasks.batches(start * config.tasks_per_step)
    images = history.images_seen
    t0 = time.perf_counter()
    for step in range(start, config.meta_steps):
        batch = [next(stream) for _ in range(config.tasks_per_step)]
        beta = config.beta(step)
        try:
            loss = reptile_step(model, batch, config, options, beta=beta)
        except DivergedError as err:
            if err.loss is None:
                raise
            where = f"meta step {step + 1} (inner step {err.step})"
            raise diverged(err.loss, where, "task loss", step=step + 1) from None
        images += (
            sum(int(t.image.shape[0]) for t in batch) * config.inner_steps * dist_info.world_size
        )
        entry = StepLog(step + 1, images, loss, beta, time.perf_counter() - t0)
        folder.record_step(history, entry, total=config.meta_steps, log_every=config.log_every)
        if on_step is not None:
            on_step(entry)
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save(step + 1)
    if folder.writes:
        save(config.meta_steps)
    folder.finish(
        model,
        config.meta_steps,
        extra={"meta_steps": config.meta_steps, "images_seen": images},
        steps_run=config.meta_steps - start,
    )
    return history
