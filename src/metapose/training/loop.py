"""The one training loop: steps over a batch stream with logging, validation, checkpoints, resume.

Supervised training (:mod:`metapose.training.train`) and Reptile (:mod:`metapose.training.meta`)
differ only by what one step does; each describes it as a :class:`Loop` (its step function, how
many batches a step takes, the optimiser and schedule its resume state keeps) and
:func:`run_loop` does the rest: the process group (each rank reads its own shard, only rank 0
writes), the run folder (:class:`~metapose.training.run_folder.RunFolder`: refusal of another
configuration, restore of the saved state and data position), the step log and ``on_step``,
validation every N steps, the resume state every ``checkpoint_every`` steps and the final model.
Step ``t`` reads batches ``t * batches_per_step`` onwards of the stream, so a resumed run sees the
batches it would have seen and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metapose.data.batches import BatchStream
from metapose.data.dataset import Sample
from metapose.models import TopDownModel
from metapose.training import distributed
from metapose.training.run_folder import History, RunFolder, StepLog, restore_state


@dataclass(frozen=True)
class StepResult:
    """What one step did, as the log reports it."""

    loss: float
    images: int  # images this process went through in the step
    lr: float  # the step size: the learning rate in training, the meta step beta in Reptile


@dataclass(frozen=True)
class Loop:
    """One kind of training run: its step function and what its resume state keeps.

    ``step(index, batches)`` runs step ``index`` (from 0) on the next ``batches_per_step`` batches
    of the stream. The resume state holds the model, the history and, when given, ``optimizer``
    and ``scheduler``; the final model's metadata counts the steps under ``count_key``.
    """

    name: str  # the run's log: ``<name>.csv``
    steps: int
    step: Callable[[int, Sequence[Sample]], StepResult]
    batches_per_step: int = 1
    checkpoint_every: int = 0  # steps; 0 = only at the end
    log_every: int = 10
    count_key: str = "step"
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def own_state(self, history: History) -> dict[str, Any]:
        """The loop's part of the resume state (beside the model and the step)."""
        own: dict[str, Any] = {}
        if self.optimizer is not None:
            own["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            own["scheduler"] = self.scheduler.state_dict()
        return {**own, "history": history.to_dict()}


def run_loop(
    model: TopDownModel,
    stream: BatchStream,
    loop: Loop,
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
    """Run ``loop`` on ``model`` (in place, already on ``device``) for ``loop.steps`` steps.

    With ``out_dir`` a CSV log, the resumable state (every ``checkpoint_every`` steps) and
    ``model.safetensors`` (at the end) are written there; with ``resume`` a state found there is
    continued, provided it was made with the same ``run_config`` and ``init`` (the checkpoint
    the weights came from), else ConfigError. ``validate(model)`` runs on rank 0 every
    ``validate_every`` steps; its metrics go to ``history.evals`` and ``val.csv``, and the
    modules' train/eval modes are restored after it. An error raised by a step (DivergedError
    on a NaN or infinite loss) leaves the last saved state as it was.
    """
    dist_info = distributed.current()
    if dist_info.active:
        stream = stream.sharded(dist_info.rank, dist_info.world_size)
    history = History()
    start = 0
    folder = RunFolder(
        out_dir, loop.name, is_main=dist_info.is_main, run_config=run_config, init=init
    )
    state = folder.resume_state(device, resume, total=loop.steps)
    if state is not None:
        history = restore_state(folder.state_path, state, model, loop.optimizer, loop.scheduler)
        start = state["step"]

    batches: Iterator[Sample] = stream.batches(start * loop.batches_per_step)
    images = history.images_seen
    t0 = time.perf_counter()
    for step in range(start, loop.steps):
        done = loop.step(step, [next(batches) for _ in range(loop.batches_per_step)])
        images += done.images * dist_info.world_size
        entry = StepLog(step + 1, images, done.loss, done.lr, time.perf_counter() - t0)
        folder.record_step(history, entry, total=loop.steps, log_every=loop.log_every)
        if on_step is not None:
            on_step(entry)
        if validate is not None and dist_info.is_main and _due(step + 1, validate_every):
            _validate(model, validate, step + 1, history, folder)
        if _due(step + 1, loop.checkpoint_every):
            folder.save(model, step + 1, loop.own_state(history))

    if dist_info.active:
        distributed.broadcast_buffers_(model)
    if folder.writes:
        folder.save(model, loop.steps, loop.own_state(history))
    folder.finish(
        model,
        loop.steps,
        extra={loop.count_key: loop.steps, "images_seen": images},
        steps_run=loop.steps - start,
    )
    return history


def _due(step: int, every: int) -> bool:
    """Whether what is done every ``every`` steps (0: never) is due after ``step`` steps."""
    return every > 0 and step % every == 0


def _validate(
    model: TopDownModel,
    validate: Callable[[TopDownModel], dict[str, float]],
    step: int,
    history: History,
    folder: RunFolder,
) -> None:
    """``validate(model)`` after ``step`` steps, logged; every module keeps its train/eval mode
    (a frozen BatchNorm stays in eval)."""
    modes = [m.training for m in model.modules()]
    metrics = {"step": step, **validate(model)}
    history.evals.append(metrics)
    folder.write_val(metrics)
    for module, training in zip(model.modules(), modes, strict=True):
        module.training = training
