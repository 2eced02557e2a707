"""Distillation from a larger teacher on unlabelled target people (``SemiConfig.method:
distill``): the teacher, first fine-tuned on the shots, labels the unlabelled people with flip
test; its confident joints become labels; the model being adapted (the student) then learns on
those and the shots (:func:`metapose.training.semi.fine_tune_on_pseudo_labels`).

The labels are keypoints in image pixels, so teacher and student need not share an input size,
heatmap size or codec: each crops and encodes through its own (the 256x192 zoo model teaches the
128x96 one). This module is in the inference phase because labelling is prediction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from metapose.config import AdaptConfig, ConfigError
from metapose.config.training import SemiConfig
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, TopDownDataset
from metapose.data.unlabelled import main_people
from metapose.device import DeviceOptions
from metapose.inference.crop_runner import predict, torch_heatmap_fn
from metapose.models import TopDownModel
from metapose.progress import Progress, SilentProgress
from metapose.skeleton import COCO17, Skeleton
from metapose.training.adapt import fine_tune
from metapose.training.semi import SemiResult, fine_tune_on_pseudo_labels

log = logging.getLogger(__name__)

LABELLED = 2.0  # COCO's visibility flag for a labelled joint
_SUBSET_STREAM = 3  # the draw of the people to label: a stream of its own beside the seed


@dataclass(frozen=True)
class PseudoLabels:
    """The people a teacher labelled confidently enough, and how confident it was overall."""

    people: tuple[Instance, ...]  # keypoints in image pixels; unconfident joints flagged 0
    labelled: int  # people the teacher saw
    confident: float  # share of all their joints at or above the threshold


def pseudo_label(
    teacher: TopDownModel,
    people: Sequence[Instance],
    options: DeviceOptions,
    *,
    threshold: float,
    min_joints: int,
    flip: bool = True,
    scales: Sequence[float] = (1.0,),
    skeleton: Skeleton = COCO17,
    on_batch: Callable[[int], None] | None = None,
) -> PseudoLabels:
    """``teacher``'s poses of ``people`` (cropped by its own codec, flip test with ``flip``) as
    labels: joints scored at least ``threshold`` are labelled, the others unknown (flag 0, not
    learnt); people with fewer than ``min_joints`` labelled joints are left out.

    ``scales``: the multi-scale test. The teacher also sees each person's box scaled about its
    centre by each factor (the person smaller in a wider crop for a factor above 1); a joint's
    label is the mean of its image positions over the scales, weighted by the scores, and its
    score the mean score. ``on_batch`` counts each scale's crops."""
    if not people:
        return PseudoLabels((), 0, 0.0)
    codec = HeatmapCodec.for_model(teacher.config)
    heatmap_fn = torch_heatmap_fn(teacher, options)
    views = []
    for factor in scales:
        scaled = [replace(p, box=scaled_box(p.box, factor)) for p in people]
        crops = TopDownDataset(scaled, codec, targets=False, skeleton=skeleton)
        found = predict(heatmap_fn, crops, flip=flip, skeleton=skeleton, on_batch=on_batch)
        views.append(np.stack([np.asarray(q.keypoints, np.float32) for q in found]))
    poses = merge_scales(views)
    kept: list[Instance] = []
    confident = 0
    for person, pose in zip(people, poses, strict=True):
        keypoints = pose.copy()
        sure = keypoints[:, 2] >= threshold
        confident += int(sure.sum())
        if int(sure.sum()) < max(min_joints, 1):
            continue
        keypoints[:, 2] = np.where(sure, LABELLED, 0.0)
        keypoints[~sure, :2] = 0.0
        kept.append(replace(person, keypoints=keypoints))
    total = max(1, len(people) * skeleton.num_keypoints)
    return PseudoLabels(tuple(kept), len(people), confident / total)


def scaled_box(
    box: tuple[float, float, float, float], factor: float
) -> tuple[float, float, float, float]:
    """An ``(x, y, w, h)`` box scaled by ``factor`` about its centre."""
    x, y, w, h = box
    return (x + w * (1 - factor) / 2, y + h * (1 - factor) / 2, w * factor, h * factor)


def merge_scales(views: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, K, 3)`` poses (image x, y, score) of the same people at several scales as one: each
    joint's position is the score-weighted mean over the views (the plain mean where every score
    is 0) and its score the mean score. One view is returned as it is."""
    if len(views) == 1:
        return np.asarray(views[0], np.float32)
    stacked = np.stack(views).astype(np.float64)  # (V, N, K, 3)
    weights = np.clip(stacked[..., 2:], 0.0, None)
    total = weights.sum(axis=0)
    plain = stacked[..., :2].mean(axis=0)
    weighted = (weights * stacked[..., :2]).sum(axis=0) / np.where(total > 0, total, 1.0)
    xy = np.where(total > 0, weighted, plain)
    return np.concatenate([xy, stacked[..., 2:].mean(axis=0)], axis=-1).astype(np.float32)


def people_to_label(
    unlabelled: Sequence[Instance], config: SemiConfig, seed: int
) -> list[Instance]:
    """The people distillation labels: ``unlabelled`` less the small ones in the background
    (``config.min_relative_height``), then, from a larger set, ``config.crops_seen`` of them
    drawn by ``seed``: the student sees each once, and the teacher's cost stops growing."""
    people = main_people(unlabelled, config.min_relative_height)
    if len(people) < len(unlabelled):
        log.info("left out %d small people in the background", len(unlabelled) - len(people))
    budget = config.crops_seen
    if len(people) > budget:
        rng = np.random.default_rng((seed, _SUBSET_STREAM))
        people = [people[int(i)] for i in sorted(rng.choice(len(people), budget, replace=False))]
        log.info(
            "labelling %d of %d unlabelled people (one each a crop seen)", budget, len(unlabelled)
        )
    return people


def adapt_teacher(
    teacher: TopDownModel,
    support: TopDownDataset,
    adapt_config: AdaptConfig,
    options: DeviceOptions,
    *,
    seed: int = 0,
    skeleton: Skeleton = COCO17,
    progress: Progress | None = None,
) -> None:
    """Fine-tune ``teacher`` in place on ``support``'s people by ``adapt_config``, as
    distillation does before the teacher labels: the same people, augmentation and augmentation
    seed, cropped by the teacher's own codec (``support`` is cropped for the student). The
    teacher must already be on ``options``' device (``options.prepare``)."""
    progress = SilentProgress() if progress is None else progress
    own = TopDownDataset(
        support.instances,
        HeatmapCodec.for_model(teacher.config),
        augment=support.augment,
        seed=support.seed,
        cache_images=True,
        skeleton=skeleton,
    )
    steps: list[Callable[[int], None]] = []
    fine_tune(
        teacher,
        own,
        adapt_config,
        options,
        seed=seed,
        on_start=lambda n: steps.append(progress.stage(f"teacher: adapt on {len(own)} shots", n)),
        on_step=lambda step, loss: steps[-1](1),
    )
    progress.close_stage()


def distill_from_teacher(
    model: TopDownModel,
    teacher: TopDownModel,
    support: TopDownDataset | None,
    unlabelled: Sequence[Instance],
    adapt_config: AdaptConfig,
    config: SemiConfig,
    options: DeviceOptions,
    *,
    seed: int = 0,
    skeleton: Skeleton = COCO17,
    flip: bool = True,
    progress: Progress | None = None,
) -> SemiResult:
    """Adapt ``model`` in place by distillation from ``teacher`` (changed in place too).

    With shots (``support``, cropped for ``model``) and ``config.teacher_adapt`` the teacher is
    first fine-tuned on the same people by ``adapt_config`` (its own crops, the same augmentation
    and seed); it then labels ``unlabelled`` (:func:`pseudo_label`, ``config.threshold`` and
    ``config.min_joints``), and ``model`` takes ``config.steps`` steps on those labels and the shots
    (:func:`~metapose.training.semi.fine_tune_on_pseudo_labels`). The student sees
    ``config.steps * config.unlabelled_batch`` pseudo-labelled crops, so from a larger set only
    that many people, drawn by ``seed``, are labelled: each is then seen once, and the teacher's
    cost stops growing with the set. ``flip``: the teacher's flip test. The result's ``shots`` is
    the student's training.
    """
    if teacher.config.num_keypoints != model.config.num_keypoints:
        raise ConfigError(
            f"the teacher predicts {teacher.config.num_keypoints} keypoints and the model "
            f"{model.config.num_keypoints}: a teacher must share the model's skeleton"
        )
    progress = SilentProgress() if progress is None else progress
    options.prepare(model)
    options.prepare(teacher)
    people = people_to_label(unlabelled, config, seed)
    if support is not None and len(support) == 0:
        support = None
    shots = 0 if support is None else len({p.image_id for p in support.instances})
    if config.teacher_on_few_shots(shots):
        log.warning(
            "distill fine-tunes its teacher on only %d labelled images; with so few the teacher "
            "can end worse than it started, and the model with it (README: 'Unlabelled images "
            "of the domain'). `metapose adapt --teacher-as-is` (SemiConfig.teacher_adapt=False) "
            "labels with the teacher as it is",
            shots,
        )
    if support is not None and config.teacher_adapt:
        adapt_teacher(
            teacher, support, adapt_config, options, seed=seed, skeleton=skeleton, progress=progress
        )
    scales = config.teacher_scales
    advance = progress.stage(
        f"teacher: label {len(people)} people"
        + (f" at {len(scales)} scales" if len(scales) > 1 else ""),
        len(people) * len(scales),
    )
    labels = pseudo_label(
        teacher,
        people,
        options,
        threshold=config.threshold,
        min_joints=config.min_joints,
        flip=flip,
        scales=scales,
        skeleton=skeleton,
        on_batch=advance,
    )
    progress.close_stage()
    log.info(
        "teacher labelled %d of %d people (%.0f %% of joints confident)",
        len(labels.people),
        labels.labelled,
        100 * labels.confident,
    )
    student = progress.stage(f"distil into the model: {len(labels.people)} people", config.steps)
    result = fine_tune_on_pseudo_labels(
        model,
        support,
        labels.people,
        adapt_config,
        config,
        options,
        codec=HeatmapCodec.for_model(model.config),
        seed=seed,
        skeleton=skeleton,
        on_step=lambda step, loss: student(1),
    )
    progress.close_stage()
    return SemiResult(
        "distill",
        result,
        len(unlabelled),
        losses=result.losses,
        confident=(labels.confident,),
    )
