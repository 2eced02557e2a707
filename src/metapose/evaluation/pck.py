"""PCK@alpha (Percentage of Correct Keypoints).

A labelled joint is correct when the predicted point lies closer than ``alpha`` times a per-person
reference length. The usual LSP metric is PCK@0.2 (:data:`metapose.config.PCK_ALPHA`) with the
torso diameter, the distance from the left shoulder to the right hip (Toshev & Szegedy's
"torso diameter", DeepPose, CVPR 2014, MMPose's ``tPCK``); see :func:`torso_diameter`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from metapose.config import PCK_ALPHA
from metapose.skeleton import COCO17, Skeleton

log = logging.getLogger(__name__)

# The LSP convention's torso diameter and, when one of those joints is unlabelled, the other
# diagonal of the torso.
TORSO_DIAGONALS = (("left_shoulder", "right_hip"), ("right_shoulder", "left_hip"))


@dataclass(frozen=True)
class PCKResult:
    """PCK over the labelled joints of people with a valid reference length.

    ``overall`` pools every counted joint (correct / counted); ``per_joint`` ``(K,)`` is NaN for
    a joint never counted. ``mean_per_joint`` averages ``per_joint`` instead (MMPose's "avg").
    """

    overall: float
    per_joint: np.ndarray
    correct: int
    counted: int

    @property
    def mean_per_joint(self) -> float:
        counted = self.per_joint[np.isfinite(self.per_joint)]
        return float(counted.mean()) if counted.size else float("nan")


def pck(
    pred: np.ndarray, gt: np.ndarray, reference: np.ndarray, alpha: float = PCK_ALPHA
) -> PCKResult:
    """PCK@``alpha``: a joint is correct when ``||pred - gt|| < alpha * reference``.

    ``pred`` ``(N, K, >=2)`` and ``gt`` ``(N, K, 3)`` in the same pixels; ``reference`` ``(N,)``
    (e.g. :func:`torso_diameter` or :func:`bbox_size`). Joints with ``v == 0`` and people whose
    reference is not a positive finite number are not counted. With nothing counted
    ``overall`` is NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[:2] != gt.shape[:2] or gt.shape[2] < 3:
        raise ValueError(f"pred (N, K, 2) and gt (N, K, 3) must match, got {pred.shape} {gt.shape}")
    if reference.shape != (gt.shape[0],):
        raise ValueError(f"reference must be ({gt.shape[0]},), got {reference.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    valid_reference = np.isfinite(reference) & (reference > 0)
    counted = (gt[..., 2] > 0) & valid_reference[:, None]
    distance = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    threshold = alpha * np.where(valid_reference, reference, 0.0)
    correct = counted & (distance < threshold[:, None])
    per_joint_counted = counted.sum(axis=0)
    per_joint = np.divide(
        correct.sum(axis=0),
        per_joint_counted,
        out=np.full(gt.shape[1], np.nan),
        where=per_joint_counted > 0,
    )
    total = int(counted.sum())
    hits = int(correct.sum())
    return PCKResult(
        overall=hits / total if total else float("nan"),
        per_joint=per_joint,
        correct=hits,
        counted=total,
    )


def torso_diameter(gt: np.ndarray, skeleton: Skeleton = COCO17) -> np.ndarray:
    """Per person ``(N,)``: the left-shoulder to right-hip distance of ``gt`` ``(N, K, 3)``.

    This is the LSP PCK convention (the torso diameter of DeepPose; MMPose's ``tPCK``). Where
    either joint is unlabelled the other diagonal (right shoulder to left hip) stands in, and
    where neither diagonal is labelled the result is NaN (the person is left out of PCK).
    """
    gt = np.asarray(gt, dtype=np.float64)
    out = np.full(gt.shape[0], np.nan)
    # The fallback diagonal first, so the primary one overwrites it wherever both are labelled.
    for first, second in reversed(TORSO_DIAGONALS):
        a, b = gt[:, skeleton.index(first)], gt[:, skeleton.index(second)]
        both = (a[:, 2] > 0) & (b[:, 2] > 0)
        out[both] = np.linalg.norm(a[both, :2] - b[both, :2], axis=-1)
    missing = int(np.isnan(out).sum())
    if missing:
        log.debug("%d of %d people have no labelled torso diagonal", missing, gt.shape[0])
    return out


def bbox_size(boxes: np.ndarray) -> np.ndarray:
    """Per box ``(N,)``: the larger side of ``(N, 4)`` ``(x, y, w, h)`` boxes (PCK's box norm)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {boxes.shape}")
    return np.maximum(boxes[:, 2], boxes[:, 3])
