"""Pose priors, anatomical limits and forward kinematics of the synthetic body."""

from __future__ import annotations

import numpy as np
import pytest

from metapose.skeleton import COCO17
from metapose.synth.body import (
    ANGLE_LIMITS,
    POSE_JOINTS,
    J,
    build_body,
    clamp_to_limits,
    sample_shape,
)
from metapose.synth.poses import DAILY, UNIQUE, angle_distance, pose_statistics, settle

K = COCO17.index


@pytest.fixture
def shape():  # type: ignore[no-untyped-def]
    return sample_shape(np.random.default_rng(0), child_share=0.0)


def test_standing_body_is_as_tall_as_its_shape(shape) -> None:  # type: ignore[no-untyped-def]
    body = build_body(shape, np.zeros((len(POSE_JOINTS), 3)))
    top = body.ellipsoids[:, 1].max() + shape.head_axes[1]
    assert top - body.lowest_point() == pytest.approx(shape.height, rel=0.04)


def test_left_is_the_persons_own_left_and_faces_forward(shape) -> None:  # type: ignore[no-untyped-def]
    kp = build_body(shape, np.zeros((len(POSE_JOINTS), 3))).keypoints
    # Facing +z, the person's left is +x in the body frame.
    for name in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        assert kp[K(f"left_{name}"), 0] > 0 > kp[K(f"right_{name}"), 0]
    assert kp[K("nose"), 2] > kp[K("left_ear"), 2]


@pytest.mark.parametrize("side", ["left", "right"])
def test_joint_angles_mean_what_they_say(shape, side: str) -> None:  # type: ignore[no-untyped-def]
    rest = build_body(shape, np.zeros((len(POSE_JOINTS), 3))).keypoints

    def posed(joint: str, row: tuple[float, float, float]) -> np.ndarray:
        angles = np.zeros((len(POSE_JOINTS), 3))
        angles[J[joint]] = row
        return build_body(shape, angles).keypoints

    sign = 1.0 if side == "left" else -1.0
    knee = posed(f"{side}_hip", (90, 0, 0))[K(f"{side}_knee")]
    assert knee[2] > rest[K(f"{side}_knee"), 2] + 0.3  # thigh forward
    ankle = posed(f"{side}_knee", (90, 0, 0))[K(f"{side}_ankle")]
    assert ankle[2] < rest[K(f"{side}_ankle"), 2] - 0.3  # heel back
    wrist = posed(f"{side}_shoulder", (0, 90, 0))[K(f"{side}_wrist")]
    assert sign * wrist[0] > sign * rest[K(f"{side}_wrist"), 0] + 0.4  # arm out sideways
    angles = np.zeros((len(POSE_JOINTS), 3))
    angles[J[f"{side}_shoulder"]] = (0, 90, 90)
    angles[J[f"{side}_elbow"]] = (90, 0, 0)
    kp = build_body(shape, angles).keypoints  # waving: forearm up
    assert kp[K(f"{side}_wrist"), 1] > kp[K(f"{side}_elbow"), 1] + 0.15


@pytest.mark.parametrize("prior", [DAILY, UNIQUE], ids=["daily", "unique"])
def test_samples_respect_the_anatomical_limits(prior) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    names = set()
    for _ in range(300):
        sample = prior.sample(rng)
        names.add(sample.action)
        inner = sample.angles[1:]
        assert (inner >= ANGLE_LIMITS[1:, :, 0] - 1e-9).all()
        assert (inner <= ANGLE_LIMITS[1:, :, 1] + 1e-9).all()
    assert names == set(prior.action_names)


def test_clamp_wraps_the_root_and_clips_the_rest() -> None:
    angles = np.zeros((len(POSE_JOINTS), 3))
    angles[J["root"], 2] = 270.0
    angles[J["left_knee"], 0] = 200.0
    out = clamp_to_limits(angles)
    assert out[J["root"], 2] == pytest.approx(-90.0)
    assert out[J["left_knee"], 0] == ANGLE_LIMITS[J["left_knee"], 0, 1]


def test_daily_and_unique_priors_differ() -> None:
    daily = pose_statistics(DAILY, 300, seed=0)
    unique = pose_statistics(UNIQUE, 300, seed=0)
    assert daily.ankles_above_hips < 0.02
    assert unique.ankles_above_hips > 0.2
    assert unique.inverted > daily.inverted + 0.1
    apart = angle_distance(DAILY, UNIQUE, 200, seed=1)
    alike = angle_distance(DAILY, DAILY, 200, seed=2)
    assert apart > 4 * alike


def test_settled_bodies_stand_on_the_floor() -> None:
    rng = np.random.default_rng(3)
    for prior in (DAILY, UNIQUE):
        for _ in range(60):
            shape = sample_shape(rng)
            sample = prior.sample(rng)
            body, seat = settle(shape, sample)
            lift = sample.lift if sample.support == "air" else 0.0
            assert body.lowest_point() == pytest.approx(lift, abs=0.03)
            assert seat >= 0.0
            if sample.support == "hands_feet":  # bridges, downward dog: both touch
                hands = body.ellipsoids[np.isin(body.ellipsoid_parts, (9, 10)), 1].min()
                assert hands < 0.25
