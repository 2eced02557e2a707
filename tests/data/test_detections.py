"""Detection boxes: reading with a score threshold, SimpleBaseline rescoring and OKS-NMS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metapose.data.coco import CocoDataset, CocoImage
from metapose.data.crops import BOX_PADDING
from metapose.data.detections import Detection, detection_instances, load_detections
from metapose.data.oks import oks, oks_nms
from metapose.errors import DataError
from metapose.inference.postprocess import postprocess, rescore

K = 17


def write(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload))
    return path


def pose(x0: float, y0: float, score: float = 0.9) -> np.ndarray:
    """A (17, 3) pose spread over about 100 x 100 pixels from (x0, y0)."""
    grid = np.stack([np.arange(K) % 4 * 30.0, np.arange(K) // 4 * 25.0], axis=1)
    return np.concatenate([grid + (x0, y0), np.full((K, 1), score)], axis=1)


# ------------------------------------------------------------------------------ reading


DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 60], "score": 0.9},
    {"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.3},
    {"image_id": 1, "category_id": 18, "bbox": [1, 2, 3, 4], "score": 0.99},  # a dog
    {"image_id": 1, "category_id": 1, "bbox": [50.5, 20, 30, 60], "score": 0.5},
    {"image_id": 3, "category_id": 1, "bbox": [0, 0, 8, 8], "score": 0.05},
]


def test_load_detections_keeps_people_at_or_above_threshold(tmp_path: Path) -> None:
    path = write(tmp_path / "det.json", DETECTIONS)
    got = load_detections(path, score_threshold=0.3)
    assert got == {
        1: (
            Detection(1, (10.0, 20.0, 30.0, 60.0), 0.9),
            Detection(1, (50.5, 20.0, 30.0, 60.0), 0.5),
        ),
        2: (Detection(2, (0.0, 0.0, 5.0, 5.0), 0.3),),
    }
    assert sum(map(len, load_detections(path).values())) == 4  # threshold 0 keeps every person
    assert load_detections(path, score_threshold=0.95) == {}


def test_load_detections_rejects_boxes_on_unknown_images(tmp_path: Path) -> None:
    path = write(tmp_path / "det.json", DETECTIONS)
    assert set(load_detections(path, image_ids=[1, 2, 3])) == {1, 2, 3}
    with pytest.raises(DataError, match=r"det\.json: image id 3: field '\[4\]\.image_id'"):
        load_detections(path, image_ids=[1, 2])


def test_detection_instances_use_the_padded_crop_area(tmp_path: Path) -> None:
    dataset = CocoDataset(
        annotation_file=tmp_path / "gt.json",
        image_dir=tmp_path,
        images=(CocoImage(2, "b.jpg", 64, 64), CocoImage(1, "a.jpg", 64, 64)),
        annotations=(),
    )
    detections = load_detections(write(tmp_path / "det.json", DETECTIONS), score_threshold=0.3)
    instances = detection_instances(dataset, detections, aspect_ratio=0.75)
    assert [(i.image_id, i.score) for i in instances] == [(2, 0.3), (1, 0.9), (1, 0.5)]
    assert [i.annotation_id for i in instances] == [1, 2, 3]
    assert instances[1].image == tmp_path / "a.jpg" and instances[1].box == (10, 20, 30, 60)
    # 30 x 60 widened to aspect 0.75 -> 45 x 60, then padded on both sides.
    assert instances[1].area == pytest.approx(45 * 60 * BOX_PADDING**2)
    assert not instances[1].keypoints.any()
    with pytest.raises(DataError, match="does not hold"):
        detection_instances(dataset, {7: (Detection(7, (0, 0, 1, 1), 1.0),)}, 0.75)


# ------------------------------------------------------------------------------ rescoring


def test_rescore_is_box_score_times_mean_confident_keypoint_score() -> None:
    scores = np.array(
        [
            [0.9, 0.5, 0.1, 0.2],  # 0.2 is not above the threshold: mean of 0.9, 0.5 = 0.7
            [0.1, 0.0, 0.2, 0.15],  # nothing confident -> 0
            [1.0, 1.0, 1.0, 0.4],
        ]
    )
    np.testing.assert_allclose(rescore(scores, np.array([0.5, 1.0, 0.8])), [0.35, 0.0, 0.68])
    np.testing.assert_allclose(rescore(scores, np.ones(3), threshold=0.0)[1], 0.15)


# ------------------------------------------------------------------------------ OKS-NMS


def test_oks_nms_drops_near_duplicates_and_keeps_distinct_people() -> None:
    a = pose(0, 0)
    a_twin = pose(0.5, -0.5)  # the same person found twice
    b = pose(400, 0)  # someone else
    keypoints = np.stack([a_twin, b, a])
    scores = np.array([0.8, 0.7, 0.9])
    areas = np.full(3, 100.0 * 100.0)
    assert oks(a, a_twin[:, :2], 1e4) > 0.9 and oks(a, b[:, :2], 1e4) < 0.1
    np.testing.assert_array_equal(oks_nms(keypoints, scores, areas), [2, 1])
    # OKS never exceeds 1, so a threshold of 1 suppresses nothing; highest score first.
    np.testing.assert_array_equal(oks_nms(keypoints, scores, areas, threshold=1.0), [2, 0, 1])


def test_oks_nms_equal_scores_keep_input_order() -> None:
    keypoints = np.stack([pose(0, 0), pose(0, 0), pose(300, 0)])
    kept = oks_nms(keypoints, np.array([0.5, 0.5, 0.5]), np.full(3, 1e4))
    np.testing.assert_array_equal(kept, [0, 2])


def test_oks_nms_keypoint_threshold_counts_confident_joints_only() -> None:
    a = pose(0, 0)
    b = pose(0, 0)
    b[:8, :2] += 200.0  # half the joints far away, and unsure of them
    b[:8, 2] = 0.05
    keypoints, scores, areas = np.stack([a, b]), np.array([0.9, 0.8]), np.full(2, 1e4)
    np.testing.assert_array_equal(oks_nms(keypoints, scores, areas), [0, 1])
    np.testing.assert_array_equal(oks_nms(keypoints, scores, areas, keypoint_threshold=0.2), [0])


def test_postprocess_rescores_then_suppresses_per_image() -> None:
    a = pose(0, 0, score=0.8)
    a_twin = pose(1, 0, score=0.5)
    keypoints = np.stack([a_twin, a, a.copy(), pose(300, 0, score=0.1)])
    image_ids = np.array([7, 7, 9, 9])  # image 9 holds a copy of `a`: a different image
    box_scores = np.array([1.0, 0.5, 1.0, 1.0])
    kept = postprocess(image_ids, keypoints, box_scores, np.full(4, 1e4))
    # Rescored: 0.5, 0.4, 0.8, 0 -> the twin outranks `a` on image 7 and suppresses it.
    np.testing.assert_array_equal(kept.indices, [0, 2, 3])
    np.testing.assert_allclose(kept.scores, [0.5, 0.8, 0.0])
