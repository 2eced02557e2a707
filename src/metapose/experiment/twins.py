"""The arms' semi-supervised twins (``ExperimentConfig.semi``): a twin, ``<arm>+<method>``,
starts from its arm and adapts on the arm's K shots plus the target's other pool images as
unlabelled people (:func:`metapose.inference.semi_adapt.adapt_with_unlabelled`), so that Table 1
can also ask whether the meta-learned start helps when unlabelled target images are at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from metapose.config import ConfigError, ExperimentConfig
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, instances_from_coco
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.evaluation.few_shot import UNADAPTED
from metapose.experiment.targets import Target
from metapose.inference.semi_adapt import adapt_with_unlabelled
from metapose.models import TopDownModel
from metapose.training.adapt import AdaptResult
from metapose.training.few_shot import choose_shots, support_set

Tune = Callable[[TopDownModel], AdaptResult | None]


def _boxed_people(target: Target, images: Sequence[int]) -> list[Instance]:
    """The annotated person boxes (not crowds, not empty) of ``images``, labels and all."""
    people = instances_from_coco(target.dataset, trainable_only=False, image_ids=images)
    return [p for p in people if p.box[2] > 0 and p.box[3] > 0]


def unlabelled_people(target: Target, shots: Sequence[int]) -> list[Instance]:
    """A twin's unlabelled people: one per annotated person box of the shot pool's images other
    than the job's ``shots``, keypoints all unknown (the labels are never read), as a COCO JSON
    of boxes gives them to ``metapose adapt --unlabelled``."""
    taken = set(shots)
    images = [i for i in target.pool_ids if i not in taken]
    return [replace(p, keypoints=np.zeros_like(p.keypoints)) for p in _boxed_people(target, images)]


def check_twin_pool(target: Target, shots: int) -> None:
    """Before any training: beside any ``shots`` images of ``target``'s pool there is one more
    with a person box (:func:`unlabelled_people` is never empty); else one :class:`DataError`
    naming the pool's annotation file."""
    boxed = {p.image_id for p in _boxed_people(target, target.pool_ids)}
    if len(boxed) <= shots:
        raise DataError(
            target.dataset.annotation_file,
            f"target {target.config.name!r}: the semi-supervised twins learn from the pool's "
            f"images other than the K = {shots} shots, but only {len(boxed)} pool images have a "
            "person box: give a larger pool or fewer shots",
        )


def twin_tune(
    cfg: ExperimentConfig,
    target: Target,
    k: int,
    seed: int,
    shot_seed: int,
    support_seed: int,
    codec: HeatmapCodec,
    options: DeviceOptions,
) -> tuple[list[int], Tune]:
    """A twin's job on ``target`` at K = ``k`` and ``seed``: its shots (its arm's, drawn by
    ``shot_seed`` and augmented by ``support_seed`` as
    :func:`~metapose.training.few_shot.fine_tune_on_shots` does; none at K = 0) and the
    adaptation on them plus :func:`unlabelled_people`, for ``adapt_and_score(..., tune=)``."""
    if cfg.semi is None:
        raise ConfigError("a semi-supervised twin needs the experiment's semi block")
    semi, data = cfg.semi, target.dataset
    shots = [] if k == UNADAPTED else choose_shots(data, k, shot_seed, pool=target.pool_ids)
    support = (
        support_set(data, shots, codec, augment=cfg.augment, seed=support_seed) if shots else None
    )
    people = unlabelled_people(target, shots)

    def tune(model: TopDownModel) -> AdaptResult | None:
        return adapt_with_unlabelled(
            model, support, people, cfg.adapt, semi, options, seed=seed
        ).shots

    return shots, tune
