"""Scoring a model on a labelled test split: OKS AP/AR (pycocotools) and PCK, from fixed crops.

The test crops (ground-truth boxes, no augmentation) are cut once and kept in memory, so the many
evaluations of an experiment (every model, K and seed) cost only the forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metapose.data.batches import collate
from metapose.data.coco import CocoDataset
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Sample, TopDownDataset, instances_from_coco
from metapose.evaluation.coco import evaluate_oks, make_result, pck, torso_diameter
from metapose.inference.topdown import PosePrediction, predict_batches, torch_heatmap_fn
from metapose.models import TopDownModel
from metapose.skeleton import COCO17
from metapose.training.step import DeviceOptions

PCK_ALPHA = 0.2  # the usual LSP threshold, as a fraction of the torso diameter


@dataclass(frozen=True)
class EvalSet:
    """A target's test split, cropped once (GT boxes) and kept in memory for every evaluation."""

    gt: CocoDataset
    codec: HeatmapCodec
    batches: tuple[Sample, ...]
    keypoints: tuple[str, ...] | None  # score these keypoints only (None: all)
    pck_alpha: float

    @property
    def size(self) -> int:
        return sum(int(b.image.shape[0]) for b in self.batches)


def make_eval_set(
    gt: CocoDataset,
    codec: HeatmapCodec,
    *,
    keypoints: tuple[str, ...] | None = None,
    pck_alpha: float = PCK_ALPHA,
    batch_size: int = 64,
) -> EvalSet:
    """Crop every labelled person of ``gt`` once (ground-truth boxes)."""
    dataset = TopDownDataset(instances_from_coco(gt), codec)
    batches = tuple(
        collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        for start in range(0, len(dataset), batch_size)
    )
    return EvalSet(gt, codec, batches, keypoints, pck_alpha)


def predictions_to_results(predictions: Sequence[PosePrediction]) -> list[dict[str, object]]:
    return [make_result(p.image_id, p.keypoints, p.score) for p in predictions]


def score(predictions: Sequence[PosePrediction], test: EvalSet) -> dict[str, float]:
    """OKS AP/AR over the test split (on the configured keypoints) and PCK@alpha (torso)."""
    result = evaluate_oks(test.gt, predictions_to_results(predictions), keypoints=test.keypoints)
    metrics = dict(result.as_dict())
    by_ann = {a.id: a for a in test.gt.annotations}
    matched = [(p, by_ann[p.annotation_id]) for p in predictions if p.annotation_id in by_ann]
    if matched:
        pred = np.stack([p.keypoints[:, :2] for p, _ in matched])
        gt = np.stack([a.keypoints for _, a in matched])
        reference = torso_diameter(gt, COCO17)
        metrics["pck"] = float(pck(pred, gt, reference, test.pck_alpha).overall)
    return metrics


def predict_eval_set(
    model: TopDownModel, test: EvalSet, options: DeviceOptions, *, flip: bool = True
) -> list[PosePrediction]:
    return predict_batches(torch_heatmap_fn(model, options), test.batches, test.codec, flip=flip)


def evaluate_model(
    model: TopDownModel, test: EvalSet, options: DeviceOptions, *, flip: bool = True
) -> dict[str, float]:
    """The model's OKS AP/AR and PCK on ``test``."""
    return score(predict_eval_set(model, test, options, flip=flip), test)
