"""The few-shot job of ``metapose adapt``, the experiment and the benchmarks: split a labelled
pool by image id, draw K shots, fine-tune on them and score on a held-out split before and after.

:func:`adapt_and_score` is the one place the job is assembled; the recipe itself (the support
set and the fine-tune) is :func:`metapose.training.few_shot.fine_tune_on_shots`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from metapose.config import AdaptConfig, TopDownAugmentConfig
from metapose.data.coco import CocoDataset
from metapose.data.codec import HeatmapCodec
from metapose.device import DeviceOptions
from metapose.evaluation.coco import EvalResult
from metapose.evaluation.evaluate import EvalSet, evaluate
from metapose.inference.estimators import torch_estimator
from metapose.models import TopDownModel
from metapose.progress import Progress
from metapose.training.adapt import AdaptResult
from metapose.training.few_shot import fine_tune_on_shots
from metapose.training.run_folder import check_finite_weights

UNADAPTED = 0  # K = 0: the model is scored as it is


def image_ids_in(data: CocoDataset, id_range: tuple[int, int]) -> list[int]:
    """The ids of ``data``'s images in ``lo..hi`` (both included), in the file's order."""
    lo, hi = id_range
    return [i.id for i in data.images if lo <= i.id <= hi]


def split_by_ids(
    data: CocoDataset, pool: tuple[int, int] | None, test: tuple[int, int] | None
) -> tuple[list[int] | None, list[int]]:
    """The shot pool's and the held-out split's image ids of ``data`` by id ranges. Without a
    ``pool`` range the pool is every image (``None``) or, with a ``test`` range, every image
    outside it; without a ``test`` range the held-out split is empty."""
    test_ids = [] if test is None else image_ids_in(data, test)
    if pool is not None:
        return image_ids_in(data, pool), test_ids
    if test is None:
        return None, test_ids
    held = set(test_ids)
    return [i.id for i in data.images if i.id not in held], test_ids


@contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Run a block (an evaluation) without touching torch's random state (CPU and ``device``),
    the state a fine-tune would draw from; the library's own draws take explicit generators."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


@dataclass(frozen=True)
class FewShotScore:
    """What one few-shot job did: the shots, the fine-tune and the scores on the test split."""

    shot_image_ids: tuple[int, ...]  # empty: not adapted (K = 0)
    adapt: AdaptResult | None  # None: not adapted
    before: EvalResult | None  # the start's score (with ``score_before``)
    after: EvalResult | None  # None: no test split

    @property
    def epoch_losses(self) -> tuple[float, ...]:
        return () if self.adapt is None else self.adapt.epoch_losses


def adapt_and_score(
    model: TopDownModel,
    data: CocoDataset | None,
    shots: int | Sequence[int],
    config: AdaptConfig,
    options: DeviceOptions,
    test: EvalSet | None = None,
    *,
    codec: HeatmapCodec | None = None,
    seed: int = 0,
    shot_seed: int | None = None,
    support_seed: int | None = None,
    pool: Sequence[int] | None = None,
    augment: TopDownAugmentConfig | None = None,
    score_before: bool = False,
    progress: Progress | None = None,
    results_path: str | Path | None = None,
    tune: Callable[[TopDownModel], AdaptResult | None] | None = None,
) -> FewShotScore:
    """Fine-tune ``model`` in place on K shots of ``data`` and score it on ``test``.

    ``shots``: K (drawn from ``pool`` by ``shot_seed``), the image ids themselves, or
    ``UNADAPTED`` (0: score the model as it is). The fine-tune and its seeds are
    :func:`~metapose.training.few_shot.fine_tune_on_shots`'s; weights that are not finite
    afterwards raise :class:`~metapose.errors.DivergedError`. With ``score_before`` the start is
    scored on ``test`` first (a paired comparison); ``results_path``: the adapted model's poses
    on ``test`` as a COCO keypoint results JSON. Evaluations leave torch's random state as it was.
    ``tune``: another few-shot method in place of the recipe (e.g. shots plus unlabelled images,
    :mod:`metapose.training.semi`): it adapts the model in place and returns its fine-tune on the
    shots (None without shots); ``shots`` are then the image ids it used.
    The flip test is the model's (its ``codec.flip_test``).
    """
    before = after = None
    if test is not None and score_before:
        with isolated_rng(options.device):
            before = evaluate(torch_estimator(model, options), test, progress=progress)
    adapted: AdaptResult | None = None
    shot_ids: tuple[int, ...] = ()
    if tune is not None:
        adapted = tune(model)
        shot_ids = () if isinstance(shots, int) else tuple(shots)
        check_finite_weights(model, 0 if adapted is None else len(adapted.losses))
    elif not (isinstance(shots, int) and shots == UNADAPTED):
        if data is None:
            raise ValueError("adapt_and_score: the recipe needs labelled data")
        tuned = fine_tune_on_shots(
            model,
            data,
            shots,
            config,
            options,
            codec=codec,
            seed=seed,
            shot_seed=shot_seed,
            support_seed=support_seed,
            pool=pool,
            augment=augment,
            progress=progress,
        )
        adapted, shot_ids = tuned.adapt, tuned.shot_image_ids
        check_finite_weights(model, len(adapted.losses))
    if test is not None:
        with isolated_rng(options.device):
            after = evaluate(
                torch_estimator(model, options),
                test,
                progress=progress,
                results_path=results_path,
            )
    return FewShotScore(shot_ids, adapted, before, after)
