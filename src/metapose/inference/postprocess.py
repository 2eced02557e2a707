"""Post-processing of predicted poses: SimpleBaseline's rescoring and, for poses found in detected
boxes, OKS-NMS per image; and the COCO keypoint result entry of each pose kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from metapose.data.detections import (
    postprocess,
)
from metapose.data.keypoint_results import make_result
from metapose.inference.topdown import PosePrediction


class ScoredPose(NamedTuple):
    """A pose that goes into the results: the instance it came from and its final score."""

    prediction: PosePrediction
    score: float


def keep_poses(
    predictions: Sequence[PosePrediction], from_detections: bool, nms: bool
) -> list[ScoredPose]:
    """Poses rescored (SimpleBaseline) and, for detections, OKS-NMS'd per image."""
    if not predictions:
        return []
    if from_detections and nms:
        kept = postprocess(
            [p.image_id for p in predictions],
            np.stack([p.keypoints for p in predictions]),
            np.array([p.box_score for p in predictions]),
            np.array([p.area for p in predictions]),
        )
        return [
            ScoredPose(predictions[i], float(s))
            for i, s in zip(kept.indices, kept.scores, strict=True)
        ]
    return [ScoredPose(p, p.score) for p in predictions]


def result_entry(kept: ScoredPose) -> dict[str, Any]:
    return make_result(kept.prediction.image_id, kept.prediction.keypoints, kept.score)
