"""The few-shot recipe of the paper's meta-test (§3.3, §4.3): draw K labelled images of the new
domain, make them the support set (augmented person crops), fine-tune on it.

:func:`fine_tune_on_shots` is the one place the recipe is written;
:func:`metapose.evaluation.few_shot.adapt_and_score` (the whole job: fine-tune and score, for
``metapose adapt``, the experiment and the benchmarks) and the README's example call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from metapose.config import AdaptConfig, ConfigError, TopDownAugmentConfig, check_seed
from metapose.data.coco import CocoDataset
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import TopDownDataset, instances_from_coco
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.progress import Progress
from metapose.training.adapt import AdaptResult, fine_tune


def labelled_images(dataset: CocoDataset, pool: Sequence[int] | None = None) -> list[int]:
    """The ids of ``pool``'s images (default: all) with a labelled person, sorted."""
    allowed = None if pool is None else set(pool)
    return sorted(
        {
            a.image_id
            for a in dataset.annotations
            if a.trainable and (allowed is None or a.image_id in allowed)
        }
    )


def choose_shots(
    dataset: CocoDataset, k: int | None, seed: int, *, pool: Sequence[int] | None = None
) -> list[int]:
    """K image ids with a labelled person, drawn from ``pool`` (default: all) by ``seed``;
    ``k=None``: every labelled image of the pool."""
    if k is None:
        return labelled_images(dataset, pool)
    if k < 1:
        raise ConfigError(f"shots must be >= 1, got {k}")
    check_seed("", "seed", seed)
    candidates = labelled_images(dataset, pool)
    if k > len(candidates):
        raise DataError(
            dataset.annotation_file,
            f"asked for {k} shots but the pool has only {len(candidates)} labelled images: "
            "ask for fewer shots or give a larger pool",
        )
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(candidates, size=k, replace=False))


def support_set(
    data: CocoDataset,
    shots: Sequence[int],
    codec: HeatmapCodec,
    *,
    augment: TopDownAugmentConfig | None = None,
    seed: int = 0,
) -> TopDownDataset:
    """The support set: the people of the ``shots`` images, cropped by ``codec`` and augmented
    with ``augment`` (default: SimpleBaseline's) drawn by ``seed``; images kept in memory."""
    return TopDownDataset(
        instances_from_coco(data, image_ids=shots),
        codec,
        augment=TopDownAugmentConfig() if augment is None else augment,
        seed=seed,
        cache_images=True,
    )


@dataclass(frozen=True)
class FewShotResult:
    """The image ids fine-tuned on and what the fine-tune did."""

    shot_image_ids: tuple[int, ...]
    adapt: AdaptResult


def fine_tune_on_shots(
    model: TopDownModel,
    data: CocoDataset,
    shots: int | Sequence[int],
    config: AdaptConfig,
    options: DeviceOptions,
    *,
    codec: HeatmapCodec | None = None,
    seed: int = 0,
    shot_seed: int | None = None,
    support_seed: int | None = None,
    pool: Sequence[int] | None = None,
    augment: TopDownAugmentConfig | None = None,
    progress: Progress | None = None,
) -> FewShotResult:
    """Fine-tune ``model`` in place on K labelled images of ``data``.

    ``shots`` is K (the images are then drawn from ``pool``, default all, by ``shot_seed``) or
    the image ids themselves. The support set is their people, cropped by ``codec`` (default: the
    model's own) and augmented
    with ``augment`` (default: SimpleBaseline's) drawn by ``support_seed``; ``seed`` orders the
    batches (:func:`metapose.training.adapt.fine_tune`). Both seeds default to ``seed``.
    ``progress``: report reading the images and the fine-tune's steps.
    """
    for name, value in (("seed", seed), ("shot_seed", shot_seed), ("support_seed", support_seed)):
        if value is not None:
            check_seed("", name, value)
    if isinstance(shots, int):
        shots = choose_shots(data, shots, seed if shot_seed is None else shot_seed, pool=pool)
    support = support_set(
        data,
        shots,
        HeatmapCodec.for_model(model.config) if codec is None else codec,
        augment=augment,
        seed=seed if support_seed is None else support_seed,
    )
    on_start: Callable[[int], None] | None = None
    on_step: Callable[[int, float], None] | None = None
    if progress is not None:
        support.preload(progress)
        advance: list[Callable[[int], None]] = []

        def on_start(steps: int) -> None:  # the steps taken: fewer when select_epochs chose
            advance.append(progress.stage(f"adapt on {len(shots)} images", steps))

        def on_step(step: int, loss: float) -> None:
            advance[-1](1)

    result = fine_tune(
        model, support, config, options, seed=seed, on_start=on_start, on_step=on_step
    )
    if progress is not None:
        progress.close_stage()
    return FewShotResult(tuple(shots), result)
