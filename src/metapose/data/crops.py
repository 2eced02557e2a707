"""Top-down person crops: box -> centre/scale, the crop affine, and SimpleBaseline augmentation.

Follows SimpleBaseline (Xiao et al., 2018) and HRNet (Sun et al., 2019) for the half-body
augmentation. A person box is grown to the model's aspect ratio and padded by :data:`BOX_PADDING`;
the crop is a similarity transform (scale, rotation, optional mirror) of the image onto the input
size. Scales are kept in pixels: no ``pixel_std``.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from metapose.config import TopDownAugmentConfig
from metapose.skeleton import COCO17, Skeleton

BOX_PADDING = 1.25  # SimpleBaseline's context margin around a person box
HALF_BODY_PADDING = 1.5  # HRNet's margin around the joints of a half-body crop


class CropParams(NamedTuple):
    """Where a crop sits in its image: centre ``(x, y)`` and size ``(w, h)`` in image pixels."""

    center: np.ndarray  # (2,) float64
    scale: np.ndarray  # (2,) float64
    rotation: float = 0.0  # degrees, SimpleBaseline's sign convention
    flip: bool = False


def box_to_center_scale(
    box: tuple[float, float, float, float] | np.ndarray,
    aspect_ratio: float,
    padding: float = BOX_PADDING,
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y, w, h)`` box -> centre and the padded ``(w, h)`` with ``w / h == aspect_ratio``."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) * padding


def crop_matrix(
    params: CropParams, output_size: tuple[int, int], *, inverse: bool = False, udp: bool = False
) -> np.ndarray:
    """The ``(2, 3)`` affine taking image pixels to crop pixels (or back, with ``inverse``).

    The crop centre maps to ``(W/2, H/2)`` and the crop width ``scale[0]`` to ``W`` pixels, as in
    SimpleBaseline's ``get_affine_transform``. With ``udp`` (Huang et al., CVPR 2020) the box's
    width maps onto the ``W - 1`` pixel spacings between the first and last pixel centres and its
    centre onto ``((W-1)/2, (H-1)/2)``, so flipping and resizing are exact. A mirror reflects
    about the crop's vertical axis.
    """
    out_w, out_h = output_size
    if udp:  # each axis spans its own pixel-centre range: zooms differ by (W-1)/(H-1) vs W/H
        zoom = np.array([(out_w - 1) / params.scale[0], (out_h - 1) / params.scale[1]])
        span_w, span_h = out_w - 1, out_h - 1
    else:
        zoom = np.full(2, out_w / params.scale[0])
        span_w, span_h = out_w, out_h
    theta = np.deg2rad(params.rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    # SimpleBaseline's convention: the crop's "up" axis is the image's up axis rotated by
    # ``rotation`` (standard rotation matrix in pixel coordinates); the warp applies R(-rotation).
    linear = zoom[:, None] * np.array([[cos, sin], [-sin, cos]])
    offset = np.array([span_w * 0.5, span_h * 0.5]) - linear @ params.center
    forward = np.concatenate([linear, offset[:, None]], axis=1)
    if params.flip:
        mirror = np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        forward = (mirror @ np.vstack([forward, [0.0, 0.0, 1.0]]))[:2]
    if inverse:
        return cv2.invertAffineTransform(forward)
    return forward


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Transform ``(..., 2)`` points by a ``(2, 3)`` affine."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(
        image, matrix, output_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def crop_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, params: CropParams, skeleton: Skeleton = COCO17
) -> np.ndarray:
    """Image-space ``(K, 3)`` keypoints -> crop space; mirrored crops swap left and right."""
    out = keypoints.astype(np.float32).copy()
    out[:, :2] = apply_affine(keypoints[:, :2].astype(np.float64), matrix)
    if params.flip:
        out = out[skeleton.flip_index]
    out[out[:, 2] == 0, :2] = 0.0
    return out


def half_body_box(
    keypoints: np.ndarray, skeleton: Skeleton, rng: np.random.Generator
) -> tuple[float, float, float, float] | None:
    """The box around the upper or the lower body's labelled joints (HRNet), or None."""
    labelled = keypoints[:, 2] > 0
    lower = np.array([n.endswith(("hip", "knee", "ankle")) for n in skeleton.keypoints])
    upper_idx = np.flatnonzero(labelled & ~lower)
    lower_idx = np.flatnonzero(labelled & lower)
    pick_upper = rng.random() < 0.5
    chosen = upper_idx if (pick_upper and len(upper_idx) > 2) or len(lower_idx) <= 2 else lower_idx
    if len(chosen) < 2:
        return None
    pts = keypoints[chosen, :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(x0), float(y0), float(max(x1 - x0, 1.0)), float(max(y1 - y0, 1.0)))


def sample_crop_params(
    box: tuple[float, float, float, float],
    keypoints: np.ndarray,
    aspect_ratio: float,
    augment: TopDownAugmentConfig | None,
    rng: np.random.Generator | None,
    skeleton: Skeleton = COCO17,
) -> CropParams:
    """A person box's crop; for training randomly scaled, rotated, mirrored or halved."""
    center, scale = box_to_center_scale(box, aspect_ratio)
    if augment is None or rng is None:
        return CropParams(center, scale)
    if (
        augment.half_body_prob > 0
        and int((keypoints[:, 2] > 0).sum()) > augment.half_body_min_joints
        and rng.random() < augment.half_body_prob
    ):
        half = half_body_box(keypoints, skeleton, rng)
        if half is not None:
            center, scale = box_to_center_scale(half, aspect_ratio, HALF_BODY_PADDING)
    sf, rf = augment.scale_factor, augment.rotation_factor
    scale = scale * float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    rotation = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf))
    if rng.random() >= augment.rotation_prob:
        rotation = 0.0
    flip = bool(rng.random() < augment.flip_prob)
    return CropParams(center, scale, rotation, flip)
