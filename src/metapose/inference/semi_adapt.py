"""Few-shot adaptation with unlabelled people by the configured method (``SemiConfig.method``):
the one place that chooses between :func:`metapose.training.semi.fine_tune_with_unlabelled`
(``adabn``, ``mean_teacher``) and :func:`metapose.inference.distill.distill_from_teacher`
(``distill``, whose teacher is loaded here). ``metapose adapt --unlabelled`` and the experiment's
semi-supervised twins both call :func:`adapt_with_unlabelled`; it is in the inference phase
because distillation is (its teacher predicts the labels).
"""

from __future__ import annotations

from collections.abc import Sequence

from metapose.config import AdaptConfig
from metapose.config.training import SemiConfig
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, TopDownDataset
from metapose.device import DeviceOptions
from metapose.inference.distill import distill_from_teacher
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint
from metapose.progress import Progress, SilentProgress
from metapose.skeleton import COCO17, Skeleton
from metapose.training.semi import SemiResult, fine_tune_with_unlabelled


def adapt_with_unlabelled(
    model: TopDownModel,
    support: TopDownDataset | None,
    unlabelled: Sequence[Instance],
    adapt_config: AdaptConfig,
    config: SemiConfig,
    options: DeviceOptions,
    *,
    seed: int = 0,
    flip: bool | None = None,
    skeleton: Skeleton = COCO17,
    progress: Progress | None = None,
) -> SemiResult:
    """Adapt ``model`` in place on the labelled ``support`` (None: K = 0) and the ``unlabelled``
    people by ``config.method``; the result's ``shots`` is the fine-tune on the shots (for
    ``distill``, the student's training on shots and pseudo-labels; None for the others at K = 0).

    ``distill`` loads ``config.teacher`` (a zoo name or a checkpoint file) afresh on every call,
    since the teacher is fine-tuned on the shots in place. ``flip``: the flip test of the model
    that makes the labels (the teacher; the mean teacher's EMA copy of ``model``), by default that
    model's own ``codec.flip_test``. The unlabelled crops are cut by ``model``'s codec.
    ``progress`` sees the stages and their steps.
    """
    progress = SilentProgress() if progress is None else progress
    if config.method == "distill":
        teacher = load_checkpoint(config.teacher, options.device).model
        return distill_from_teacher(
            model,
            teacher,
            support,
            unlabelled,
            adapt_config,
            config,
            options,
            seed=seed,
            skeleton=skeleton,
            flip=teacher.config.codec.flip_test if flip is None else flip,
            progress=progress,
        )
    steps = config.steps if config.method == "mean_teacher" else 0
    advance = progress.stage(f"{config.method} on {len(unlabelled)} unlabelled people", steps)
    result = fine_tune_with_unlabelled(
        model,
        support,
        unlabelled,
        adapt_config,
        config,
        options,
        codec=HeatmapCodec.for_model(model.config),
        seed=seed,
        skeleton=skeleton,
        flip=model.config.codec.flip_test if flip is None else flip,
        on_step=lambda step, loss: advance(1),
    )
    progress.close_stage()
    return result
