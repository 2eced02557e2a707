"""Keypoint skeletons as data: names, left/right flip pairs, limbs and OKS sigmas.

The COCO-17 person skeleton (Lin et al., 2014) is the single source of these facts for the whole
package; readers of other label layouts (LSP, say) map their joints onto it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    ``limbs`` are 0-based index pairs; ``sigmas`` are the per-keypoint OKS constants of the COCO
    keypoint evaluation (the standard deviation of human annotators, as a fraction of sqrt(area)).
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if len(set(self.keypoints)) != k:
            raise ValueError(f"skeleton {self.name!r}: keypoint names repeat")
        if len(self.sigmas) != k:
            raise ValueError(f"skeleton {self.name!r}: {len(self.sigmas)} sigmas for {k} keypoints")
        for a, b in (*self.flip_pairs, *self.limbs):
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise ValueError(f"skeleton {self.name!r}: bad index pair ({a}, {b})")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @cached_property
    def flip_index(self) -> np.ndarray:
        """Permutation ``p`` such that keypoint ``p[i]`` of a mirrored person is keypoint ``i``."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @cached_property
    def sides(self) -> tuple[str, ...]:
        """``"left"``, ``"right"`` or ``"center"`` per keypoint (the person's own side)."""
        out = []
        for name in self.keypoints:
            if name.startswith("left_"):
                out.append("left")
            elif name.startswith("right_"):
                out.append("right")
            else:
                out.append("center")
        return tuple(out)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"skeleton {self.name!r} has no keypoint {name!r}") from None

    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def coco_skeleton(self) -> list[list[int]]:
        """Limbs as the 1-based pairs of a COCO ``categories[].skeleton`` entry."""
        return [[a + 1, b + 1] for a, b in self.limbs]


COCO17 = Skeleton(
    name="coco17",
    keypoints=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
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
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO's own category skeleton, made 0-based.
    limbs=(
        (15, 13),
        (13, 11),
        (16, 14),
        (14, 12),
        (11, 12),
        (5, 11),
        (6, 12),
        (5, 6),
        (5, 7),
        (6, 8),
        (7, 9),
        (8, 10),
        (1, 2),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
    ),
    sigmas=(
        0.026,
        0.025,
        0.025,
        0.035,
        0.035,
        0.079,
        0.079,
        0.072,
        0.072,
        0.062,
        0.062,
        0.107,
        0.107,
        0.087,
        0.087,
        0.089,
        0.089,
    ),
)
