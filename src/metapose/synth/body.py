"""The articulated 3D body: per-person shape, forward kinematics and the volumes that are drawn.

A skeleton of 17 rotational joints (root, lumbar and thoracic spine, neck, head, shoulders, elbows,
wrists, hips, knees, ankles) carries the COCO-17 keypoints: the limb keypoints are joint centres
and the face keypoints (nose, eyes, ears) sit on the oriented head. Segment lengths and girths are
fractions of stature from the anthropometric tables in Winter, *Biomechanics and Motor Control of
Human Movement* (4th ed., 2009, Fig. 4.1), varied per person.

Frames: the body frame has ``x`` to the person's own left, ``y`` up and ``z`` forward (the way the
person faces), metres. The pose's angles are degrees; see :data:`POSE_JOINTS` for their meaning.
The body is drawn as tapered capsules (limbs, neck, feet, nose) and ellipsoids (head, torso,
hands, ears, long hair); :func:`build_body` returns those volumes in world coordinates together
with the 3D keypoints and, per keypoint, the body parts it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metapose.skeleton import COCO17

# The rotational joints of a pose, in the order of the rows of a ``(17, 3)`` angle array. The three
# angles of each row, in degrees:
#   root                 pitch (lean forward), roll (lean to the own left), yaw (turn to the left)
#   lumbar/thorax/neck/head   flexion (bend forward), lateral bend (to the left), twist (left)
#   shoulders            flexion (arm forward/up), abduction (arm out to the side), external twist
#   elbows               flexion, -, -
#   wrists               flexion (palm side), deviation, -
#   hips                 flexion (thigh forward/up), abduction (leg out), external rotation
#   knees                flexion (heel toward the buttock), -, -
#   ankles               dorsiflexion (toes up), inversion, -
POSE_JOINTS: tuple[str, ...] = (
    "root",
    "lumbar",
    "thorax",
    "neck",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
J = {name: i for i, name in enumerate(POSE_JOINTS)}
NUM_POSE_JOINTS = len(POSE_JOINTS)

# Anatomical limits (degrees) of a flexible adult, per joint and angle: (low, high). The root is
# free. Gymnasts reach the hip and spine extremes (splits, bridges); daily poses stay well inside.
ANGLE_LIMITS = np.array(
    [
        [(-180, 180), (-180, 180), (-180, 180)],  # root
        [(-60, 75), (-35, 35), (-35, 35)],  # lumbar
        [(-45, 45), (-25, 25), (-40, 40)],  # thorax
        [(-45, 50), (-35, 35), (-50, 50)],  # neck
        [(-30, 35), (-20, 20), (-40, 40)],  # head
        [(-60, 180), (-20, 180), (-90, 90)],  # left shoulder
        [(-60, 180), (-20, 180), (-90, 90)],  # right shoulder
        [(0, 150), (0, 0), (0, 0)],  # left elbow
        [(0, 150), (0, 0), (0, 0)],  # right elbow
        [(-70, 80), (-20, 30), (0, 0)],  # left wrist
        [(-70, 80), (-20, 30), (0, 0)],  # right wrist
        [(-60, 170), (-25, 90), (-45, 45)],  # left hip
        [(-60, 170), (-25, 90), (-45, 45)],  # right hip
        [(0, 155), (0, 0), (0, 0)],  # left knee
        [(0, 155), (0, 0), (0, 0)],  # right knee
        [(-50, 30), (-20, 20), (0, 0)],  # left ankle
        [(-50, 30), (-20, 20), (0, 0)],  # right ankle
    ],
    dtype=np.float64,
)


def clamp_to_limits(angles: np.ndarray) -> np.ndarray:
    """``(17, 3)`` degrees clipped to :data:`ANGLE_LIMITS`; the free root is wrapped instead."""
    out = np.clip(angles, ANGLE_LIMITS[:, :, 0], ANGLE_LIMITS[:, :, 1])
    out[J["root"]] = (angles[J["root"]] + 180.0) % 360.0 - 180.0
    return out


# ----------------------------------------------------------------------------------- shape


@dataclass(frozen=True)
class BodyShape:
    """One person's proportions, metres. Lengths are bone lengths; ``*_r`` are girth radii."""

    height: float
    pelvis_height: float  # pelvis centre above the soles, standing
    lumbar: float  # pelvis centre -> waist
    thoracic: float  # waist -> base of the neck
    neck: float  # base of the neck -> base of the skull
    head_axes: tuple[float, float, float]  # head half-width, half-height, half-depth
    shoulder_half: float  # midline -> shoulder joint
    shoulder_drop: float  # base of the neck -> shoulder joint, downwards
    upper_arm: float
    forearm: float
    hand: float
    hip_half: float  # midline -> hip joint
    hip_drop: float  # pelvis centre -> hip joints, downwards
    thigh: float
    shin: float
    ankle_height: float
    foot: float
    neck_r: float
    upper_arm_r: tuple[float, float]  # at the shoulder, at the elbow
    forearm_r: tuple[float, float]  # at the elbow, at the wrist
    thigh_r: tuple[float, float]  # at the hip, at the knee
    shin_r: tuple[float, float]  # at the knee, at the ankle
    chest_axes: tuple[float, float, float]  # half-width, half-height, half-depth
    waist_axes: tuple[float, float, float]
    pelvis_axes: tuple[float, float, float]

    def __post_init__(self) -> None:
        if not self.height > 0:
            raise ValueError(f"height must be positive, got {self.height}")


# Stature fractions (Winter 2009, Fig. 4.1) and girths of an average adult; see BodyShape.
ADULT_HEIGHT = (1.50, 1.95)  # metres, uniform
CHILD_HEIGHT = (1.05, 1.45)
CHILD_SHARE = 0.08
BUILD = (0.82, 1.30)  # girth multiplier: slim to heavy
LIMB_JITTER = 0.05  # relative, per segment
HEAD_JITTER = 0.06


def sample_shape(rng: np.random.Generator, child_share: float = CHILD_SHARE) -> BodyShape:
    """A random person's proportions: stature, build, limb proportions and head size."""
    child = rng.random() < child_share
    height = float(rng.uniform(*(CHILD_HEIGHT if child else ADULT_HEIGHT)))
    build = float(rng.uniform(*BUILD))
    # Broad shoulders and narrow hips, or the reverse (the sexes differ mostly here).
    shoulders = float(rng.uniform(0.9, 1.1))
    hips = float(rng.uniform(0.92, 1.12))

    def seg(fraction: float) -> float:
        return height * fraction * float(1.0 + rng.uniform(-LIMB_JITTER, LIMB_JITTER))

    # Children's heads are relatively larger and their legs relatively shorter.
    head_scale = (1.25 if child else 1.0) * float(1.0 + rng.uniform(-HEAD_JITTER, HEAD_JITTER))
    legs = 0.93 if child else 1.0
    thigh, shin = seg(0.245) * legs, seg(0.246) * legs
    ankle = height * 0.039
    hip_drop = height * 0.03
    pelvis_height = ankle + shin + thigh + hip_drop
    girth = height * build
    return BodyShape(
        height=height,
        pelvis_height=pelvis_height,
        lumbar=seg(0.12),
        thoracic=seg(0.165),
        neck=seg(0.042),
        head_axes=(
            height * 0.044 * head_scale,
            height * 0.064 * head_scale,
            height * 0.056 * head_scale,
        ),
        shoulder_half=height * 0.107 * shoulders,
        shoulder_drop=height * 0.022,
        upper_arm=seg(0.186),
        forearm=seg(0.146),
        hand=seg(0.105),
        hip_half=height * 0.052 * hips,
        hip_drop=hip_drop,
        thigh=thigh,
        shin=shin,
        ankle_height=ankle,
        foot=seg(0.148),
        neck_r=girth * 0.030,
        upper_arm_r=(girth * 0.030, girth * 0.022),
        forearm_r=(girth * 0.023, girth * 0.016),
        thigh_r=(girth * 0.052 * hips, girth * 0.034),
        shin_r=(girth * 0.036, girth * 0.021),
        chest_axes=(girth * 0.087 * shoulders, height * 0.105, girth * 0.060),
        waist_axes=(girth * 0.074, height * 0.085, girth * 0.055),
        pelvis_axes=(girth * 0.088 * hips, height * 0.070, girth * 0.060),
    )


# ----------------------------------------------------------------------------------- rotations


def rot_x(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# Every joint but the root rotates by Rx(a) Rz(b) Ry(c) in its parent's frame, with
# (a, b, c) = SIGNS * angles: the signs make positive angles mean what POSE_JOINTS says on both
# sides of the body (a right limb's abduction and twist mirror the left's).
_SIGNS = np.ones((NUM_POSE_JOINTS, 3))
_SIGNS[[J[n] for n in ("lumbar", "thorax", "neck", "head")], 1] = -1.0
for _side, _sign in (("left", 1.0), ("right", -1.0)):
    for _joint in ("shoulder", "hip"):
        _SIGNS[J[f"{_side}_{_joint}"]] = (-1.0, _sign, _sign)
    for _joint in ("wrist", "ankle"):  # no twist: the forearm and shin carry it
        _SIGNS[J[f"{_side}_{_joint}"]] = (-1.0, _sign, 0.0)
    _SIGNS[J[f"{_side}_elbow"]] = (-1.0, 0.0, 0.0)  # hinges
    _SIGNS[J[f"{_side}_knee"]] = (1.0, 0.0, 0.0)


def _stack(c: np.ndarray, s: np.ndarray, axis: int) -> np.ndarray:
    """``(N, 3, 3)`` rotations about ``axis`` (0 x, 1 y, 2 z) from cosines and sines."""
    out = np.zeros((len(c), 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out[:, axis, axis] = 1.0
    out[:, i, i] = c
    out[:, j, j] = c
    out[:, i, j] = -s
    out[:, j, i] = s
    return out


def local_rotations(angles: np.ndarray) -> np.ndarray:
    """``(17, 3)`` degrees -> ``(17, 3, 3)`` rotations of each joint in its parent's frame."""
    signed = np.deg2rad(angles * _SIGNS)
    c, s = np.cos(signed), np.sin(signed)
    out = _stack(c[:, 0], s[:, 0], 0) @ _stack(c[:, 1], s[:, 1], 2) @ _stack(c[:, 2], s[:, 2], 1)
    root = J["root"]
    pitch, roll, yaw = angles[root]
    out[root] = rot_y(yaw) @ rot_x(pitch) @ rot_z(-roll)
    return out


# ----------------------------------------------------------------------------------- parts

# Drawn volumes; a label buffer stores ``person * NUM_PARTS + part``.
PARTS: tuple[str, ...] = (
    "head",
    "neck",
    "chest",
    "waist",
    "pelvis",
    "left_upper_arm",
    "right_upper_arm",
    "left_forearm",
    "right_forearm",
    "left_hand",
    "right_hand",
    "left_thigh",
    "right_thigh",
    "left_shin",
    "right_shin",
    "left_foot",
    "right_foot",
    "nose",
    "left_ear",
    "right_ear",
    "hair",
)
P = {name: i for i, name in enumerate(PARTS)}
NUM_PARTS = len(PARTS)

# The parts a COCO keypoint belongs to: it is visible when one of them is what the camera sees at
# its pixel (see metapose.synth.scene).
KEYPOINT_PARTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(P[p] for p in parts)
    for parts in (
        ("nose", "head"),
        ("head",),
        ("head",),
        ("left_ear", "head"),
        ("right_ear", "head"),
        ("left_upper_arm", "chest"),
        ("right_upper_arm", "chest"),
        ("left_upper_arm", "left_forearm"),
        ("right_upper_arm", "right_forearm"),
        ("left_forearm", "left_hand"),
        ("right_forearm", "right_hand"),
        ("left_thigh", "pelvis"),
        ("right_thigh", "pelvis"),
        ("left_thigh", "left_shin"),
        ("right_thigh", "right_shin"),
        ("left_shin", "left_foot"),
        ("right_shin", "right_foot"),
    )
)
assert len(KEYPOINT_PARTS) == COCO17.num_keypoints

# Face geometry on the unit sphere of the head ellipsoid (x left, y up, z forward).
EYE_DIRECTION = np.array([0.36, 0.12, 0.925])  # the left eye; the right one mirrors x
EAR_DIRECTION = np.array([0.99, 0.02, -0.12])
NOSE_ROOT_DIRECTION = np.array([0.0, -0.02, 1.0])
NOSE_LENGTH = 0.028  # metres, root to tip (scaled by head size / 0.1)
NOSE_RADII = (0.011, 0.008)
EAR_AXES = (0.012, 0.030, 0.020)  # half-thickness, half-height, half-width
# A joint keypoint is seen when the surface in front of it at its pixel is this many girth radii
# away or nearer; a face keypoint is on the surface, so it gets a share of the head's depth.
JOINT_DEPTH_TOLERANCE = 1.35
FACE_DEPTH_TOLERANCE = 0.3


@dataclass(frozen=True)
class BodyGeometry:
    """One posed person in world coordinates (metres).

    ``cones`` ``(Nc, 8)``: tapered capsules ``x0, y0, z0, r0, x1, y1, z1, r1`` with part ids
    ``cone_parts``; ``ellipsoids``: centres ``(Ne, 3)`` and semi-axis vectors as columns of
    ``(Ne, 3, 3)`` with ``ellipsoid_parts``. ``keypoints`` ``(17, 3)`` in COCO-17 order with
    ``keypoint_tolerance`` ``(17,)``: how far in front of a keypoint its own surface may be for it
    to count as seen. ``head_frame`` ``(3, 3)`` (columns: the head's left, up, forward) and
    ``head_axes`` let a painter place face features.
    """

    cones: np.ndarray
    cone_parts: np.ndarray
    ellipsoids: np.ndarray
    ellipsoid_axes: np.ndarray
    ellipsoid_parts: np.ndarray
    keypoints: np.ndarray
    keypoint_tolerance: np.ndarray
    head_frame: np.ndarray
    head_axes: np.ndarray

    def lowest_point(self) -> float:
        """The lowest world ``y`` any volume reaches."""
        cone_low = min(
            float((self.cones[:, 1] - self.cones[:, 3]).min()),
            float((self.cones[:, 5] - self.cones[:, 7]).min()),
        )
        extent_y = np.sqrt((self.ellipsoid_axes[:, 1, :] ** 2).sum(axis=1))
        ellipsoid_low = float((self.ellipsoids[:, 1] - extent_y).min())
        return min(cone_low, ellipsoid_low)

    def translated(self, offset: np.ndarray) -> BodyGeometry:
        shift8 = np.concatenate([offset, [0.0], offset, [0.0]])
        return BodyGeometry(
            cones=self.cones + shift8,
            cone_parts=self.cone_parts,
            ellipsoids=self.ellipsoids + offset,
            ellipsoid_axes=self.ellipsoid_axes,
            ellipsoid_parts=self.ellipsoid_parts,
            keypoints=self.keypoints + offset,
            keypoint_tolerance=self.keypoint_tolerance,
            head_frame=self.head_frame,
            head_axes=self.head_axes,
        )

    def rotated(self, rotation: np.ndarray) -> BodyGeometry:
        """The body turned by ``rotation`` ``(3, 3)`` about the world origin."""
        cones = self.cones.copy()
        cones[:, 0:3] = cones[:, 0:3] @ rotation.T
        cones[:, 4:7] = cones[:, 4:7] @ rotation.T
        return BodyGeometry(
            cones=cones,
            cone_parts=self.cone_parts,
            ellipsoids=self.ellipsoids @ rotation.T,
            ellipsoid_axes=rotation @ self.ellipsoid_axes,
            ellipsoid_parts=self.ellipsoid_parts,
            keypoints=self.keypoints @ rotation.T,
            keypoint_tolerance=self.keypoint_tolerance,
            head_frame=rotation @ self.head_frame,
            head_axes=self.head_axes,
        )

    def points(self) -> np.ndarray:
        """``(N, 3)`` points spanning the body (volume centres and ends), for framing."""
        return np.concatenate([self.cones[:, 0:3], self.cones[:, 4:7], self.ellipsoids])


@dataclass(frozen=True)
class Clothing:
    """What clothes add to the body's volumes: bulk (metres of extra girth) and coverage.

    ``sleeve`` and ``legs`` measure garments along a limb as in ``PersonLook``: 0 bare, 1 to the
    elbow / knee, 2 to the wrist / ankle.
    """

    top_bulk: float = 0.0
    bottom_bulk: float = 0.0
    sleeve: float = 0.0
    legs: float = 2.0
    long_hair: bool = False


NAKED = Clothing()
# A garment adds its bulk to a limb segment it covers at least this far.
COVERED = 0.3


def build_body(
    shape: BodyShape,
    angles: np.ndarray,
    clothing: Clothing = NAKED,
    *,
    position: np.ndarray | None = None,
) -> BodyGeometry:
    """Pose ``shape`` with ``angles`` ``(17, 3)`` (degrees); the pelvis goes to ``position``."""
    rot = local_rotations(angles)
    origin = np.zeros(3) if position is None else np.asarray(position, dtype=np.float64)
    up = np.array([0.0, 1.0, 0.0])
    down = -up

    r_root = rot[J["root"]]
    pelvis = origin
    r_lumbar = r_root @ rot[J["lumbar"]]
    waist = pelvis + r_lumbar @ (up * shape.lumbar)
    r_thorax = r_lumbar @ rot[J["thorax"]]
    neck_base = waist + r_thorax @ (up * shape.thoracic)
    r_neck = r_thorax @ rot[J["neck"]]
    head_base = neck_base + r_neck @ (up * shape.neck)
    r_head = r_neck @ rot[J["head"]]
    hx, hy, hz = shape.head_axes
    head_centre = head_base + r_head @ np.array([0.0, 0.75 * hy, 0.12 * hz])

    cones: list[np.ndarray] = []
    cone_parts: list[int] = []
    centres: list[np.ndarray] = []
    axes: list[np.ndarray] = []
    ell_parts: list[int] = []

    def cone(part: str, a: np.ndarray, ra: float, b: np.ndarray, rb: float) -> None:
        cones.append(np.array([*a, ra, *b, rb]))
        cone_parts.append(P[part])

    def ellipsoid(part: str, centre: np.ndarray, frame: np.ndarray, half: tuple) -> None:
        centres.append(centre)
        axes.append(frame * np.asarray(half, dtype=np.float64))
        ell_parts.append(P[part])

    top, bottom = clothing.top_bulk, clothing.bottom_bulk

    def bulky(axes3: tuple[float, float, float], extra: float) -> tuple[float, float, float]:
        return (axes3[0] + extra, axes3[1], axes3[2] + extra)

    # Torso: pelvis, waist and chest ellipsoids that overlap into one trunk.
    ellipsoid(
        "pelvis",
        pelvis + r_root @ (down * 0.15 * shape.pelvis_axes[1]),
        r_root,
        bulky(shape.pelvis_axes, bottom),
    )
    ellipsoid(
        "waist",
        pelvis + r_lumbar @ (up * 0.62 * shape.lumbar),
        r_lumbar,
        bulky(shape.waist_axes, top),
    )
    chest_centre = waist + r_thorax @ np.array([0.0, 0.52 * shape.thoracic, 0.01 * shape.height])
    ellipsoid("chest", chest_centre, r_thorax, bulky(shape.chest_axes, top))
    cone(
        "neck",
        neck_base - r_thorax @ (up * 0.02 * shape.height),
        shape.neck_r,
        head_base + r_head @ (up * 0.3 * hy),
        shape.neck_r * 0.92,
    )
    ellipsoid("head", head_centre, r_head, shape.head_axes)

    head_half = np.array(shape.head_axes)
    head_scale = hy / 0.11  # face features were measured on a head 0.11 m in half-height

    def on_head(direction: np.ndarray) -> np.ndarray:
        unit = direction / np.linalg.norm(direction)
        return head_centre + r_head @ (unit * head_half)

    nose_root = on_head(NOSE_ROOT_DIRECTION) - r_head @ np.array([0.0, 0.0, 0.004])
    nose_tip = nose_root + r_head @ (np.array([0.0, -0.55, 0.85]) * NOSE_LENGTH * head_scale)
    cone("nose", nose_root, NOSE_RADII[0] * head_scale, nose_tip, NOSE_RADII[1] * head_scale)

    keypoints = np.zeros((COCO17.num_keypoints, 3))
    keypoints[COCO17.index("nose")] = nose_tip
    tolerance = np.zeros(COCO17.num_keypoints)
    face_tol = FACE_DEPTH_TOLERANCE * hz
    for k in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        tolerance[COCO17.index(k)] = face_tol

    if clothing.long_hair:
        hair_centre = head_centre + r_head @ np.array([0.0, -0.55 * hy, -0.75 * hz])
        ellipsoid("hair", hair_centre, r_head, (hx * 0.95, hy * 1.15, hz * 0.45))

    # The shoulder girdle (trapezius and deltoids) as one capsule across the top of the chest.
    sleeve_bulk = top if clothing.sleeve > COVERED else 0.0
    yoke = np.array(
        [
            shape.shoulder_half,
            -shape.shoulder_drop + 0.35 * shape.upper_arm_r[0],
            -0.01 * shape.height,
        ]
    )
    cone(
        "chest",
        neck_base + r_thorax @ (yoke * (1.0, 1.0, 1.0)),
        shape.upper_arm_r[0] + top,
        neck_base + r_thorax @ (yoke * (-1.0, 1.0, 1.0)),
        shape.upper_arm_r[0] + top,
    )

    for side, sign in (("left", 1.0), ("right", -1.0)):
        mirror = np.array([sign, 1.0, 1.0])
        keypoints[COCO17.index(f"{side}_eye")] = on_head(EYE_DIRECTION * mirror)
        ear_dir = EAR_DIRECTION * mirror
        ear_centre = on_head(ear_dir)
        keypoints[COCO17.index(f"{side}_ear")] = ear_centre
        ex, ey, ez = (v * head_scale for v in EAR_AXES)
        ellipsoid(f"{side}_ear", ear_centre, r_head, (ex, ey, ez))

        # Arm.
        shoulder = neck_base + r_thorax @ np.array(
            [sign * shape.shoulder_half, -shape.shoulder_drop, -0.01 * shape.height]
        )
        r_upper = r_thorax @ rot[J[f"{side}_shoulder"]]
        elbow = shoulder + r_upper @ (down * shape.upper_arm)
        r_fore = r_upper @ rot[J[f"{side}_elbow"]]
        wrist = elbow + r_fore @ (down * shape.forearm)
        r_hand = r_fore @ rot[J[f"{side}_wrist"]]
        hand_centre = wrist + r_hand @ (down * 0.45 * shape.hand)
        ua0, ua1 = (r + sleeve_bulk for r in shape.upper_arm_r)
        fa0, fa1 = shape.forearm_r
        if clothing.sleeve > 1.0 + COVERED:
            fa0, fa1 = fa0 + top, fa1 + 0.5 * top
        cone(f"{side}_upper_arm", shoulder, ua0, elbow, ua1)
        cone(f"{side}_forearm", elbow, fa0, wrist, fa1)
        hand_half = (0.45 * shape.hand * 0.42, 0.5 * shape.hand, fa1 * 0.75)
        ellipsoid(f"{side}_hand", hand_centre, r_hand, hand_half)

        # Leg.
        hip = pelvis + r_root @ np.array([sign * shape.hip_half, -shape.hip_drop, 0.0])
        r_thigh = r_root @ rot[J[f"{side}_hip"]]
        knee = hip + r_thigh @ (down * shape.thigh)
        r_shin = r_thigh @ rot[J[f"{side}_knee"]]
        ankle = knee + r_shin @ (down * shape.shin)
        r_foot = r_shin @ rot[J[f"{side}_ankle"]]
        leg_bulk = bottom if clothing.legs > COVERED else 0.0
        th0, th1 = (r + leg_bulk for r in shape.thigh_r)
        sh0, sh1 = shape.shin_r
        if clothing.legs > 1.0 + COVERED:
            sh0, sh1 = sh0 + bottom, sh1 + bottom
        cone(f"{side}_thigh", hip, th0, knee, th1)
        cone(f"{side}_shin", knee, sh0, ankle, sh1)
        sole = shape.ankle_height
        heel_r, toe_r = 0.58 * sole, 0.42 * sole
        heel = ankle + r_foot @ np.array([0.0, heel_r - sole, -0.14 * shape.foot])
        toe = ankle + r_foot @ np.array([0.0, toe_r - sole, 0.66 * shape.foot])
        cone(f"{side}_foot", heel, heel_r, toe, toe_r)

        for name, point, radius in (
            ("shoulder", shoulder, ua0),
            ("elbow", elbow, max(ua1, fa0)),
            ("wrist", wrist, max(fa1, hand_half[2])),
            ("hip", hip, max(th0, shape.pelvis_axes[2])),
            ("knee", knee, max(th1, sh0)),
            ("ankle", ankle, max(sh1, heel_r)),
        ):
            index = COCO17.index(f"{side}_{name}")
            keypoints[index] = point
            tolerance[index] = JOINT_DEPTH_TOLERANCE * radius

    return BodyGeometry(
        cones=np.array(cones),
        cone_parts=np.array(cone_parts, dtype=np.int16),
        ellipsoids=np.array(centres),
        ellipsoid_axes=np.array(axes),
        ellipsoid_parts=np.array(ell_parts, dtype=np.int16),
        keypoints=keypoints,
        keypoint_tolerance=tolerance,
        head_frame=r_head,
        head_axes=head_half,
    )
