"""Task augmentation (paper §4.2, Fig. 2): affine, elastic and perspective warps of a person crop.

The paper enlarges its source data with three transforms, affine, elastic (Simard et al., 2003)
and perspective, and cuts the shuffled, augmented crops into tasks. Here a warp acts on a top-down
crop that already has the model's input size: an RGB uint8 image ``(H, W, 3)`` and its keypoints
``(K, 3)`` = ``(x, y, flag)`` in crop pixels, flag 2 visible, 1 occluded, 0 unlabelled.

Geometry. Pixel centres sit at integer coordinates (OpenCV's convention), so the crop covers
``[-0.5, W - 0.5) x [-0.5, H - 0.5)``. Affine and perspective warps are one homography ``A``
(input -> output), built here from the sampled parameters and applied with OpenCV to the image and
with the same matrix to the keypoints, so keypoints move exactly with the content. (albumentations
moves keypoints exactly too, but draws its parameters from its own random state; sampling them
from the caller's ``np.random.Generator`` keeps "same seed, same bytes" and lets affine,
perspective and elastic share one resampling of the image.)

The elastic warp is a smooth random displacement field ``d`` (uniform noise, Gaussian-filtered,
scaled by ``alpha``), applied as OpenCV's backward map: output pixel ``y`` shows input point
``y + d(y)``. A keypoint at ``x`` therefore goes to the ``y`` solving ``y + d(y) = x``, found by
fixed-point iteration ``y <- x - d(y)`` with bilinear sampling of ``d``; the field is damped
where needed so its Lipschitz constant stays below :data:`MAX_FIELD_LIPSCHITZ`, which keeps the
warp fold-free (the inverse exists) and the iteration contracting. albumentations'
ElasticTransform moves keypoints by the field itself instead, off by about a pixel.

Keypoints leaving the crop. As COCO marks a keypoint outside its image unlabelled, a labelled
keypoint that a warp moves outside the crop gets flag 0 and coordinates ``(0, 0)``; every other
keypoint keeps its flag, and unlabelled keypoints stay ``(0, 0, 0)``.

Styles. A style names the warps an augmentation may apply: ``"none"``, ``"affine"``,
``"elastic"``, ``"perspective"`` or ``"composed"`` (affine, then perspective, then elastic); each
warp of the style is applied with its own probability. The paper's augmentation draws one of its
three transforms per image; a style-per-task sampler draws one style per task with
:meth:`TaskAugmenter.sample_style` so that tasks differ the way domains do.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
from scipy import ndimage

from metapose.config import (
    PAPER_STYLES,
    PERSPECTIVE_CLIP,
    STYLES,
    AffineWarpConfig,
    ElasticWarpConfig,
    PerspectiveWarpConfig,
    Style,
    TaskAugmentConfig,
    Warp,
)

log = logging.getLogger(__name__)

STYLE_WARPS: dict[str, tuple[Warp, ...]] = {
    "none": (),
    "affine": ("affine",),
    "elastic": ("elastic",),
    "perspective": ("perspective",),
    "composed": ("affine", "perspective", "elastic"),
}

# Below 1 the map y -> y + d(y) is one-to-one (no folds) and y <- x - d(y) contracts by this factor
# per step at worst. At 0.5 the crop is nowhere stretched or squeezed beyond 1.5x / 0.5x, which
# still looks like a body and keeps small image details (and a test's dots) measurable.
MAX_FIELD_LIPSCHITZ = 0.5
# The elastic noise is drawn on cells this many times finer than sigma (see sample_elastic).
ELASTIC_CELLS_PER_SIGMA = 4
INVERSE_TOLERANCE = 1e-3  # crop pixels: far below the 1/32 px resolution of OpenCV's remap
INVERSE_MAX_ITERATIONS = 50  # 0.5 ** 50 shrinks any start error below 1e-15
# A projected point this close to the horizon (homogeneous w <= this) is treated as outside.
MIN_HOMOGENEOUS_W = 1e-6


class Augmented(NamedTuple):
    """An augmented crop and its keypoints, and the warps that were applied (in order)."""

    image: np.ndarray  # (H, W, C) uint8
    keypoints: np.ndarray  # (K, 3) float32 crop pixels (x, y, flag)
    warps: tuple[Warp, ...]


# ----------------------------------------------------------------------------- sampling


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def affine_matrix(
    size: tuple[int, int],
    *,
    scale: float = 1.0,
    rotation: float = 0.0,
    shear: tuple[float, float] = (0.0, 0.0),
    translate: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The ``(3, 3)`` affine (input -> output) about the centre of a ``(W, H)`` crop.

    ``rotation`` and ``shear`` (x, y) are in degrees, ``translate`` in crop pixels; the crop is
    zoomed, sheared, rotated, then shifted.
    """
    width, height = size
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    rotate = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    shear_x, shear_y = np.tan(np.deg2rad(shear[0])), np.tan(np.deg2rad(shear[1]))
    skew = np.array([[1.0, shear_x, 0.0], [shear_y, 1.0, 0.0], [0.0, 0.0, 1.0]])
    zoom = np.diag([scale, scale, 1.0])
    linear = rotate @ skew @ zoom
    return _translation(cx + translate[0], cy + translate[1]) @ linear @ _translation(-cx, -cy)


def sample_affine(
    cfg: AffineWarpConfig, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A random ``(3, 3)`` affine for a ``(W, H)`` crop."""
    low, high = np.log(cfg.scale[0]), np.log(cfg.scale[1])
    scale = float(np.exp(rng.uniform(low, high)))
    rotation = float(rng.uniform(-cfg.rotation, cfg.rotation))
    shear_x, shear_y = rng.uniform(-cfg.shear, cfg.shear, size=2)
    tx, ty = rng.uniform(-cfg.translate, cfg.translate, size=2) * np.asarray(size)
    return affine_matrix(
        size,
        scale=scale,
        rotation=rotation,
        shear=(float(shear_x), float(shear_y)),
        translate=(float(tx), float(ty)),
    )


def sample_perspective(
    cfg: PerspectiveWarpConfig, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A random ``(3, 3)`` homography (input -> output) for a ``(W, H)`` crop.

    The output's corners show the input at its corners moved by clipped N(0, scale * size).
    """
    width, height = size
    corners = np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64
    )
    jitter = np.clip(rng.normal(0.0, 1.0, size=(4, 2)), -PERSPECTIVE_CLIP, PERSPECTIVE_CLIP)
    viewed = corners + jitter * cfg.scale * np.array([width - 1, height - 1])
    return cv2.getPerspectiveTransform(viewed.astype(np.float32), corners.astype(np.float32))


def field_lipschitz(displacement: np.ndarray, spacing: float = 1.0) -> float:
    """An upper bound on the Lipschitz constant of a ``(H, W, 2)`` field's bilinear interpolant.

    ``spacing`` is the distance between samples. The Frobenius norm bounds the Jacobian's spectral
    norm; taking each column's largest finite difference separately bounds it over all pixels.
    """
    along_x = displacement[:, 1:] - displacement[:, :-1]
    along_y = displacement[1:] - displacement[:-1]
    worst_x = float((along_x[..., 0] ** 2 + along_x[..., 1] ** 2).max(initial=0.0))
    worst_y = float((along_y[..., 0] ** 2 + along_y[..., 1] ** 2).max(initial=0.0))
    return float(np.sqrt(worst_x + worst_y)) / spacing


def sample_elastic(
    cfg: ElasticWarpConfig, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A random ``(H, W, 2)`` float32 backward displacement (dx, dy) in crop pixels (Simard, 2003).

    The field is smooth at scale ``sigma``, so the noise is drawn on cells of ``step`` pixels
    (:data:`ELASTIC_CELLS_PER_SIGMA` per sigma), blurred by ``sigma / step`` cells and upsampled
    bilinearly: the same statistics as per-pixel noise (cell noise blurred in cells has ``step``
    times its amplitude, hence ``alpha / step``) at a fraction of the cost. Damped, when needed,
    to a Lipschitz constant of :data:`MAX_FIELD_LIPSCHITZ` (fold-free).
    """
    width, height = size
    step = max(1, int(cfg.sigma // ELASTIC_CELLS_PER_SIGMA))
    cells_x, cells_y = -(-width // step), -(-height // step)
    noise = rng.random((cells_y, cells_x, 2), dtype=np.float32) * 2.0 - 1.0
    blurred = cv2.GaussianBlur(noise, (0, 0), cfg.sigma / step, borderType=cv2.BORDER_REFLECT_101)
    coarse = np.asarray(blurred, dtype=np.float32) * np.float32(cfg.alpha / step)
    lipschitz = field_lipschitz(coarse, spacing=step)
    if lipschitz > MAX_FIELD_LIPSCHITZ:
        log.debug("elastic field damped from Lipschitz %.3f", lipschitz)
        coarse = coarse * np.float32(MAX_FIELD_LIPSCHITZ / lipschitz)
    # An integer zoom keeps the samples exactly ``step`` apart, so the bound above holds.
    fine = cv2.resize(coarse, (cells_x * step, cells_y * step), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(fine[:height, :width])


# ----------------------------------------------------------------------------- applying


def project(points: np.ndarray, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` points through a ``(3, 3)`` homography -> ``(N, 2)`` and ``(N,)`` "in front"."""
    homogeneous = points @ homography[:, :2].T + homography[:, 2]
    w = homogeneous[:, 2]
    in_front = w > MIN_HOMOGENEOUS_W
    safe_w = np.where(in_front, w, 1.0)
    return homogeneous[:, :2] / safe_w[:, None], in_front


def sample_field(displacement: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a ``(H, W, 2)`` field at ``(N, 2)`` points (x, y); edges extend."""
    n = len(points)
    rows = np.repeat(points[:, 1], 2)
    cols = np.repeat(points[:, 0], 2)
    channels = np.tile(np.arange(2, dtype=np.float64), n)
    values = ndimage.map_coordinates(
        displacement, np.stack([rows, cols, channels]), order=1, mode="nearest"
    )
    return values.reshape(n, 2).astype(np.float64)


def invert_displacement(
    displacement: np.ndarray,
    points: np.ndarray,
    *,
    max_iterations: int = INVERSE_MAX_ITERATIONS,
    tolerance: float = INVERSE_TOLERANCE,
) -> np.ndarray:
    """Where backward field ``d`` sends ``(N, 2)`` input points: the ``y`` with ``y + d(y) = x``.

    Fixed-point iteration ``y <- x - d(y)`` from ``y = x``; it contracts when ``d``'s Lipschitz
    constant is below 1. ``max_iterations=1`` gives the first-order guess ``x - d(x)``.
    """
    targets = points.astype(np.float64)
    current = targets.copy()
    for _ in range(max_iterations):
        updated = targets - sample_field(displacement, current)
        step = float(np.abs(updated - current).max(initial=0.0))
        current = updated
        if step < tolerance:
            break
    return current


@lru_cache(maxsize=8)
def _pixel_grid(width: int, height: int) -> np.ndarray:
    """``(H, W, 2)`` float32 pixel centres (x, y); cached, read-only (crops share a few sizes)."""
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = np.stack([grid_x, grid_y], axis=-1)
    grid.flags.writeable = False
    return grid


def inside_crop(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N,)`` whether ``(N, 2)`` points lie on a pixel of a ``(W, H)`` crop."""
    width, height = size
    x, y = points[:, 0], points[:, 1]
    return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def warp(
    image: np.ndarray,
    keypoints: np.ndarray,
    homography: np.ndarray | None = None,
    displacement: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a crop and its ``(K, 3)`` keypoints: homography (input -> output), then elastic field.

    One bilinear resampling of the image; the exposed border is black because mirrored content
    would show unlabelled copies of body parts. Keypoints follow the content exactly; labelled
    ones that leave the crop become ``(0, 0, 0)``.
    """
    height, width = image.shape[:2]
    size = (width, height)
    points = keypoints[:, :2].astype(np.float64)
    in_front = np.ones(len(points), dtype=bool)
    if homography is not None:
        points, in_front = project(points, homography)
    if displacement is None:
        if homography is None:
            warped = image.copy()
        else:
            warped = cv2.warpPerspective(
                image, homography, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            )
    else:
        # Output pixel y shows intermediate point y + d(y), which shows input point A^-1 (y + d(y)).
        source = _pixel_grid(width, height) + displacement
        if homography is not None:
            source = cv2.perspectiveTransform(source, np.linalg.inv(homography))
        # OpenCV 4's stubs lack the documented map2=None that goes with a two-channel float map
        # (OpenCV 5's have it: the ignore is then unused, which is not an error either).
        warped = cv2.remap(  # type: ignore[call-overload, unused-ignore]
            image, source, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        points = invert_displacement(displacement, points)
    out = keypoints.astype(np.float32).copy()
    out[:, :2] = points
    keep = (out[:, 2] > 0) & in_front & inside_crop(points, size)
    out[~keep] = 0.0
    return warped, out


class TaskAugmenter:
    """Draws and applies task augmentations under one :class:`TaskAugmentConfig`."""

    def __init__(self, cfg: TaskAugmentConfig) -> None:
        self.cfg = cfg
        weights = np.asarray(cfg.style_weights or [1.0] * len(cfg.styles), dtype=np.float64)
        self._style_probs = weights / weights.sum()

    @property
    def styles(self) -> tuple[Style, ...]:
        """The styles :meth:`sample_style` draws from."""
        return self.cfg.styles

    def sample_style(self, rng: np.random.Generator) -> Style:
        """One style, drawn with the configured weights (one per image, or one per task)."""
        return self.cfg.styles[int(rng.choice(len(self.cfg.styles), p=self._style_probs))]

    def augment(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        rng: np.random.Generator,
        *,
        style: str | None = None,
    ) -> Augmented:
        """Augment an ``(H, W, C)`` uint8 crop and its ``(K, 3)`` keypoints in crop pixels.

        ``style`` defaults to one drawn with :meth:`sample_style`; any of :data:`STYLES` may be
        given, whether or not the config draws it.
        """
        if image.ndim not in (2, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W[, C]) uint8, got {image.shape} {image.dtype}")
        if keypoints.ndim != 2 or keypoints.shape[1] != 3:
            raise ValueError(f"keypoints must be (K, 3) (x, y, flag), got {keypoints.shape}")
        if style is None:
            style = self.sample_style(rng)
        if style not in STYLE_WARPS:
            raise ValueError(f"unknown augmentation style {style!r} (known: {STYLES})")
        size = (image.shape[1], image.shape[0])
        homography: np.ndarray | None = None
        displacement: np.ndarray | None = None
        applied: list[Warp] = []
        for name in STYLE_WARPS[style]:
            if rng.random() >= getattr(self.cfg, name).prob:
                continue
            applied.append(name)
            if name == "elastic":
                displacement = sample_elastic(self.cfg.elastic, size, rng)
                continue
            if name == "affine":
                matrix = sample_affine(self.cfg.affine, size, rng)
            else:
                matrix = sample_perspective(self.cfg.perspective, size, rng)
            homography = matrix if homography is None else matrix @ homography
        warped, moved = warp(image, keypoints, homography, displacement)
        return Augmented(warped, moved, tuple(applied))


__all__ = [
    "STYLES",
    "PAPER_STYLES",
    "STYLE_WARPS",
    "Style",
    "Warp",
    "AffineWarpConfig",
    "ElasticWarpConfig",
    "PerspectiveWarpConfig",
    "TaskAugmentConfig",
    "Augmented",
    "TaskAugmenter",
    "affine_matrix",
    "sample_affine",
    "sample_perspective",
    "sample_elastic",
    "field_lipschitz",
    "project",
    "sample_field",
    "invert_displacement",
    "inside_crop",
    "warp",
]
