"""A small z-buffered rasteriser for tapered capsules, ellipsoids and planar polygons.

Each volume is drawn analytically over its own screen-space bounding box with vectorised numpy
(ray casting against an implicit surface, as in Hart, "Sphere tracing", 1996, and the signed
distances of Quilez's "distance functions" notes), locally under weak perspective: its endpoints
and centre are projected exactly, its cross-section is scaled by ``focal / depth`` at each end.
A pixel keeps the nearest surface (depth buffer) and the id of what is there (label buffer);
edges are anti-aliased by a coverage of ``0.5 - signed distance`` pixels blended over what is
below, with volumes drawn far to near so the blend is mostly right.

Surfaces are Lambert-shaded (ambient plus diffuse); colours come from a small per-object palette
(``(M, C)``, any number of channels ``C``: RGB albedo, or a temperature for thermal), indexed per
pixel so that sleeves, hair and face features are plain lookups. The colour buffer is planar,
``(C, H, W)``: numpy's loops stay long and fast when a per-pixel weight multiplies every channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from metapose.synth.body import EYE_DIRECTION

EMPTY = -1  # label of pixels no object covers
EPS = 1e-6
# Tileable value noise for fabric and surface textures: a fixed asset (the same in every
# process), never drawn from a caller's generator.
NOISE_SIZE = 64
_WRAP = 8  # blur a periodically padded tile so the texture repeats without seams
_NOISE = cv2.GaussianBlur(
    np.pad(np.random.default_rng(20240611).random((NOISE_SIZE, NOISE_SIZE)), _WRAP, mode="wrap"),
    (0, 0),
    1.2,
)[_WRAP:-_WRAP, _WRAP:-_WRAP].astype(np.float32)
NOISE = (_NOISE - _NOISE.min()) / (_NOISE.max() - _NOISE.min())
NOISE_MASK = NOISE_SIZE - 1
NOISE_SHIFT = NOISE_SIZE.bit_length() - 1  # row stride of the flattened tile, as a shift

# Patterns a palette colour can carry (see Pattern).
SOLID, STRIPES, CHECKS, NOISY = 0, 1, 2, 3


class Light(NamedTuple):
    """``direction`` (unit) points from surfaces towards the light.

    Styles give it in the world frame; the renderer wants it in the camera frame. A
    ``headlight`` shines from the camera whatever ``direction`` says (thermal emission falls
    off at grazing angles the way a headlight's shading does).
    """

    direction: np.ndarray
    ambient: float
    diffuse: float
    headlight: bool = False


class Pattern(NamedTuple):
    """A two-colour texture: where ``mask(u, v)`` holds, palette index ``+1`` replaces the base.

    ``u`` runs along a limb (or up a torso) and ``v`` across it, metres; ``period`` is metres.
    """

    kind: int = SOLID
    period: float = 0.1
    phase: float = 0.0
    threshold: float = 0.5


SOLID_PATTERN = Pattern()


class Face(NamedTuple):
    """Where hair and face features lie on a head's unit sphere (x left, y up, z forward).

    ``hairline_front/back``: hair covers ``y`` above a line that runs from the forehead to the
    nape. Palette indices: ``skin``, ``hair``, ``eye``, ``lips``.
    """

    skin: int
    hair: int
    eye: int
    lips: int
    hairline_front: float
    hairline_back: float
    eye_radius: float = 0.13
    brows: bool = True


# Face feature positions on the unit sphere (x is mirrored for the right side).
EYE_X, EYE_Y = (float(c) for c in EYE_DIRECTION[:2] / np.linalg.norm(EYE_DIRECTION))
BROW_Y = 0.3
MOUTH_Y = -0.45


@dataclass
class Canvas:
    """Colour ``(C, H, W)`` float32, depth ``(H, W)`` float32 (metres), label ``(H, W)`` int32."""

    colour: np.ndarray
    depth: np.ndarray
    label: np.ndarray

    @classmethod
    def over(cls, background: np.ndarray) -> Canvas:
        """A canvas whose colour starts as ``background`` ``(C, H, W)`` and is empty."""
        h, w = background.shape[1:]
        return cls(
            np.ascontiguousarray(background, dtype=np.float32),
            np.full((h, w), np.inf, np.float32),
            np.full((h, w), EMPTY, np.int32),
        )

    def image(self) -> np.ndarray:
        """The colour buffer as ``(H, W, C)``."""
        return np.ascontiguousarray(self.colour.transpose(1, 2, 0))

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])

    def _window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[int, int, int, int]:
        xa = max(int(np.floor(x0)) - 1, 0)
        xb = min(int(np.ceil(x1)) + 2, self.width)
        ya = max(int(np.floor(y0)) - 1, 0)
        yb = min(int(np.ceil(y1)) + 2, self.height)
        return xa, xb, ya, yb

    def _composite(
        self,
        window: tuple[int, int, int, int],
        coverage: np.ndarray,
        depth: np.ndarray,
        colour: np.ndarray,
        label: int,
    ) -> None:
        xa, xb, ya, yb = window
        depth_view = self.depth[ya:yb, xa:xb]
        nearer = depth < depth_view
        alpha = coverage * nearer
        colour_view = self.colour[:, ya:yb, xa:xb]
        colour = colour - colour_view
        colour *= alpha
        colour_view += colour
        # Only pixels the surface covers at least half take its depth and label.
        owned = nearer & (coverage >= 0.5)
        np.copyto(depth_view, depth, where=owned)
        np.copyto(self.label[ya:yb, xa:xb], label, where=owned)

    # ------------------------------------------------------------------------------- capsule

    def draw_cone(
        self,
        ends: tuple[float, float, float, float, float, float, float, float],
        metres_per_px: tuple[float, float],
        label: int,
        palette: np.ndarray,
        near: int,
        far: int,
        split: float,
        light: Light,
        pattern: Pattern = SOLID_PATTERN,
    ) -> None:
        """A tapered capsule from ``(x0, y0, z0, r0)`` to ``(x1, y1, z1, r1)``.

        ``x, y, r`` are pixels, ``z`` depth in metres; ``metres_per_px`` converts radii to depth
        at each end. Palette index ``near`` paints ``t < split`` of the axis, ``far`` the rest.
        """
        x0, y0, z0, r0, x1, y1, z1, r1 = ends
        window = self._window(
            min(x0 - r0, x1 - r1),
            max(x0 + r0, x1 + r1),
            min(y0 - r0, y1 - r1),
            max(y0 + r0, y1 + r1),
        )
        xa, xb, ya, yb = window
        if xa >= xb or ya >= yb:
            return
        ax, ay = x1 - x0, y1 - y0
        length2 = ax * ax + ay * ay
        inv_l2 = 1.0 / (length2 + EPS)
        px = self._cols(xa, xb) - x0  # (1, w)
        py = self._rows(ya, yb) - y0  # (h, 1)
        # Position along the axis (clamped) and the offset from it.
        t = px * (ax * inv_l2) + py * (ay * inv_l2)
        np.maximum(t, 0.0, out=t)
        np.minimum(t, 1.0, out=t)
        ox = px - t * ax
        oy = py - t * ay
        d2 = ox * ox
        d2 += oy * oy
        r = t * (r1 - r0)
        r += r0
        h = r * r
        h -= d2
        np.maximum(h, 0.0, out=h)
        np.sqrt(h, out=h)  # half-chord of the section: how far the surface stands out
        coverage = r + 0.5
        coverage -= np.sqrt(d2)
        metres = 0.5 * (metres_per_px[0] + metres_per_px[1])
        depth = t * (z1 - z0)
        depth += z0
        depth -= h * metres
        if length2 < (r0 + r1) ** 2:
            # Foreshortened: the end caps can reach past the axis projection.
            for cx, cy, cz, cr in ((x0, y0, z0, r0), (x1, y1, z1, r1)):
                ex = self._cols(xa, xb) - cx
                ey = self._rows(ya, yb) - cy
                e2 = ex * ex + ey * ey
                cap_cov = (0.5 + cr) - np.sqrt(e2)
                cap_depth = cz - metres * np.sqrt(np.maximum(cr * cr - e2, 0.0))
                np.copyto(depth, np.minimum(depth, cap_depth), where=cap_cov > 0.5)
                np.maximum(coverage, cap_cov, out=coverage)
        np.minimum(coverage, 1.0, out=coverage)
        np.maximum(coverage, 0.0, out=coverage)
        # Lambert term of the normal (ox, oy, -h) / r.
        lx, ly, lz = (float(v) for v in light.direction)
        lit = ox * lx
        lit += oy * ly
        lit -= h * lz
        lit /= r + EPS
        # Split the axis between two palette entries (a sleeve ending on the arm, say).
        if split <= 0.0:
            index: np.ndarray | int = far
        elif split >= 1.0:
            index = near
        else:
            index = np.where(t < split, near, far)
        if pattern.kind != SOLID and split > 0.0:
            length = np.sqrt(length2)
            u = t * (length * metres)
            v = (ox * -ay + oy * ax) * (metres / (length + EPS))
            mark = pattern_mask(pattern, u, v)
            # The pattern belongs to the garment (``near``), not to the skin beyond its end.
            index = index + (mark if isinstance(index, int) else mark & (index == near))
        colour = shade(palette, index, lit, light)
        self._composite(window, coverage, depth, colour, label)

    # ------------------------------------------------------------------------------- ellipsoid

    def draw_ellipsoid(
        self,
        centre: tuple[float, float, float],
        axes_px: np.ndarray,
        metres_per_px: float,
        label: int,
        palette: np.ndarray,
        index: int,
        light: Light,
        pattern: Pattern = SOLID_PATTERN,
        face: Face | None = None,
        inv_axes: np.ndarray | None = None,
    ) -> None:
        """An ellipsoid centred at pixel ``(x, y)`` and depth ``z`` (metres).

        ``axes_px`` ``(3, 3)``: semi-axis vectors as columns in camera axes, in pixels (depth
        too, at ``metres_per_px``), so the surface is ``|inv(axes_px) p| = 1``; pass
        ``inv_axes`` when it is already known (inverted in batches by the caller).
        """
        cx, cy, cz = centre
        if inv_axes is None:
            inv_axes = np.linalg.inv(axes_px)
        q = inv_axes.T @ inv_axes
        # Silhouette: the ellipse whose quadratic form is q's Schur complement on the depth axis.
        a = float(q[2, 2])
        qz = q[:2, 2]
        p00 = float(q[0, 0] - qz[0] * qz[0] / a)
        p01 = float(q[0, 1] - qz[0] * qz[1] / a)
        p11 = float(q[1, 1] - qz[1] * qz[1] / a)
        # The form is positive definite; guard only against round-off (relative, as large
        # ellipses have tiny determinants).
        det = max(p00 * p11 - p01 * p01, 1e-9 * p00 * p11)
        ext_x = np.sqrt(max(p11 / det, 0.0))
        ext_y = np.sqrt(max(p00 / det, 0.0))
        window = self._window(cx - ext_x, cx + ext_x, cy - ext_y, cy + ext_y)
        xa, xb, ya, yb = window
        if xa >= xb or ya >= yb:
            return
        dx = self._cols(xa, xb) - cx  # (1, w)
        dy = self._rows(ya, yb) - cy  # (h, 1)
        gx = dx * p00 + dy * p01
        gy = dx * p01 + dy * p11
        quad = dx * gx
        quad += dy * gy
        grad = gx * gx
        grad += gy * gy
        np.sqrt(grad, out=grad)
        grad *= 2.0
        grad += EPS
        coverage = 1.0 - quad
        coverage /= grad
        coverage += 0.5
        np.minimum(coverage, 1.0, out=coverage)
        np.maximum(coverage, 0.0, out=coverage)
        # Front root of a w^2 + 2 b w + c = 0 along the depth axis (w in pixel units).
        root = 1.0 - quad
        np.maximum(root, 0.0, out=root)
        root *= 1.0 / a
        np.sqrt(root, out=root)
        w = dx * float(-qz[0] / a) + dy * float(-qz[1] / a)
        w -= root
        depth = w * metres_per_px
        depth += cz
        # Lambert term of the normal q (dx, dy, w): its light component and its length.
        lx, ly, lz = (float(v) for v in light.direction)
        k = q @ np.array([lx, ly, lz])
        lit = dx * float(k[0]) + dy * float(k[1])
        lit += w * float(k[2])
        nx = dx * float(q[0, 0]) + dy * float(q[0, 1])
        nx += w * float(q[0, 2])
        ny = dx * float(q[1, 0]) + dy * float(q[1, 1])
        ny += w * float(q[1, 2])
        nz = dx * float(q[2, 0]) + dy * float(q[2, 1])
        nz += w * float(q[2, 2])
        nx *= nx
        ny *= ny
        nz *= nz
        nx += ny
        nx += nz
        np.sqrt(nx, out=nx)
        nx += EPS
        lit /= nx
        need_local = face is not None or pattern.kind != SOLID
        idx: np.ndarray | int = index
        if need_local:
            inv = [[float(c) for c in row] for row in inv_axes]
            sx = dx * inv[0][0] + dy * inv[0][1] + w * inv[0][2]
            sy = dx * inv[1][0] + dy * inv[1][1] + w * inv[1][2]
            sz = dx * inv[2][0] + dy * inv[2][1] + w * inv[2][2]
            if face is not None:
                idx = face_index(face, sx, sy, sz)
            else:
                scale = metres_per_px * float(np.linalg.norm(axes_px, axis=0).mean())
                idx = index + pattern_mask(pattern, sy * scale, sx * scale)
        colour = shade(palette, idx, lit, light)
        self._composite(window, coverage, depth, colour, label)

    # ------------------------------------------------------------------------------- polygon

    def draw_polygon(
        self,
        corners_px: np.ndarray,
        plane: tuple[np.ndarray, float],
        camera: tuple[float, float, float],
        label: int,
        colour: np.ndarray,
    ) -> None:
        """A flat convex polygon (furniture faces) with per-pixel depth from its plane.

        ``plane`` is ``(n, d)`` with ``n . X = d`` in camera coordinates; ``camera`` is
        ``(focal, cx, cy)``. Edges are anti-aliased by OpenCV's coverage.
        """
        x0, y0 = corners_px.min(0)
        x1, y1 = corners_px.max(0)
        window = self._window(float(x0), float(x1), float(y0), float(y1))
        xa, xb, ya, yb = window
        if xa >= xb or ya >= yb:
            return
        shift = 4  # sub-pixel bits for cv2's fixed-point corners
        mask = np.zeros((yb - ya, xb - xa), np.uint8)
        pts = np.round((corners_px - (xa, ya)) * (1 << shift)).astype(np.int32)
        cv2.fillConvexPoly(mask, pts, 255, lineType=cv2.LINE_AA, shift=shift)
        coverage = mask.astype(np.float32) * np.float32(1.0 / 255.0)
        normal, offset = plane
        focal, pcx, pcy = camera
        rx = (self._cols(xa, xb) - np.float32(pcx)) * np.float32(1.0 / focal)
        ry = (self._rows(ya, yb) - np.float32(pcy)) * np.float32(1.0 / focal)
        denom = rx * np.float32(normal[0]) + ry * np.float32(normal[1]) + np.float32(normal[2])
        depth = np.float32(offset) / np.where(np.abs(denom) < EPS, np.float32(EPS), denom)
        self._composite(window, coverage, depth, colour.astype(np.float32)[:, None, None], label)

    def _cols(self, xa: int, xb: int) -> np.ndarray:
        """Pixel x coordinates of columns ``xa:xb`` as a ``(1, w)`` row."""
        return _coordinates(self.width)[None, xa:xb]

    def _rows(self, ya: int, yb: int) -> np.ndarray:
        """Pixel y coordinates of rows ``ya:yb`` as an ``(h, 1)`` column."""
        return _coordinates(self.height)[ya:yb, None]


_COORDS: dict[int, np.ndarray] = {}


def _coordinates(n: int) -> np.ndarray:
    out = _COORDS.get(n)
    if out is None:
        out = np.arange(n, dtype=np.float32)
        out.setflags(write=False)
        _COORDS[n] = out
    return out


_NOISE_FLAT = np.ascontiguousarray(NOISE).ravel()


def pattern_mask(pattern: Pattern, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Integer 0/1 field: where the pattern's second colour shows."""
    k = 2.0 * np.pi / pattern.period
    if pattern.kind == STRIPES:
        wave = np.sin(u * k + pattern.phase)
        return (wave > (pattern.threshold - 0.5) * 2.0).astype(np.intp)
    if pattern.kind == CHECKS:
        wave = np.sin(u * k + pattern.phase)
        wave *= np.sin(v * k)
        return (wave > 0.0).astype(np.intp)
    scale = NOISE_SIZE / pattern.period / 8.0
    iu = (u * scale + pattern.phase).astype(np.intp)
    iu &= NOISE_MASK
    iu <<= NOISE_SHIFT
    iv = (v * scale).astype(np.intp)
    iv &= NOISE_MASK
    iu |= iv
    return (np.take(_NOISE_FLAT, iu) > pattern.threshold).astype(np.intp)


def face_index(face: Face, sx: np.ndarray, sy: np.ndarray, sz: np.ndarray) -> np.ndarray:
    """Palette index per head pixel from its point on the unit sphere: skin, hair, eyes, lips."""
    # The hairline rises from the nape to the forehead, fastest behind the ears, so the temples
    # stay bare: front + (back - front) * (1 - ((1 + z) / 2) ** 0.5).
    rise = np.sqrt(np.maximum(sz + np.float32(1.0), 0.0) * np.float32(0.5))
    hairline = np.float32(face.hairline_back) + rise * np.float32(
        face.hairline_front - face.hairline_back
    )
    front = sz > 0.3
    ax = np.abs(sx) - np.float32(EYE_X)
    r2 = np.float32(face.eye_radius**2)
    eyes = front & ((ax * ax + (sy - np.float32(EYE_Y)) ** 2) < r2)
    mouth = front & ((sx * sx * np.float32(0.35) + (sy - np.float32(MOUTH_Y)) ** 2 * 6) < r2)
    idx = np.full(sx.shape, face.skin, np.intp)
    idx[mouth] = face.lips
    idx[eyes] = face.eye
    if face.brows:
        by = sy - np.float32(BROW_Y)
        brows = front & (ax * ax * np.float32(0.6) + by * by * 12 < r2)
        idx[brows] = face.hair
    idx[sy > hairline] = face.hair
    return idx


def shade(
    palette: np.ndarray, index: np.ndarray | int, lit: np.ndarray, light: Light
) -> np.ndarray:
    """Lambert shading of palette colours: ``(C, h, w)`` from the cosine ``lit`` (in place)."""
    np.maximum(lit, 0.0, out=lit)
    lit *= light.diffuse
    lit += light.ambient
    if isinstance(index, np.ndarray):
        return np.take(palette.T, index, axis=1) * lit
    return palette[index][:, None, None] * lit
