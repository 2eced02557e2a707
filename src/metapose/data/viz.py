"""Drawing poses and boxes on images (OpenCV, anti-aliased), for previews, figures and debugging.

Colours follow one documented palette so every picture in the project reads the same way:
the person's own left is orange, the right is blue and the midline (face-to-face, shoulder and
hip bars, whatever joins the two sides) is green. Keypoints come as ``(K, 3)`` ``(x, y, v)``
where ``v`` is either a COCO visibility flag (2 visible, 1 occluded, 0 unlabelled) or a
prediction score; flags draw occluded joints hollow, scores size and fade joints and limbs.
All functions are pure: they return a drawn copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from metapose.skeleton import COCO17, Skeleton

# RGB colours by the side of the body a joint or limb is on (the person's own side).
SIDE_COLOURS: dict[str, tuple[int, int, int]] = {
    "left": (255, 140, 0),  # orange
    "right": (0, 150, 255),  # blue
    "center": (40, 210, 70),  # green
}
BOX_COLOUR = (255, 230, 0)
OUTLINE_COLOUR = (0, 0, 0)
SHIFT = 4  # sub-pixel bits for OpenCV's fixed-point coordinates
MIN_ALPHA = 0.25  # the faintest a confident-enough keypoint is drawn

KeypointKind = Literal["auto", "flags", "scores"]


def _rgb_copy(image: np.ndarray) -> np.ndarray:
    out = np.asarray(image)
    if out.dtype != np.uint8:
        raise ValueError(f"draw on uint8 images, got {out.dtype}")
    if out.ndim == 2:
        return cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {out.shape}")
    return out.copy()


def _sizes(image: np.ndarray, radius: int | None, thickness: int | None) -> tuple[int, int]:
    short = min(image.shape[:2])
    r = radius if radius is not None else max(2, round(short / 90))
    t = thickness if thickness is not None else max(1, round(short / 200))
    return r, t


def _fixed(point: Sequence[float] | np.ndarray) -> tuple[int, int]:
    return int(round(point[0] * (1 << SHIFT))), int(round(point[1] * (1 << SHIFT)))


class _Faded:
    """Draw onto ``out`` directly, or (``alpha < 1``) onto a layer blended in on exit.

    The layer is only the part of ``out`` within ``reach`` pixels of ``points`` (what the
    drawing can touch), so that drawing a joint costs its own size, not the image's. Draw at
    ``point - offset``.
    """

    def __init__(
        self, out: np.ndarray, alpha: float, points: Sequence[np.ndarray], reach: float
    ) -> None:
        self.alpha = alpha
        self.region, self.offset = out, np.zeros(2)
        if alpha < 1.0:
            xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            height, width = out.shape[:2]
            x0, y0 = np.floor(xy.min(axis=0) - reach).astype(int)
            x1, y1 = np.ceil(xy.max(axis=0) + reach).astype(int) + 1
            x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
            y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
            if x1 > x0 and y1 > y0:
                self.region, self.offset = out[y0:y1, x0:x1], np.array([x0, y0], np.float64)
        self.target = self.region if alpha >= 1.0 else self.region.copy()

    def __enter__(self) -> np.ndarray:
        return self.target

    def __exit__(self, *exc: object) -> None:
        if self.target is self.region:
            return
        changed = (self.target != self.region).any(axis=2)
        blended = cv2.addWeighted(self.region, 1.0 - self.alpha, self.target, self.alpha, 0.0)
        np.copyto(self.region, blended, where=changed[..., None])


def is_flags(values: np.ndarray) -> bool:
    """Whether a keypoint column holds COCO flags rather than scores (all in {0, 1, 2}, some 2)."""
    return bool(np.isin(values, (0, 1, 2)).all() and (values == 2).any())


# Predicted keypoints scoring below this are left off overlays and figures (their position is a
# guess): the one threshold of `metapose predict` and the report's prediction figure.
DRAW_THRESHOLD = 0.3


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Skeleton = COCO17,
    *,
    threshold: float = 0.0,
    kind: KeypointKind = "auto",
    radius: int | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one person's keypoints ``(K, 3)`` and limbs on a copy of ``image`` (RGB uint8).

    ``kind`` says what the third column is (``"auto"``: flags when every value is 0, 1 or 2
    and one is 2, else scores). Flags: joints with ``v > 0`` are drawn, occluded ones (``v = 1``)
    hollow. Scores: joints scoring above ``threshold`` are drawn, sized and faded by the score
    (clipped to [0, 1]); a limb shows when both its ends do, at the lower of their scores.
    Sizes default to the image's size.
    """
    out = _rgb_copy(image)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape != (skeleton.num_keypoints, 3):
        raise ValueError(
            f"keypoints must be ({skeleton.num_keypoints}, 3) for {skeleton.name}, got {kp.shape}"
        )
    values = kp[:, 2]
    flags = kind == "flags" or (kind == "auto" and is_flags(values))
    if flags:
        shown = values > 0
        confidence = np.ones(len(kp))
        hollow = values == 1
    else:
        shown = values > threshold
        confidence = np.clip(values, 0.0, 1.0)
        hollow = np.zeros(len(kp), dtype=bool)
    shown &= np.isfinite(kp[:, :2]).all(axis=1)
    r, t = _sizes(out, radius, thickness)
    sides = skeleton.sides

    for a, b in skeleton.limbs:
        if not (shown[a] and shown[b]):
            continue
        side = sides[a] if sides[a] == sides[b] else "center"
        alpha = max(MIN_ALPHA, float(min(confidence[a], confidence[b])))
        ends = [kp[a, :2], kp[b, :2]]
        layer = _Faded(out, alpha, ends, t + 2)
        with layer as target:
            start, end = (_fixed(p - layer.offset) for p in ends)
            cv2.line(target, start, end, SIDE_COLOURS[side], t, cv2.LINE_AA, SHIFT)

    for k in np.flatnonzero(shown):
        alpha = max(MIN_ALPHA, float(confidence[k]))
        size = max(1, round(r * (0.5 + 0.5 * float(confidence[k]))))
        colour = SIDE_COLOURS[sides[k]]
        layer = _Faded(out, alpha, [kp[k, :2]], size + 1 + t + 2)
        with layer as target:
            centre = _fixed(kp[k, :2] - layer.offset)
            if hollow[k]:
                cv2.circle(target, centre, size << SHIFT, colour, t, cv2.LINE_AA, SHIFT)
            else:
                cv2.circle(
                    target, centre, (size + 1) << SHIFT, OUTLINE_COLOUR, -1, cv2.LINE_AA, SHIFT
                )
                cv2.circle(target, centre, size << SHIFT, colour, -1, cv2.LINE_AA, SHIFT)
    return out


def draw_box(
    image: np.ndarray,
    box: tuple[float, float, float, float] | np.ndarray,
    colour: tuple[int, int, int] = BOX_COLOUR,
    *,
    thickness: int | None = None,
    label: str | None = None,
) -> np.ndarray:
    """Draw an ``(x, y, w, h)`` box (and an optional text label above it) on a copy of ``image``."""
    out = _rgb_copy(image)
    x, y, w, h = (float(v) for v in box)
    _, t = _sizes(out, None, thickness)
    cv2.rectangle(out, _fixed((x, y)), _fixed((x + w, y + h)), colour, t, cv2.LINE_AA, SHIFT)
    if label:
        scale = max(0.3, min(out.shape[:2]) / 600)
        origin = (int(round(x)), max(int(round(y)) - 3, 10))
        cv2.putText(out, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out
