"""Pinhole cameras and the priors that place them: focal length, view direction, height, roll.

A :class:`Camera` is an ideal perspective camera (Hartley & Zisserman, *Multiple View Geometry*,
2nd ed., ch. 6) with square pixels. World frame: ``y`` up, the floor is ``y = 0``. Camera frame:
``x`` right, ``y`` down, ``z`` along the optical axis, so projected pixels grow rightwards and
downwards like image indices (pixel centres at integer coordinates).

A :class:`CameraPrior` draws the viewpoint of a domain: the azimuth around the person (front,
back and side views), the elevation (eye level to overhead surveillance), the roll, the field of
view and, for whole scenes, the camera height and distance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from metapose.synth.draws import weighted_index

WORLD_UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class Camera:
    """``rotation`` takes world to camera axes; ``position`` is the camera centre (world)."""

    focal: float  # pixels
    cx: float
    cy: float
    rotation: np.ndarray  # (3, 3)
    position: np.ndarray  # (3,)
    width: int
    height: int

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points -> camera coordinates."""
        return (points - self.position) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` world points -> ``(N, 2)`` pixels and ``(N,)`` depths along the axis."""
        cam = self.to_camera(points)
        z = cam[:, 2]
        scale = self.focal / np.where(np.abs(z) < 1e-9, 1e-9, z)
        uv = cam[:, :2] * scale[:, None]
        uv += (self.cx, self.cy)
        return uv, z

    def rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World directions (not unit) of the rays through pixels ``u, v`` (broadcast)."""
        x = (u - self.cx) * (1.0 / self.focal)
        y = (v - self.cy) * (1.0 / self.focal)
        # Rows of the rotation are the camera axes in world coordinates. Python floats keep
        # float32 inputs float32 (numpy scalars would promote them).
        r = [[float(c) for c in row] for row in self.rotation]
        return (
            r[0][0] * x + r[1][0] * y + r[2][0],
            r[0][1] * x + r[1][1] * y + r[2][1],
            r[0][2] * x + r[1][2] * y + r[2][2],
        )

    def resized(self, scale: float) -> Camera:
        """The same view sampled on a grid ``scale`` times as fine (cv2.resize's pixel centres)."""
        return replace(
            self,
            focal=self.focal * scale,
            cx=(self.cx + 0.5) * scale - 0.5,
            cy=(self.cy + 0.5) * scale - 0.5,
            width=max(1, int(np.ceil(self.width * scale))),
            height=max(1, int(np.ceil(self.height * scale))),
        )


def look_at(position: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """World-to-camera rotation looking from ``position`` at ``target``, rolled about the axis."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, WORLD_UP)
    if np.linalg.norm(right) < 1e-6:  # looking straight down or up
        right = np.array([1.0, 0.0, 0.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])
    c, s = np.cos(np.deg2rad(roll_deg)), np.sin(np.deg2rad(roll_deg))
    roll = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return roll @ rot


def focal_from_fov(fov_deg: float, width: int) -> float:
    return 0.5 * width / np.tan(np.deg2rad(fov_deg) * 0.5)


@dataclass(frozen=True)
class CameraPrior:
    """Where a domain's cameras stand, in degrees and metres.

    ``azimuth_weights`` weighs front, side and back views (the person's facing relative to the
    camera, as in photographs, where frontal views dominate). ``elevation`` is the angle the
    camera looks down at the person; ``height`` and ``distance`` place scene cameras.
    """

    fov: tuple[float, float] = (40.0, 75.0)  # horizontal field of view
    azimuth_weights: tuple[float, float, float] = (0.55, 0.25, 0.20)  # front, side, back
    elevation: tuple[float, float] = (-8.0, 30.0)
    roll_sd: float = 4.0
    crop_distance: tuple[float, float] = (2.5, 9.0)
    height: tuple[float, float] = (0.9, 2.6)
    distance: tuple[float, float] = (3.0, 9.0)

    def __post_init__(self) -> None:
        for name in ("fov", "elevation", "crop_distance", "height", "distance"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"camera prior {name}: low {low} > high {high}")
        if not 0 < self.fov[0] < 170 or not 0 < self.fov[1] < 170:
            raise ValueError(f"camera prior fov must be in (0, 170) degrees, got {self.fov}")
        if min(self.azimuth_weights) < 0 or sum(self.azimuth_weights) <= 0:
            raise ValueError(f"azimuth_weights must be non-negative, got {self.azimuth_weights}")
        if self.crop_distance[0] <= 0 or self.distance[0] <= 0:
            raise ValueError("camera distances must be positive")

    def azimuth(self, rng: np.random.Generator) -> float:
        """Degrees around the person: 0 sees the face, 180 the back, +-90 a side."""
        view = weighted_index(rng, self.azimuth_weights)
        centre = (0.0, 90.0, 180.0)[view]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return float(sign * centre + rng.uniform(-35.0, 35.0))

    def roll(self, rng: np.random.Generator) -> float:
        return float(rng.normal(0.0, self.roll_sd))
