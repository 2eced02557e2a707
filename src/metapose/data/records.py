"""In-memory labelled images: what a renderer or an importer produces and a writer stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Person:
    """One labelled person in image pixel coordinates.

    ``keypoints`` is ``(K, 3)`` float32 ``(x, y, v)`` with COCO flags: 2 visible, 1 labelled but
    occluded, 0 unlabelled (x = y = 0). ``bbox`` is ``(x, y, w, h)``; ``area`` is the silhouette
    area in pixels, which OKS uses as the object's scale.
    """

    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: bool = False

    def __post_init__(self) -> None:
        kp = self.keypoints
        if kp.ndim != 2 or kp.shape[1] != 3:
            raise ValueError(f"keypoints must be (K, 3), got {kp.shape}")

    @property
    def num_labelled(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


@dataclass(frozen=True)
class LabelledImage:
    """An RGB image ``(H, W, 3)`` uint8 with the people in it."""

    image: np.ndarray
    people: tuple[Person, ...]

    def __post_init__(self) -> None:
        img = self.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
