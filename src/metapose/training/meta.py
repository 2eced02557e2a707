"""Reptile meta-training of the initial weights (Nichol, Achiam & Schulman, 2018; the paper's §3.3).

Each meta step draws tasks (a task is one batch of augmented source crops, §3.1), adapts a copy of
the weights to each with a fresh inner optimiser (:func:`metapose.training.adapt.adapt`, Algorithm 1
lines 6-8) and moves the weights a meta step ``beta`` towards the mean adapted weights (eq. 2):
``theta <- theta + beta * mean_i(theta'_i - theta)``. :func:`meta_train` is that meta step
(:func:`reptile_step`) plugged into the one training loop, :func:`metapose.training.loop.run_loop`,
which logs, checkpoints and resumes it as it does supervised training.

Algorithm 1's line 10 as printed (``theta = theta + beta(theta_new - theta_old)`` after ``theta``
was overwritten by the inner loop) would extrapolate past the adapted weights; eq. 2 and Reptile
interpolate, which is what is implemented. The full state is interpolated: parameters and
BatchNorm running statistics; integer buffers (``num_batches_tracked``) are copied from the last
adapted copy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
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
from metapose.training.loop import Loop, StepResult, run_loop
from metapose.training.run_folder import History, StepLog

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

    Meta step ``t`` adapts to batches ``t * tasks_per_step`` onwards of ``tasks``, so a resumed
    run sees the tasks it would have seen. The run folder ``out_dir``, ``resume``, ``run_config``,
    ``init`` and ``on_step`` are those of the one training loop,
    :func:`metapose.training.loop.run_loop`, as in :func:`metapose.training.train.train`. A NaN
    or infinite loss raises DivergedError naming the meta step and the inner step.
    """
    options = DeviceOptions(device, config.amp, config.channels_last)
    options.prepare(model)

    def step(index: int, batch: Sequence[Sample]) -> StepResult:
        beta = config.beta(index)
        try:
            loss = reptile_step(model, batch, config, options, beta=beta)
        except DivergedError as err:
            if err.loss is None:
                raise
            where = f"meta step {index + 1} (inner step {err.step})"
            raise diverged(err.loss, where, "task loss", step=index + 1) from None
        images = sum(int(t.image.shape[0]) for t in batch) * config.inner_steps
        return StepResult(loss, images, beta)

    loop = Loop(
        "meta",
        config.meta_steps,
        step,
        batches_per_step=config.tasks_per_step,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        count_key="meta_steps",
    )
    return run_loop(
        model,
        tasks,
        loop,
        device,
        out_dir=out_dir,
        resume=resume,
        run_config=run_config,
        on_step=on_step,
        init=init,
    )
