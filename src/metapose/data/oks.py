"""Object keypoint similarity (OKS) between poses, and non-maximum suppression by it.

OKS is the COCO keypoint evaluation's similarity (https://cocodataset.org/#keypoints-eval), the
formula of pycocotools' ``COCOeval.computeOks``::

    e_i = d_i^2 / (2 sigma_i)^2 / (area + eps) / 2,   OKS = mean over labelled i of exp(-e_i)

OKS-NMS is SimpleBaseline's (Xiao et al., ECCV 2018, ``lib/nms/nms.py``): per image, keep the
highest-scoring pose, drop every other pose whose OKS with it exceeds the threshold, repeat.
"""

from __future__ import annotations

import numpy as np

from metapose.skeleton import COCO17

# The eps pycocotools adds to the area so a zero-area person does not divide by zero.
AREA_EPS = float(np.spacing(1))
# SimpleBaseline's OKS-NMS threshold (``TEST.OKS_THRE``).
OKS_NMS_THRESHOLD = 0.9


def oks(
    keypoints_a: np.ndarray,
    keypoints_b: np.ndarray,
    area: float | np.ndarray,
    sigmas: np.ndarray | None = None,
    *,
    labelled: np.ndarray | None = None,
) -> np.ndarray:
    """OKS between poses ``a`` (the reference) and ``b``; leading dimensions broadcast.

    ``keypoints_a`` is ``(..., K, 3)`` ``(x, y, v)`` and ``keypoints_b`` ``(..., K, >=2)``;
    ``area`` ``(...)`` is the scale (the ground truth's segmentation area in COCO). Only the
    joints in ``labelled`` ``(..., K)`` count, by default those of ``a`` with ``v > 0`` as in
    ``computeOks``. Where no joint counts the result is 0; ``computeOks`` instead measures the
    distance to a box around such a person, which matters only for ignored ground truth.
    ``sigmas`` default to COCO-17's. Returns float64 of the broadcast leading shape.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    if a.shape[-1] < 3 and labelled is None:
        raise ValueError("keypoints_a needs (x, y, v) columns unless `labelled` is given")
    sigmas = COCO17.sigmas_array() if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    if a.shape[-2] != sigmas.shape[0] or b.shape[-2] != sigmas.shape[0]:
        raise ValueError(
            f"{sigmas.shape[0]} sigmas for poses of {a.shape[-2]} and {b.shape[-2]} keypoints"
        )
    mask = a[..., 2] > 0 if labelled is None else np.asarray(labelled, dtype=bool)
    variances = (sigmas * 2) ** 2
    dx = b[..., 0] - a[..., 0]
    dy = b[..., 1] - a[..., 1]
    scale = np.asarray(area, dtype=np.float64)[..., None] + AREA_EPS
    # Same operation order as computeOks, so the numbers agree to the last bits.
    e = (dx**2 + dy**2) / variances / scale / 2
    mask = np.broadcast_to(mask, e.shape)
    count = mask.sum(axis=-1)
    total = np.where(mask, np.exp(-e), 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    threshold: float = OKS_NMS_THRESHOLD,
    sigmas: np.ndarray | None = None,
    *,
    keypoint_threshold: float | None = None,
) -> np.ndarray:
    """Indices of the poses kept by greedy OKS-NMS, highest score first.

    ``keypoints`` ``(N, K, 3)`` ``(x, y, score)`` of one image, ``scores`` ``(N,)``, ``areas``
    ``(N,)``. The OKS of two predictions uses the mean of their areas and every joint, as
    SimpleBaseline calls it; with ``keypoint_threshold`` only the joints scored above it in both
    poses count (what SimpleBaseline's ``in_vis_thre`` meant to do). A pose is dropped when its
    OKS with a kept one is above ``threshold``. Equal scores keep their input order.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    n = keypoints.shape[0]
    if scores.shape != (n,) or areas.shape != (n,):
        raise ValueError(
            f"{n} poses but scores {scores.shape} and areas {areas.shape}; expected ({n},)"
        )
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        if keypoint_threshold is None:
            labelled = np.ones(keypoints[rest].shape[:2], dtype=bool)
        else:
            labelled = (keypoints[rest, :, 2] > keypoint_threshold) & (
                keypoints[best, :, 2] > keypoint_threshold
            )
        overlap = oks(
            keypoints[best],
            keypoints[rest],
            (areas[best] + areas[rest]) / 2,
            sigmas,
            labelled=labelled,
        )
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)
