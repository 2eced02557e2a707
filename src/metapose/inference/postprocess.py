"""Post-processing of predicted poses, its one home: a pose predicted in a box
(:class:`PosePrediction`), SimpleBaseline's rescoring and, for poses found in detected boxes,
OKS-NMS per image; and the COCO keypoint result entry of each pose kept.

SimpleBaseline (Xiao et al., ECCV 2018, ``lib/dataset/coco.py``) rescores every pose by its box
score times the mean of its keypoint scores above 0.2, then runs OKS-NMS at 0.9 per image;
:func:`postprocess` does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from metapose.data.keypoint_results import make_result
from metapose.data.oks import OKS_NMS_THRESHOLD, oks_nms

KEYPOINT_SCORE_THRESHOLD = 0.2


@dataclass(frozen=True)
class PosePrediction:
    image_id: int
    annotation_id: int
    keypoints: np.ndarray  # (K, 3) image pixels (x, y) and heatmap score
    box_score: float
    area: float  # of the GT person where known, else of the crop box

    @property
    def score(self) -> float:
        """SimpleBaseline's instance score: box score x mean confident keypoint score."""
        return float(rescore(self.keypoints[None, :, 2], np.array([self.box_score]))[0])


def rescore(
    keypoint_scores: np.ndarray,
    box_scores: np.ndarray,
    threshold: float = KEYPOINT_SCORE_THRESHOLD,
) -> np.ndarray:
    """SimpleBaseline's instance scores ``(N,)``: box score x mean keypoint score above threshold.

    ``keypoint_scores`` ``(N, K)``; a pose with no keypoint above ``threshold`` scores 0.
    """
    keypoint_scores = np.asarray(keypoint_scores, dtype=np.float64)
    box_scores = np.asarray(box_scores, dtype=np.float64)
    confident = keypoint_scores > threshold
    count = confident.sum(axis=1)
    total = np.where(confident, keypoint_scores, 0.0).sum(axis=1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return box_scores * mean


class Kept(NamedTuple):
    """What :func:`postprocess` keeps: indices into its inputs and their new scores."""

    indices: np.ndarray  # (M,) int64, grouped by image (first appearance), best score first
    scores: np.ndarray  # (M,) float64 rescored


def postprocess(
    image_ids: Sequence[int] | np.ndarray,
    keypoints: np.ndarray,
    box_scores: np.ndarray,
    areas: np.ndarray,
    *,
    keypoint_threshold: float = KEYPOINT_SCORE_THRESHOLD,
    oks_threshold: float = OKS_NMS_THRESHOLD,
    sigmas: np.ndarray | None = None,
) -> Kept:
    """Rescore poses found in detected boxes, then OKS-NMS them per image (SimpleBaseline).

    ``keypoints`` ``(N, K, 3)`` image pixels and scores, ``box_scores`` ``(N,)`` from the
    detector, ``areas`` ``(N,)`` the crop-box areas (see
    :func:`metapose.data.detections.detection_instances`).
    """
    image_ids = np.asarray(image_ids)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    n = keypoints.shape[0]
    if keypoints.ndim != 3 or keypoints.shape[2] != 3 or image_ids.shape != (n,):
        raise ValueError(
            f"expected keypoints (N, K, 3) and image_ids (N,), got {keypoints.shape} "
            f"and {image_ids.shape}"
        )
    scores = rescore(keypoints[:, :, 2], box_scores, keypoint_threshold)
    areas = np.asarray(areas, dtype=np.float64)
    kept: list[np.ndarray] = []
    for image_id in dict.fromkeys(image_ids.tolist()):
        members = np.flatnonzero(image_ids == image_id)
        survivors = oks_nms(
            keypoints[members], scores[members], areas[members], oks_threshold, sigmas
        )
        kept.append(members[survivors])
    indices = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return Kept(indices.astype(np.int64), scores[indices])


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
