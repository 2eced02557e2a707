"""Pose and box drawing: pure functions with a documented palette."""

from __future__ import annotations

import numpy as np
import pytest

from metapose.data.viz import SIDE_COLOURS, draw_box, draw_pose, is_flags
from metapose.skeleton import COCO17

K = COCO17.index


def person(flag: float = 2.0) -> np.ndarray:
    """A standing stick person facing the viewer (their left on the image's right)."""
    kp = np.zeros((17, 3))
    layout = {
        "nose": (50, 15),
        "left_eye": (53, 12),
        "right_eye": (47, 12),
        "left_ear": (57, 14),
        "right_ear": (43, 14),
        "left_shoulder": (62, 30),
        "right_shoulder": (38, 30),
        "left_elbow": (66, 50),
        "right_elbow": (34, 50),
        "left_wrist": (68, 70),
        "right_wrist": (32, 70),
        "left_hip": (57, 70),
        "right_hip": (43, 70),
        "left_knee": (58, 95),
        "right_knee": (42, 95),
        "left_ankle": (58, 118),
        "right_ankle": (42, 118),
    }
    for name, xy in layout.items():
        kp[K(name), :2] = xy
    kp[:, 2] = flag
    return kp


def colour_near(image: np.ndarray, x: int, y: int, colour: tuple[int, int, int]) -> bool:
    patch = image[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).astype(int)
    return bool((np.abs(patch - colour).sum(1) < 60).any())


def test_draws_sides_in_their_colours_on_a_copy() -> None:
    image = np.full((130, 100, 3), 128, np.uint8)
    out = draw_pose(image, person())
    assert (image == 128).all()  # the input is untouched
    assert colour_near(out, 67, 60, SIDE_COLOURS["left"])  # left forearm
    assert colour_near(out, 33, 60, SIDE_COLOURS["right"])
    assert colour_near(out, 50, 30, SIDE_COLOURS["center"])  # shoulder bar


def test_occluded_joints_are_hollow_and_unlabelled_ones_absent() -> None:
    image = np.full((130, 100, 3), 128, np.uint8)
    kp = person()
    kp[[K("left_hip"), K("left_ankle"), K("right_knee")], 2] = 0  # no limb reaches the left knee
    kp[K("right_knee"), :2] = 0
    kp[K("left_knee"), 2] = 1
    out = draw_pose(image, kp, radius=5, thickness=1)
    lx, ly = 58, 95
    assert (out[ly, lx] == 128).all()  # hollow centre
    assert colour_near(out, lx + 5, ly, SIDE_COLOURS["left"])  # ring
    assert (out[:5, :5] == 128).all()  # nothing drawn at (0, 0) for the unlabelled knee
    kp[K("left_knee"), 2] = 2
    solid = draw_pose(image, kp, radius=5, thickness=1)
    assert not (solid[ly, lx] == 128).all()


def test_scores_below_threshold_are_hidden_and_low_scores_faded() -> None:
    image = np.full((130, 100, 3), 128, np.uint8)
    scores = person(flag=0.9)
    scores[K("left_wrist"), 2] = 0.1
    out = draw_pose(image, scores, threshold=0.3, radius=4)
    assert (out[70, 68] == 128).all()
    faded = draw_pose(image, person(flag=0.3), radius=4)
    strong = draw_pose(image, person(flag=1.0), radius=4)
    x, y = 62, 30

    def change(image: np.ndarray) -> int:
        return int(np.abs(image[y, x].astype(int) - 128).sum())

    assert change(faded) < change(strong)


def test_flag_detection_and_bad_shapes() -> None:
    assert is_flags(np.array([0, 1, 2, 2.0]))
    assert not is_flags(np.array([0.5, 0.9]))
    assert not is_flags(np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="17, 3"):
        draw_pose(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 3)))
    gray = draw_pose(np.zeros((130, 100), np.uint8), person())
    assert gray.shape == (130, 100, 3)


def test_draw_box_outlines_the_box() -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    out = draw_box(image, (10, 20, 30, 25), (0, 255, 0), thickness=1, label="p")
    assert out[20, 25, 1] > 100 and out[45, 25, 1] > 100 and out[32, 10, 1] > 100
    assert out[32, 25].sum() == 0  # inside untouched
    assert image.sum() == 0
