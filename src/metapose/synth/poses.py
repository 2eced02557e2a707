"""Pose priors in joint-angle space: daily activities and unique (yoga, dance, gymnastics) poses.

A prior is a weighted mixture of *actions*; an action draws the angles that characterise it
(a gait phase for walking, the split of the legs for a leap, ...) around a jittered neutral
stance, and every sample is clipped to the anatomical limits of :data:`body.ANGLE_LIMITS`.
Angles follow :data:`body.POSE_JOINTS`. The ranges come from common descriptions of the
movements (gait: Perry & Burnfield, *Gait Analysis*, 2010; range of motion: AAOS normal values,
stretched towards the extremes trained gymnasts and dancers reach).

A sample also says how the body meets the floor: on the feet (the lowest point touches the
floor), sitting on a seat, airborne, or on hands and feet at once (bridges, downward dog), in
which case :func:`settle` tilts the whole body until both touch.

:func:`pose_statistics` gives numbers that tell priors apart (the share of people with their
ankles above their hips, with a hand above the head); the benchmark prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from metapose.synth.body import (
    NAKED,
    NUM_POSE_JOINTS,
    BodyGeometry,
    BodyShape,
    Clothing,
    J,
    P,
    build_body,
    clamp_to_limits,
    rot_x,
    sample_shape,
)
from metapose.synth.draws import weighted_index

Support = Literal["feet", "seat", "air", "hands_feet"]

NEUTRAL_JITTER = 3.0  # degrees, on every angle of every action
# How finely settle() searches the body's tilt for two-point support (degrees).
SETTLE_STEP = 2.0


class PoseSample(NamedTuple):
    """Joint angles ``(17, 3)`` in degrees, the action's name and how the body is supported.

    ``lift`` is the height of the lowest point above the floor (jumps); a ``"seat"`` support
    gets its seat height from :func:`settle`.
    """

    angles: np.ndarray
    action: str
    support: Support = "feet"
    lift: float = 0.0


class PosePrior:
    """A weighted mixture of actions; ``sample`` draws one posed angle set."""

    def __init__(self, name: str, actions: tuple[tuple[str, float, ActionFn], ...]) -> None:
        if not actions:
            raise ValueError(f"pose prior {name!r} has no actions")
        weights = np.array([w for _, w, _ in actions], dtype=np.float64)
        if (weights <= 0).any():
            raise ValueError(f"pose prior {name!r}: action weights must be positive")
        self.name = name
        self.actions = actions
        self._cumulative = np.cumsum(weights / weights.sum())

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.actions)

    def sample(self, rng: np.random.Generator) -> PoseSample:
        index = min(int(np.searchsorted(self._cumulative, rng.random())), len(self.actions) - 1)
        name, _, action = self.actions[index]
        pose = Pose(rng)
        support = action(pose)
        return PoseSample(clamp_to_limits(pose.angles), name, support.kind, support.lift)

    def __repr__(self) -> str:
        return f"PosePrior({self.name!r}, actions={self.action_names})"


@dataclass(frozen=True)
class Contact:
    kind: Support = "feet"
    lift: float = 0.0


FEET = Contact()
ActionFn = Callable[["Pose"], Contact]  # draws from the pose's own generator


@dataclass
class Pose:
    """A mutable angle array with named setters; starts as a relaxed, jittered stance."""

    rng: np.random.Generator
    angles: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.angles = self.rng.normal(0.0, NEUTRAL_JITTER, (NUM_POSE_JOINTS, 3))
        self.angles[J["root"]] = 0.0
        for side in ("left", "right"):
            self.set(f"{side}_elbow", flex=self.rng.uniform(5, 20))
            self.set(f"{side}_shoulder", abd=self.rng.uniform(3, 12))
            self.set(f"{side}_hip", twist=self.rng.uniform(0, 12))
            self.set(f"{side}_knee", flex=self.rng.uniform(0, 6))

    def set(
        self,
        joint: str,
        flex: float | None = None,
        abd: float | None = None,
        twist: float | None = None,
    ) -> None:
        row = self.angles[J[joint]]
        for i, value in enumerate((flex, abd, twist)):
            if value is not None:
                row[i] = value

    def add(self, joint: str, flex: float = 0.0, abd: float = 0.0, twist: float = 0.0) -> None:
        self.angles[J[joint]] += (flex, abd, twist)

    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def sides(self) -> tuple[str, str]:
        """(leading, other) side, at random."""
        return ("left", "right") if self.coin() else ("right", "left")

    def look_around(self, amount: float = 35.0) -> None:
        self.set("neck", twist=self.u(-amount, amount), flex=self.u(-10, 20))
        self.set("head", twist=self.u(-amount, amount) * 0.5)


# ----------------------------------------------------------------------------------- arm helpers


def arm_down(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(-10, 15), abd=p.u(3, 15), twist=p.u(-20, 20))
    p.set(f"{side}_elbow", flex=p.u(5, 30))


def hand_on_hip(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(-25, -5), abd=p.u(35, 55), twist=p.u(-80, -55))
    p.set(f"{side}_elbow", flex=p.u(95, 125))


def arm_folded(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(20, 45), abd=p.u(0, 15), twist=p.u(-85, -60))
    p.set(f"{side}_elbow", flex=p.u(110, 135))


def arm_phone(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(10, 35), abd=p.u(5, 20), twist=p.u(-40, -10))
    p.set(f"{side}_elbow", flex=p.u(100, 140))
    p.set(f"{side}_wrist", flex=p.u(-30, 10))


def arm_overhead(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(155, 180), abd=p.u(-5, 20), twist=p.u(-20, 20))
    p.set(f"{side}_elbow", flex=p.u(0, 25))


def arm_out(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(-10, 40), abd=p.u(70, 110), twist=p.u(-30, 30))
    p.set(f"{side}_elbow", flex=p.u(0, 30))


def arm_forward(p: Pose, side: str) -> None:
    p.set(f"{side}_shoulder", flex=p.u(70, 110), abd=p.u(0, 25), twist=p.u(-20, 20))
    p.set(f"{side}_elbow", flex=p.u(0, 25))


def random_daily_arm(p: Pose, side: str) -> None:
    choice = weighted_index(p.rng, (0.45, 0.15, 0.15, 0.15, 0.10))
    (arm_down, hand_on_hip, arm_folded, arm_phone, arm_forward)[choice](p, side)


# ----------------------------------------------------------------------------------- daily


def stand(p: Pose) -> Contact:
    lead, other = p.sides()
    if p.coin(0.25):
        arm_folded(p, lead)
        arm_folded(p, other)
    else:
        random_daily_arm(p, lead)
        random_daily_arm(p, other)
    # Weight on one leg: the other knee bends a little and the pelvis tilts.
    p.set(f"{other}_knee", flex=p.u(0, 20))
    p.set(f"{other}_hip", flex=p.u(-5, 15), abd=p.u(-5, 10))
    p.add("lumbar", abd=p.u(-6, 6))
    p.look_around()
    return FEET


def walk(p: Pose) -> Contact:
    phase = p.u(0, 2 * np.pi)
    stride = p.u(18, 28)
    for side, offset in (("left", 0.0), ("right", np.pi)):
        s = phase + offset
        p.set(f"{side}_hip", flex=5 + stride * np.sin(s))
        # The knee bends most in swing, just after toe-off (Perry's ~60 degrees).
        p.set(f"{side}_knee", flex=8 + 52 * max(0.0, np.sin(s + 1.1)) ** 2)
        p.set(f"{side}_ankle", flex=8 * np.sin(s - 0.6))
        p.set(f"{side}_shoulder", flex=-0.8 * stride * np.sin(s) + 3, abd=p.u(4, 12))
        p.set(f"{side}_elbow", flex=p.u(10, 35) + 8 * max(0.0, -np.sin(s)))
    p.set("lumbar", twist=6 * np.sin(phase), flex=p.u(0, 8))
    p.look_around(25)
    if p.coin(0.25):
        arm_phone(p, p.sides()[0])
    return FEET


def run(p: Pose) -> Contact:
    phase = p.u(0, 2 * np.pi)
    stride = p.u(35, 55)
    for side, offset in (("left", 0.0), ("right", np.pi)):
        s = phase + offset
        p.set(f"{side}_hip", flex=15 + stride * np.sin(s))
        p.set(f"{side}_knee", flex=20 + 90 * max(0.0, np.sin(s + 1.3)) ** 1.5)
        p.set(f"{side}_ankle", flex=-15 + 20 * np.sin(s))
        p.set(f"{side}_shoulder", flex=-stride * np.sin(s) + 5, abd=p.u(5, 15))
        p.set(f"{side}_elbow", flex=p.u(75, 105))
    p.set("lumbar", flex=p.u(5, 15), twist=10 * np.sin(phase))
    p.set("neck", flex=p.u(-15, 0))
    airborne = abs(np.cos(phase)) < 0.5
    return Contact("air", p.u(0.02, 0.12)) if airborne else FEET


def sit_chair(p: Pose) -> Contact:
    lead, other = p.sides()
    for side in ("left", "right"):
        p.set(f"{side}_hip", flex=p.u(75, 100), abd=p.u(0, 15))
        p.set(f"{side}_knee", flex=p.u(70, 110))
    if p.coin(0.3):  # legs crossed
        p.set(f"{lead}_hip", flex=p.u(95, 110), abd=p.u(-20, -10))
        p.set(f"{lead}_knee", flex=p.u(60, 90))
    p.set("lumbar", flex=p.u(-15, 20))
    for side in ("left", "right"):
        if p.coin(0.5):  # hands on the thighs
            p.set(f"{side}_shoulder", flex=p.u(15, 40), abd=p.u(5, 20))
            p.set(f"{side}_elbow", flex=p.u(40, 80))
        else:
            random_daily_arm(p, side)
    p.look_around()
    return Contact("seat")


def sit_floor(p: Pose) -> Contact:
    for side in ("left", "right"):
        if p.coin(0.6):  # cross-legged
            p.set(f"{side}_hip", flex=p.u(70, 90), abd=p.u(35, 55), twist=p.u(30, 45))
            p.set(f"{side}_knee", flex=p.u(125, 150))
        else:  # knee up
            p.set(f"{side}_hip", flex=p.u(60, 110), abd=p.u(0, 20))
            p.set(f"{side}_knee", flex=p.u(60, 130))
        p.set(f"{side}_shoulder", flex=p.u(0, 45), abd=p.u(5, 25))
        p.set(f"{side}_elbow", flex=p.u(20, 90))
    p.set("lumbar", flex=p.u(0, 25))
    p.look_around()
    return FEET


def crouch(p: Pose) -> Contact:
    depth = p.u(0.6, 1.0)
    for side in ("left", "right"):
        p.set(f"{side}_hip", flex=depth * p.u(105, 130), abd=p.u(5, 25))
        p.set(f"{side}_knee", flex=depth * p.u(115, 150))
        p.set(f"{side}_ankle", flex=depth * p.u(15, 30))
        p.set(f"{side}_shoulder", flex=p.u(20, 80), abd=p.u(5, 25))
        p.set(f"{side}_elbow", flex=p.u(10, 80))
    p.set("lumbar", flex=p.u(15, 45))
    p.set("neck", flex=p.u(-25, 0))
    return FEET


def reach(p: Pose) -> Contact:
    lead, other = p.sides()
    if p.coin(0.5):  # up to a shelf, on tiptoe
        p.set(f"{lead}_shoulder", flex=p.u(130, 175), abd=p.u(0, 30))
        p.set(f"{lead}_elbow", flex=p.u(0, 30))
        for side in ("left", "right"):
            p.set(f"{side}_ankle", flex=p.u(-35, -10))
        p.set("neck", flex=p.u(-35, -10))
        p.set("lumbar", abd=(1 if lead == "left" else -1) * -p.u(0, 12))
    else:  # forward, across a table
        p.set(f"{lead}_shoulder", flex=p.u(60, 110), abd=p.u(0, 30))
        p.set(f"{lead}_elbow", flex=p.u(0, 40))
        p.set("lumbar", flex=p.u(10, 35))
        p.set("thorax", twist=(1 if lead == "right" else -1) * p.u(5, 20))
    random_daily_arm(p, other)
    return FEET


def wave(p: Pose) -> Contact:
    lead, other = p.sides()
    p.set(f"{lead}_shoulder", flex=p.u(-10, 40), abd=p.u(70, 120), twist=p.u(60, 90))
    p.set(f"{lead}_elbow", flex=p.u(40, 110))
    p.set(f"{lead}_wrist", flex=p.u(-30, 30), abd=p.u(-20, 30))
    if p.coin(0.2):  # both hands
        p.set(f"{other}_shoulder", flex=p.u(-10, 40), abd=p.u(70, 120), twist=p.u(60, 90))
        p.set(f"{other}_elbow", flex=p.u(40, 110))
    else:
        random_daily_arm(p, other)
    p.look_around(20)
    return FEET


def bend_over(p: Pose) -> Contact:
    trunk = p.u(30, 70)
    p.set("lumbar", flex=trunk)
    p.set("thorax", flex=p.u(5, 30))
    for side in ("left", "right"):
        p.set(f"{side}_hip", flex=p.u(20, 60))
        p.set(f"{side}_knee", flex=p.u(0, 35))
        # Arms hang: flexed about as far as the trunk leans.
        p.set(f"{side}_shoulder", flex=trunk * p.u(0.8, 1.3), abd=p.u(0, 15))
        p.set(f"{side}_elbow", flex=p.u(0, 40))
    p.set("neck", flex=p.u(-40, -10))
    return FEET


def kneel(p: Pose) -> Contact:
    lead, other = p.sides()
    p.set(f"{lead}_hip", flex=p.u(80, 100), abd=p.u(0, 15))
    p.set(f"{lead}_knee", flex=p.u(80, 100))
    p.set(f"{other}_hip", flex=p.u(-10, 15))
    p.set(f"{other}_knee", flex=p.u(85, 100))
    p.set(f"{other}_ankle", flex=p.u(-40, -20))
    random_daily_arm(p, lead)
    random_daily_arm(p, other)
    return FEET


# ----------------------------------------------------------------------------------- unique


def handstand(p: Pose) -> Contact:
    p.set("root", flex=180 + p.u(-12, 12), abd=p.u(-10, 10))
    for side in ("left", "right"):
        p.set(f"{side}_shoulder", flex=p.u(165, 180), abd=p.u(0, 20))
        p.set(f"{side}_elbow", flex=p.u(0, 12))
        p.set(f"{side}_wrist", flex=p.u(-75, -55))
    legs = p.rng.integers(4)
    lead, other = p.sides()
    if legs == 1:  # split
        p.set(f"{lead}_hip", flex=p.u(50, 110))
        p.set(f"{other}_hip", flex=p.u(-50, -20))
    elif legs == 2:  # straddle
        p.set("left_hip", abd=p.u(35, 80))
        p.set("right_hip", abd=p.u(35, 80))
    elif legs == 3:  # one knee bent
        p.set(f"{lead}_knee", flex=p.u(60, 120))
        p.set(f"{lead}_hip", flex=p.u(0, 40))
    p.set("lumbar", flex=p.u(-30, 0))
    p.set("neck", flex=p.u(-40, -10))
    for side in ("left", "right"):
        p.set(f"{side}_ankle", flex=p.u(-45, -30))
    return FEET


def cartwheel(p: Pose) -> Contact:
    sign = 1.0 if p.coin() else -1.0
    p.set("root", abd=sign * p.u(60, 180), flex=p.u(-15, 15))
    for side in ("left", "right"):
        p.set(f"{side}_shoulder", flex=p.u(-10, 20), abd=p.u(150, 180))
        p.set(f"{side}_elbow", flex=p.u(0, 15))
        p.set(f"{side}_hip", abd=p.u(45, 90), flex=p.u(-10, 15))
        p.set(f"{side}_knee", flex=p.u(0, 20))
        p.set(f"{side}_ankle", flex=p.u(-45, -20))
    return Contact("air", p.u(0.0, 0.05))


def front_split(p: Pose) -> Contact:
    lead, other = p.sides()
    p.set("root", flex=p.u(15, 35))
    p.set(f"{lead}_hip", flex=p.u(120, 165), abd=p.u(-5, 5))
    p.set(f"{lead}_knee", flex=p.u(0, 8))
    p.set(f"{other}_hip", flex=p.u(-60, -40))
    p.set(f"{other}_knee", flex=p.u(0, 15))
    for side in ("left", "right"):
        p.set(f"{side}_ankle", flex=p.u(-45, -25))
    p.set("lumbar", flex=-p.u(10, 35))
    if p.coin(0.5):
        arm_overhead(p, "left")
        arm_overhead(p, "right")
    else:
        arm_out(p, "left")
        arm_out(p, "right")
    return FEET


def side_split(p: Pose) -> Contact:
    for side in ("left", "right"):
        p.set(f"{side}_hip", abd=p.u(70, 90), flex=p.u(0, 20), twist=p.u(10, 40))
        p.set(f"{side}_knee", flex=p.u(0, 8))
        p.set(f"{side}_ankle", flex=p.u(-45, -20))
    if p.coin(0.4):  # folded forward over the floor
        p.set("lumbar", flex=p.u(40, 75))
        p.set("thorax", flex=p.u(15, 40))
        for side in ("left", "right"):
            arm_forward(p, side)
    else:
        p.set("root", flex=p.u(5, 25))
        for side in ("left", "right"):
            (arm_out if p.coin() else arm_overhead)(p, side)
    return FEET


def bridge(p: Pose) -> Contact:
    p.set("lumbar", flex=-p.u(45, 60))
    p.set("thorax", flex=-p.u(30, 45))
    p.set("neck", flex=-p.u(30, 45))
    for side in ("left", "right"):
        p.set(f"{side}_shoulder", flex=p.u(165, 180), abd=p.u(5, 20))
        p.set(f"{side}_elbow", flex=p.u(0, 20))
        p.set(f"{side}_wrist", flex=-p.u(60, 80))
        p.set(f"{side}_hip", flex=-p.u(15, 45), abd=p.u(5, 20))
        p.set(f"{side}_knee", flex=p.u(60, 110))
    if p.coin(0.3):  # one leg lifted
        lead = p.sides()[0]
        p.set(f"{lead}_hip", flex=p.u(40, 110))
        p.set(f"{lead}_knee", flex=p.u(0, 20))
    return Contact("hands_feet")


def one_leg_balance(p: Pose) -> Contact:
    stand_side, free = p.sides()
    p.set(f"{stand_side}_knee", flex=p.u(0, 8))
    kind = p.rng.integers(4)
    if kind == 0:  # tree: foot on the standing leg's knee
        p.set(f"{free}_hip", flex=p.u(30, 60), abd=p.u(45, 75), twist=p.u(35, 45))
        p.set(f"{free}_knee", flex=p.u(120, 150))
        arms = arm_overhead
    elif kind == 1:  # arabesque / scale: leg back, trunk forward
        p.set(f"{free}_hip", flex=-p.u(40, 60))
        p.set("root", flex=p.u(40, 80))
        p.set("lumbar", flex=-p.u(20, 45))
        p.set(f"{free}_knee", flex=p.u(0, 20))
        arms = arm_out if p.coin() else arm_forward
    elif kind == 2:  # attitude / passé
        p.set(f"{free}_hip", flex=p.u(60, 100), abd=p.u(20, 50), twist=p.u(20, 45))
        p.set(f"{free}_knee", flex=p.u(70, 110))
        arms = arm_overhead if p.coin() else arm_out
    else:  # standing leg raise, held by hand or free
        p.set(f"{free}_hip", flex=p.u(100, 165), abd=p.u(0, 40))
        p.set(f"{free}_knee", flex=p.u(0, 15))
        arms = arm_out
    p.set(f"{free}_ankle", flex=-p.u(30, 45))
    arms(p, "left")
    arms(p, "right")
    return FEET


def leap(p: Pose) -> Contact:
    lead, other = p.sides()
    p.set("root", flex=p.u(0, 20))
    p.set(f"{lead}_hip", flex=p.u(80, 150))
    p.set(f"{lead}_knee", flex=p.u(0, 25))
    p.set(f"{other}_hip", flex=-p.u(40, 60))
    p.set(f"{other}_knee", flex=p.u(0, 60))
    p.set("lumbar", flex=-p.u(10, 25))
    for side in ("left", "right"):
        p.set(f"{side}_ankle", flex=-p.u(30, 50))
        (arm_out if p.coin(0.6) else arm_overhead)(p, side)
    return Contact("air", p.u(0.2, 0.6))


def high_kick(p: Pose) -> Contact:
    stand_side, free = p.sides()
    p.set(f"{free}_hip", flex=p.u(110, 170), abd=p.u(-5, 35))
    p.set(f"{free}_knee", flex=p.u(0, 10))
    p.set(f"{free}_ankle", flex=-p.u(20, 45))
    p.set("lumbar", flex=-p.u(0, 15))
    for side in ("left", "right"):
        arm_out(p, side)
    return FEET


def downward_dog(p: Pose) -> Contact:
    p.set("lumbar", flex=p.u(-10, 10))
    for side in ("left", "right"):
        p.set(f"{side}_shoulder", flex=p.u(160, 180), abd=p.u(5, 15))
        p.set(f"{side}_elbow", flex=p.u(0, 10))
        p.set(f"{side}_wrist", flex=-p.u(60, 80))
        p.set(f"{side}_hip", flex=p.u(85, 115), abd=p.u(3, 12))
        p.set(f"{side}_knee", flex=p.u(0, 15))
        p.set(f"{side}_ankle", flex=p.u(10, 25))
    p.set("neck", flex=p.u(0, 20))
    if p.coin(0.3):  # three-legged dog
        lead = p.sides()[0]
        p.set(f"{lead}_hip", flex=-p.u(0, 40))
    return Contact("hands_feet")


def lunge(p: Pose) -> Contact:
    """Warrior and triangle poses: legs wide, a lunge or a side bend."""
    lead, other = p.sides()
    sign = 1.0 if lead == "left" else -1.0
    if p.coin(0.5):  # warrior I/II
        p.set(f"{lead}_hip", flex=p.u(70, 95), abd=p.u(10, 35))
        p.set(f"{lead}_knee", flex=p.u(70, 100))
        p.set(f"{other}_hip", flex=-p.u(25, 45), abd=p.u(10, 30))
        p.set(f"{other}_knee", flex=p.u(0, 10))
        for side in ("left", "right"):
            (arm_overhead if p.coin(0.4) else arm_out)(p, side)
        p.set("neck", twist=sign * p.u(30, 50))
    else:  # triangle: straight legs, sideways bend over the lead leg
        p.set(f"{lead}_hip", abd=p.u(30, 45), twist=p.u(30, 45))
        p.set(f"{other}_hip", abd=p.u(25, 40))
        p.set("lumbar", abd=sign * -p.u(20, 35))
        p.set("thorax", abd=sign * -p.u(15, 25))
        p.set("root", abd=sign * -p.u(10, 25))
        p.set(f"{lead}_shoulder", abd=p.u(80, 100))
        p.set(f"{other}_shoulder", abd=p.u(80, 100))
        p.set("neck", twist=sign * -p.u(20, 45))
    return FEET


def cobra(p: Pose) -> Contact:
    p.set("root", flex=p.u(85, 95))
    p.set("lumbar", flex=-p.u(35, 60))
    p.set("thorax", flex=-p.u(20, 40))
    p.set("neck", flex=-p.u(10, 35))
    for side in ("left", "right"):
        p.set(f"{side}_shoulder", flex=p.u(-10, 20), abd=p.u(10, 25))
        p.set(f"{side}_elbow", flex=p.u(0, 40))
        p.set(f"{side}_hip", flex=p.u(-10, 5))
        p.set(f"{side}_ankle", flex=-p.u(40, 50))
    return FEET


def boat(p: Pose) -> Contact:
    p.set("root", flex=-p.u(35, 55))
    p.set("lumbar", flex=p.u(0, 15))
    for side in ("left", "right"):
        p.set(f"{side}_hip", flex=p.u(95, 130), abd=p.u(0, 10))
        p.set(f"{side}_knee", flex=p.u(0, 60))
        p.set(f"{side}_ankle", flex=-p.u(20, 40))
        p.set(f"{side}_shoulder", flex=p.u(60, 100), abd=p.u(0, 15))
        p.set(f"{side}_elbow", flex=p.u(0, 15))
    return FEET


def straddle_jump(p: Pose) -> Contact:
    for side in ("left", "right"):
        p.set(f"{side}_hip", flex=p.u(60, 100), abd=p.u(55, 85))
        p.set(f"{side}_knee", flex=p.u(0, 15))
        p.set(f"{side}_ankle", flex=-p.u(30, 50))
        p.set(f"{side}_shoulder", flex=p.u(20, 90), abd=p.u(60, 120))
        p.set(f"{side}_elbow", flex=p.u(0, 20))
    p.set("lumbar", flex=p.u(5, 25))
    return Contact("air", p.u(0.3, 0.7))


def forward_fold(p: Pose) -> Contact:
    p.set("lumbar", flex=p.u(60, 75))
    p.set("thorax", flex=p.u(25, 45))
    p.set("neck", flex=p.u(10, 40))
    for side in ("left", "right"):
        p.set(f"{side}_hip", flex=p.u(60, 100))
        p.set(f"{side}_knee", flex=p.u(0, 10))
        p.set(f"{side}_shoulder", flex=p.u(70, 150), abd=p.u(0, 15))
        p.set(f"{side}_elbow", flex=p.u(0, 40))
    return FEET


DAILY = PosePrior(
    "daily",
    (
        ("stand", 0.28, stand),
        ("walk", 0.20, walk),
        ("run", 0.07, run),
        ("sit_chair", 0.12, sit_chair),
        ("sit_floor", 0.04, sit_floor),
        ("crouch", 0.06, crouch),
        ("reach", 0.06, reach),
        ("wave", 0.07, wave),
        ("bend_over", 0.06, bend_over),
        ("kneel", 0.04, kneel),
    ),
)

UNIQUE = PosePrior(
    "unique",
    (
        ("handstand", 0.10, handstand),
        ("cartwheel", 0.08, cartwheel),
        ("front_split", 0.07, front_split),
        ("side_split", 0.06, side_split),
        ("bridge", 0.08, bridge),
        ("one_leg_balance", 0.15, one_leg_balance),
        ("leap", 0.07, leap),
        ("high_kick", 0.08, high_kick),
        ("downward_dog", 0.07, downward_dog),
        ("lunge", 0.10, lunge),
        ("cobra", 0.04, cobra),
        ("boat", 0.04, boat),
        ("straddle_jump", 0.03, straddle_jump),
        ("forward_fold", 0.04, forward_fold),
    ),
)


# ----------------------------------------------------------------------------------- settling


def _hand_and_foot_points(body: BodyGeometry) -> tuple[np.ndarray, np.ndarray]:
    hands = body.ellipsoids[np.isin(body.ellipsoid_parts, (P["left_hand"], P["right_hand"]))]
    feet_rows = body.cones[np.isin(body.cone_parts, (P["left_foot"], P["right_foot"]))]
    feet = np.concatenate([feet_rows[:, 0:3], feet_rows[:, 4:7]])
    return hands, feet


def settle(
    shape: BodyShape, sample: PoseSample, clothing: Clothing = NAKED
) -> tuple[BodyGeometry, float]:
    """Build the body and stand it on the floor (``y = 0``); returns it and the seat height.

    Two-point support (``hands_feet``) first tilts the body about its pelvis so that hands and
    feet reach the same height. A seated body is dropped until the feet touch the floor and the
    seat height is what remains under the pelvis (0 for other supports).
    """
    body = build_body(shape, sample.angles, clothing)
    if sample.support == "hands_feet":
        hands, feet = _hand_and_foot_points(body)
        every = body.points()
        tilts = np.arange(-180.0, 180.0, SETTLE_STEP)
        rad = np.deg2rad(tilts)[:, None]
        cos, sin = np.cos(rad), np.sin(rad)

        def lowest(points: np.ndarray) -> np.ndarray:
            # Height of the points after tilting by each candidate (about x): y cos - z sin.
            return (points[None, :, 1] * cos - points[None, :, 2] * sin).min(1)

        # Both hands and feet must be the lowest points of the body.
        misfit = np.maximum(lowest(hands), lowest(feet)) - lowest(every)
        best = float(tilts[int(np.argmin(misfit))])
        body = body.rotated(rot_x(best))
    seat = 0.0
    low = body.lowest_point()
    if sample.support == "seat":
        feet = _hand_and_foot_points(body)[1]
        foot_low = float(feet[:, 1].min()) - 0.5 * shape.ankle_height
        seat = max(0.0, -shape.thigh_r[0] - foot_low)
        low = min(low, foot_low)
    lift = sample.lift if sample.support == "air" else 0.0
    return body.translated(np.array([0.0, lift - low, 0.0])), seat


# ----------------------------------------------------------------------------------- statistics


class PoseStatistics(NamedTuple):
    """Shares (0..1) of a prior's people, posed on random bodies and settled on the floor."""

    ankles_above_hips: float  # the ankles' mean height above the hips' mean height
    hand_above_head: float  # either wrist above the top of the head
    inverted: float  # the nose below the hips


def pose_statistics(prior: PosePrior, num: int, seed: int) -> PoseStatistics:
    """Monte-Carlo shares over ``num`` poses of ``prior`` on random bodies (seeded)."""
    rng = np.random.default_rng(seed)
    ankles = hands = inverted = 0
    for _ in range(num):
        shape = sample_shape(rng)
        sample = prior.sample(rng)
        body, _ = settle(shape, sample)
        kp = body.keypoints
        ankles += kp[15:17, 1].mean() > kp[11:13, 1].mean()
        head_top = body.ellipsoids[body.ellipsoid_parts == P["head"], 1].max() + shape.head_axes[1]
        hands += kp[9:11, 1].max() > head_top
        inverted += kp[0, 1] < kp[11:13, 1].mean()
    return PoseStatistics(float(ankles) / num, float(hands) / num, float(inverted) / num)


def angle_distance(a: PosePrior, b: PosePrior, num: int, seed: int) -> float:
    """Mean over joint angles of the 1-D Wasserstein distance (degrees) between two priors."""
    # scipy.stats takes a while to import; only this statistic needs it.
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(seed)
    angles_a = np.stack([a.sample(rng).angles for _ in range(num)]).reshape(num, -1)
    angles_b = np.stack([b.sample(rng).angles for _ in range(num)]).reshape(num, -1)
    moving = angles_a.std(0) + angles_b.std(0) > 0
    return float(
        np.mean(
            [wasserstein_distance(angles_a[:, i], angles_b[:, i]) for i in np.flatnonzero(moving)]
        )
    )
