"""Surroundings: floor and wall planes with procedural textures, furniture-like blocks, shadows.

A :class:`Room` is a floor (``y = 0``) with a back wall and sometimes a side wall, or, outdoors,
a ground plane, a distant skyline and the sky. Its planes are ray-cast per pixel (the camera's
ray through each pixel meets the nearest plane) and textured in world coordinates: planks,
tiles, bricks, wallpaper stripes, gym mats or noise, after the procedural texturing of Ebert et
al., *Texturing and Modeling: A Procedural Approach* (3rd ed., 2003). Windows, doors and
pictures are rectangles on the wall. Walls darken towards the floor corner (a cheap ambient
occlusion) and people and blocks cast soft contact shadows.

Blocks (tables, cabinets, sofas, crates, seats) are boxes standing on the floor. Those behind
everybody are painted into the background; those that may hide part of a person are drawn
through the depth buffer (:meth:`Canvas.draw_polygon`), so the labels see them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from metapose.synth.appearance import AppearanceStyle, SurfaceLook
from metapose.synth.body import rot_y
from metapose.synth.camera import Camera
from metapose.synth.raster import NOISE, NOISE_MASK, NOISE_SIZE, Canvas, Light

NEAR_PLANE = 0.05  # metres: blocks with a corner nearer than this to the camera are not drawn
CLUTTER_MIN_AHEAD = 1.5  # metres in front of the camera
CLUTTER_DEPTH_SHARE = 0.8  # at least this share of the people's distance
SHADOW_STRENGTH = (0.35, 0.6)
CORNER_SHADE = 0.35  # how dark the floor/wall corner gets
CORNER_WIDTH = 0.3  # metres
SKYLINE_DISTANCE = (40.0, 90.0)
# A pattern fades out as a pixel's footprint grows to 1 / ALIAS_FADE of its period, towards
# PATTERN_MEAN, roughly the average mix of the patterns.
ALIAS_FADE = 3.0
PATTERN_MEAN = 0.3
BOX_FACES = ((0, 1, 2, 3), (4, 7, 6, 5), (0, 4, 5, 1), (1, 5, 6, 2), (2, 6, 7, 3), (3, 7, 4, 0))


@dataclass(frozen=True)
class Block:
    """A box on the floor: bottom centre ``(x, z)``, size ``(w, h, d)``, turned by ``yaw`` rad
    about the vertical (as :func:`metapose.synth.body.rot_y`).

    ``lift`` raises its bottom off the floor (a table top).
    """

    x: float
    z: float
    size: tuple[float, float, float]
    yaw: float
    look: SurfaceLook
    lift: float = 0.0

    def corners(self) -> np.ndarray:
        """``(8, 3)``: bottom face then top face, counter-clockwise seen from above."""
        w, h, d = self.size
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.array([(-w, -d), (w, -d), (w, d), (-w, d)]) * 0.5
        # Turned like body.rot_y: local +z ends up along (sin yaw, cos yaw).
        xz = local @ np.array([[c, s], [-s, c]]).T + (self.x, self.z)
        bottom = np.column_stack([xz[:, 0], np.full(4, self.lift), xz[:, 1]])
        top = bottom + (0.0, h, 0.0)
        return np.concatenate([bottom, top])

    def footprint(self) -> float:
        """Radius of the circle around ``(x, z)`` that holds the block."""
        return 0.5 * float(np.hypot(self.size[0], self.size[2]))


@dataclass(frozen=True)
class WallPatch:
    """A rectangle on a wall (window, door, picture): along-wall ``u`` and height ``y``, metres."""

    u0: float
    u1: float
    y0: float
    y1: float
    look: SurfaceLook


@dataclass(frozen=True)
class Wall:
    """The vertical plane ``normal . X = offset`` (``normal`` horizontal, towards the camera)."""

    normal: np.ndarray
    offset: float
    look: SurfaceLook
    patches: tuple[WallPatch, ...] = ()


@dataclass(frozen=True)
class Room:
    floor: SurfaceLook
    walls: tuple[Wall, ...]
    sky: SurfaceLook
    blocks: tuple[Block, ...]
    outdoor: bool


class Caster:
    """Something that casts a contact shadow: floor position and radii ``(x, z, rx, rz)``."""

    def __init__(self, x: float, z: float, rx: float, rz: float) -> None:
        self.x, self.z, self.rx, self.rz = x, z, rx, rz


# ----------------------------------------------------------------------------------- sampling


def _free(x: float, z: float, radius: float, taken: list[tuple[float, float, float]]) -> bool:
    return all(np.hypot(x - tx, z - tz) > radius + tr for tx, tz, tr in taken)


def sample_room(
    style: AppearanceStyle,
    rng: np.random.Generator,
    camera: Camera,
    focus: np.ndarray,
    taken: list[tuple[float, float, float]],
    *,
    far: float,
    occluder_share: float = 0.0,
) -> Room:
    """Walls behind ``far`` (distance from the camera along its horizontal view direction),
    blocks placed around ``focus`` outside the ``(x, z, radius)`` circles of ``taken``.

    ``occluder_share`` is the chance of one block between the camera and ``focus``.
    """
    forward = camera.rotation[2].copy()
    forward[1] = 0.0
    forward /= np.linalg.norm(forward) + 1e-9
    right = np.array([forward[2], 0.0, -forward[0]])
    cam_xz = camera.position[[0, 2]]
    outdoor = bool(rng.random() < style.outdoor_share)
    taken = list(taken)
    blocks: list[Block] = []
    walls: list[Wall] = []
    if outdoor:
        floor = style.surface("ground", rng)
        distance = float(rng.uniform(*SKYLINE_DISTANCE))
        normal = -forward
        walls.append(
            Wall(normal, float(normal @ camera.position) - distance, style.surface("skyline", rng))
        )
    else:
        floor = style.surface("floor", rng)
        depth = far + float(rng.uniform(0.6, 4.0))
        turn = np.deg2rad(rng.uniform(-25, 25))
        normal = -(np.cos(turn) * forward + np.sin(turn) * right)
        point = camera.position + forward * depth
        wall_look = style.surface("wall", rng)
        patches = _wall_patches(style, rng, int(rng.integers(0, 4)))
        walls.append(Wall(normal, float(normal @ point), wall_look, patches))
        if rng.random() < 0.35:
            side = 1.0 if rng.random() < 0.5 else -1.0
            side_normal = -side * (np.cos(turn) * right - np.sin(turn) * forward)
            side_point = focus + side * right * float(rng.uniform(1.5, 4.5))
            walls.append(Wall(side_normal, float(side_normal @ side_point), wall_look))
        # Furniture against the back wall.
        for _ in range(int(rng.integers(0, 4))):
            along = float(rng.uniform(-4, 4))
            size = (
                float(rng.uniform(0.5, 2.2)),
                float(rng.uniform(0.4, 2.0)),
                float(rng.uniform(0.35, 0.9)),
            )
            base = point + right * along - forward * (0.5 * size[2] + 0.02)
            kind = "appliance" if rng.random() < 0.25 else "furniture"
            blocks.append(
                Block(
                    float(base[0]),
                    float(base[2]),
                    size,
                    float(np.arctan2(normal[0], normal[2])),
                    style.surface(kind, rng),
                )
            )
    # Loose clutter around the people: crates, tables, bins, plants in pots.
    for _ in range(int(rng.integers(0, 5))):
        size = (
            float(rng.uniform(0.25, 1.4)),
            float(rng.uniform(0.2, 1.2)),
            float(rng.uniform(0.25, 1.0)),
        )
        radius = 0.5 * float(np.hypot(size[0], size[2]))
        focus_ahead = float((focus[[0, 2]] - cam_xz) @ forward[[0, 2]])
        for _attempt in range(6):
            x = float(focus[0] + rng.uniform(-4.0, 4.0))
            z = float(focus[2] + rng.uniform(-2.0, 4.0) * (1 if rng.random() < 0.8 else -1))
            ahead = float((np.array([x, z]) - cam_xz) @ forward[[0, 2]])
            # Clutter stands beside and behind the people, never right in front of the lens.
            if ahead - radius < max(CLUTTER_MIN_AHEAD, CLUTTER_DEPTH_SHARE * focus_ahead):
                continue
            if not _free(x, z, radius, taken):
                continue
            taken.append((x, z, radius))
            kind = "appliance" if rng.random() < 0.15 else "furniture"
            lift = float(rng.uniform(0.4, 0.8)) if rng.random() < 0.2 else 0.0
            blocks.append(
                Block(x, z, size, float(rng.uniform(0, np.pi)), style.surface(kind, rng), lift)
            )
            break
    if rng.random() < occluder_share:
        # Something between the camera and the person: a crate, a table, a counter.
        distance = float(np.hypot(*(focus[[0, 2]] - cam_xz)))
        gap = float(rng.uniform(0.6, 1.2))
        if distance > 2.5 * gap:
            at = focus[[0, 2]] - forward[[0, 2]] * gap + right[[0, 2]] * rng.uniform(-0.5, 0.5)
            size = (
                float(rng.uniform(0.4, 1.2)),
                float(rng.uniform(0.3, 0.8)),
                float(rng.uniform(0.3, 0.5)),
            )
            if _free(float(at[0]), float(at[1]), 0.5 * float(np.hypot(size[0], size[2])), taken):
                blocks.append(
                    Block(
                        float(at[0]),
                        float(at[1]),
                        size,
                        float(np.arctan2(forward[0], forward[2]) + rng.normal(0, 0.3)),
                        style.surface("furniture", rng),
                    )
                )
    return Room(floor, tuple(walls), style.surface("sky", rng), tuple(blocks), outdoor)


def _wall_patches(style: AppearanceStyle, rng: np.random.Generator, count: int) -> tuple:
    patches = []
    for _ in range(count):
        kind = ("window", "door", "decor")[int(rng.integers(3))]
        u = float(rng.uniform(-4, 4))
        if kind == "window":
            w, y0, h = rng.uniform(0.6, 1.8), rng.uniform(0.8, 1.1), rng.uniform(0.8, 1.5)
            look = style.surface("window", rng)
        elif kind == "door":
            w, y0, h = rng.uniform(0.8, 1.0), 0.0, rng.uniform(1.95, 2.15)
            look = style.surface("furniture", rng)
        else:
            w, y0, h = rng.uniform(0.3, 1.2), rng.uniform(1.0, 1.6), rng.uniform(0.3, 0.9)
            look = style.surface("decor", rng)
        patches.append(WallPatch(u, u + float(w), float(y0), float(y0 + h), look))
    return tuple(patches)


# ----------------------------------------------------------------------------------- textures


def _noise(u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    scale = NOISE_SIZE / (period * 8.0)
    iu = (u * scale).astype(np.intp) & NOISE_MASK
    iv = (v * scale).astype(np.intp) & NOISE_MASK
    return NOISE[iu, iv]


def _hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A stable pseudo-random value in [0, 1) per integer cell (for plank and tile shades)."""
    return NOISE[(a * 7 + 3) & NOISE_MASK, (b * 13 + a * 5) & NOISE_MASK]


def texture(
    look: SurfaceLook, u: np.ndarray, v: np.ndarray, footprint: np.ndarray | None = None
) -> np.ndarray:
    """Mix weight in [0, 1] of ``look.alt`` over ``look.base`` at plane coordinates ``u, v``.

    Where a pixel's ``footprint`` (metres) nears the pattern's period, the pattern fades to its
    average instead of aliasing into moire. A ``skyline`` marks the sky above it with -1.
    """
    mix = _pattern(look, u, v)
    if footprint is None or look.pattern in ("skyline", "plain"):
        return mix
    fade = np.minimum(np.maximum(1.0 - footprint * np.float32(ALIAS_FADE / look.period), 0.0), 1.0)
    return np.float32(PATTERN_MEAN) + fade * (mix - np.float32(PATTERN_MEAN))


def _pattern(look: SurfaceLook, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    p = float(look.period)
    kind = look.pattern
    if kind == "plain":
        return 0.25 * _noise(u, v, 3.0)
    if kind == "noise":
        return 0.6 * _noise(u, v, p) + 0.2 * _noise(u * 3.1, v * 3.1, p)
    if kind == "tiles":
        fu, fv = u / p, v / p
        grout = (np.abs(fu - np.round(fu)) < 0.03) | (np.abs(fv - np.round(fv)) < 0.03)
        shade = 0.25 * _hash(np.floor(fu).astype(np.intp), np.floor(fv).astype(np.intp))
        return np.where(grout, 1.0, shade)
    if kind == "planks":
        row = np.floor(v / p).astype(np.intp)
        offset = _hash(row, row) * 3.0
        plank_end = np.abs(((u + offset) / 1.6) % 1.0) < 0.01
        seam = np.abs(v / p - np.round(v / p)) < 0.04
        grain = _noise(u * 0.25, v * 4.0, p)
        return np.where(seam | plank_end, 1.0, 0.55 * _hash(row, row * 3) + 0.35 * grain)
    if kind == "bricks":
        row = np.floor(v / p)
        shifted = u / (2.6 * p) + 0.5 * (row % 2)
        mortar = (np.abs(v / p - np.round(v / p)) < 0.08) | (
            np.abs(shifted - np.round(shifted)) < 0.03
        )
        shade = 0.3 * _hash(np.floor(shifted).astype(np.intp), row.astype(np.intp))
        return np.where(mortar, 1.0, shade)
    if kind == "stripes":
        return (np.sin(u * (2 * np.pi / p)) > 0.3).astype(np.float32) * 0.8
    if kind == "checks":
        cell = (np.floor(u / p) + np.floor(v / p)) % 2
        return cell.astype(np.float32)
    if kind == "skyline":
        # Tree crowns and rooftops: a smooth height profile with flat-topped blocks in places.
        crowns = 0.55 + 0.2 * np.sin(u * (2.1 / p)) + 0.12 * np.sin(u * (5.3 / p) + 1.7)
        blocks = np.floor(u * (0.35 / p))
        roofs = 0.4 + 0.6 * _hash(blocks.astype(np.intp), blocks.astype(np.intp) * 5)
        profile = p * np.where(np.sin(blocks * 1.3) > 0.3, roofs, crowns)
        return np.where(v < profile, 0.25 * _noise(u, v, 2.0) + 0.5 * (v / profile), -1.0)
    raise ValueError(f"unknown surface pattern {kind!r}")


def _paint(look: SurfaceLook, mix: np.ndarray) -> np.ndarray:
    base = look.base.astype(np.float32)
    step = look.alt.astype(np.float32) - base
    return base + mix.astype(np.float32, copy=False)[..., None] * step


# ----------------------------------------------------------------------------------- rendering


def render_background(
    room: Room,
    camera: Camera,
    light: Light,
    channels: int,
    casters: list[Caster],
    rng: np.random.Generator,
) -> np.ndarray:
    """The room as seen by ``camera``: ``(C, h, w)`` float32, without the blocks."""
    # Rays that miss a plane carry infinite distances; their pixels are masked out below.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _render_planes(room, camera, light, channels, casters, rng)


def _render_planes(
    room: Room,
    camera: Camera,
    light: Light,
    channels: int,
    casters: list[Caster],
    rng: np.random.Generator,
) -> np.ndarray:
    # Per pixel: which material (0 sky, 1 floor, then walls and their patches), the pattern's
    # mix and the shading; the colours are looked up once at the end.
    h, w = camera.height, camera.width
    u = np.arange(w, dtype=np.float32)[None, :]
    v = np.arange(h, dtype=np.float32)[:, None]
    dx, dy, dz = camera.rays(u, v)
    dx, dy, dz = np.broadcast_arrays(dx, dy, dz)
    cx, cy, cz = (float(c) for c in camera.position)
    lit = [float(c) for c in light.direction]
    looks = [room.sky, room.floor]
    # Sky, brighter towards the horizon: a gradient down the middle column.
    mid = w // 2
    rise = dy[:, mid] / np.sqrt(dx[:, mid] ** 2 + dy[:, mid] ** 2 + dz[:, mid] ** 2)
    sky_mix = ((1.0 - np.clip(rise, 0.0, 1.0)) ** 4)[:, None]  # 1 at the horizon
    # Floor.
    hit = dy < -1e-6
    t_floor = np.where(hit, -cy / dy, np.float32(np.inf))
    fx = np.where(hit, cx + t_floor * dx, np.float32(0.0))
    fz = np.where(hit, cz + t_floor * dz, np.float32(0.0))
    material = hit.astype(np.int8)
    footprint = t_floor * np.float32(1.0 / camera.focal)  # metres per pixel on the floor
    mix = np.where(hit, texture(room.floor, fx, fz, footprint), sky_mix)
    if light.headlight:  # thermal: no cast light, so no shading and no shadows
        shade = np.ones((h, w), np.float32)
    else:
        floor_shade = light.ambient + light.diffuse * max(lit[1], 0.0)
        shade = _shadows(casters, camera, rng) * np.float32(floor_shade)
        if not room.outdoor:
            # The floor darkens near the walls (ambient occlusion in the corner).
            for wall in room.walls:
                nx, nz = float(wall.normal[0]), float(wall.normal[2])
                dist = np.abs(nx * fx + nz * fz - float(wall.offset))
                shade *= 1.0 - CORNER_SHADE * np.exp(dist * np.float32(-1.0 / CORNER_WIDTH))
        shade = np.where(hit, shade, np.float32(1.0))
    best = t_floor
    # Walls.
    for wall in room.walls:
        n = [float(c) for c in wall.normal]
        denom = n[0] * dx + n[1] * dy + n[2] * dz
        reach = float(wall.offset) - float(wall.normal @ camera.position)
        t = np.where(denom < -1e-6, reach / denom, np.float32(np.inf))
        y = cy + t * dy
        hit = (t < best) & (y >= 0)
        if not hit.any():
            continue
        along = np.where(hit, (cx + t * dx) * n[2] - (cz + t * dz) * n[0], np.float32(0.0))
        height = np.where(hit, y, np.float32(0.0))
        wall_mix = texture(wall.look, along, height, t * np.float32(1.0 / camera.focal))
        if wall.look.pattern == "skyline":
            hit &= wall_mix >= 0
        material[hit] = len(looks)
        looks.append(wall.look)
        np.copyto(mix, wall_mix, where=hit)
        for patch in wall.patches:
            inside = hit & (along >= patch.u0) & (along < patch.u1) & (height >= patch.y0)
            inside &= height < patch.y1
            if inside.any():
                material[inside] = len(looks)
                looks.append(patch.look)
                np.copyto(mix, 0.2 * _noise(along, height, 1.0), where=inside)
        if not light.headlight:
            wall_shade = light.ambient + light.diffuse * max(
                sum(a * b for a, b in zip(lit, n, strict=True)), 0.0
            )
            if not room.outdoor:
                corner = 1.0 - CORNER_SHADE * np.exp(height * np.float32(-1.0 / CORNER_WIDTH))
                np.copyto(shade, corner * np.float32(wall_shade), where=hit)
            else:
                shade[hit] = wall_shade
        best = np.where(hit, t, best)
    # Planar (C, h, w), like the canvas: per-pixel weights then multiply whole planes.
    bases = np.array([look.base for look in looks], np.float32).T
    steps = np.array([look.alt for look in looks], np.float32).T - bases
    material = material.astype(np.intp)
    colour = np.take(bases, material, axis=1)
    colour += np.take(steps, material, axis=1) * np.maximum(mix, 0.0)
    colour *= shade
    return colour


_RING = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_RING_COS, _RING_SIN = np.cos(_RING), np.sin(_RING)


def _shadows(casters: list[Caster], camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative soft contact shadows on the floor, ``(h, w)``."""
    h, w = camera.height, camera.width
    mask = np.zeros((h, w), np.float32)
    if not casters:
        return 1.0 - mask
    rings = np.zeros((len(casters), len(_RING), 3))
    for i, caster in enumerate(casters):
        rings[i, :, 0] = caster.x + caster.rx * _RING_COS
        rings[i, :, 2] = caster.z + caster.rz * _RING_SIN
    uv, z = camera.project(rings.reshape(-1, 3))
    uv = uv.reshape(len(casters), len(_RING), 2)
    z = z.reshape(len(casters), len(_RING))
    strengths = rng.uniform(*SHADOW_STRENGTH, len(casters))
    blur = 1.0
    for ring, depth, strength in zip(uv, z, strengths, strict=True):
        if (depth <= NEAR_PLANE).any():
            continue
        cv2.fillPoly(
            mask,
            [np.round(ring * 4).astype(np.int32)],
            float(strength),
            lineType=cv2.LINE_8,
            shift=2,
        )
        blur = max(blur, 0.25 * float(np.ptp(ring[:, 1])))
    blurred: np.ndarray = cv2.GaussianBlur(mask, (0, 0), min(blur, 0.05 * max(h, w)))
    return 1.0 - blurred


# Outward normals of BOX_FACES in the block's own frame (before its yaw).
_LOCAL_NORMALS = np.array(
    [(0, -1, 0), (0, 1, 0), (0, 0, -1), (1, 0, 0), (0, 0, 1), (-1, 0, 0)], dtype=np.float64
)
_FACE_INDEX = np.array(BOX_FACES)


def block_faces(
    block: Block, camera: Camera, light: Light
) -> list[tuple[np.ndarray, tuple[np.ndarray, float], np.ndarray]]:
    """The faces of ``block`` turned towards ``camera``: pixel corners, camera-frame plane
    ``(n, d)`` and shaded colour. Empty if the block reaches behind the camera."""
    corners = block.corners()
    cam = camera.to_camera(corners)
    if (cam[:, 2] <= NEAR_PLANE).any():
        return []
    uv = cam[:, :2] / cam[:, 2:3] * camera.focal + (camera.cx, camera.cy)
    normals = _LOCAL_NORMALS @ rot_y(np.rad2deg(block.yaw)).T  # world
    normals_cam = normals @ camera.rotation.T
    first = cam[_FACE_INDEX[:, 0]]
    offsets = (normals_cam * first).sum(1)
    facing = offsets < 0  # the camera (origin) is on the outer side of the face's plane
    if light.headlight:
        intensity = light.ambient + light.diffuse * np.maximum(-normals_cam[:, 2], 0.0)
    else:
        intensity = light.ambient + light.diffuse * np.maximum(normals @ light.direction, 0.0)
    base = block.look.base.astype(np.float32)
    return [
        (uv[_FACE_INDEX[f]], (normals_cam[f], float(offsets[f])), base * np.float32(intensity[f]))
        for f in np.flatnonzero(facing)
    ]


def paint_blocks(image: np.ndarray, blocks: list[Block], camera: Camera, light: Light) -> None:
    """Draw blocks into a ``(C, h, w)`` background far to near (painter's algorithm), in place."""
    order = sorted(
        blocks, key=lambda b: -float(np.linalg.norm(np.array([b.x, 0.0, b.z]) - camera.position))
    )
    shift = 3
    for block in order:
        for corners_px, _, colour in block_faces(block, camera, light):
            pts = np.round(corners_px * (1 << shift)).astype(np.int32)
            for plane, value in zip(image, colour, strict=True):
                cv2.fillConvexPoly(plane, pts, float(value), lineType=cv2.LINE_8, shift=shift)


def draw_blocks(
    canvas: Canvas, blocks: list[Block], camera: Camera, light: Light, first_label: int
) -> list[tuple[float, Callable[[], None]]]:
    """Depth-tested faces of blocks that may hide people, as ``(depth, draw)`` jobs.

    Block ``j`` is labelled ``first_label - j`` (negative: not a person).
    """
    jobs: list[tuple[float, Callable[[], None]]] = []
    intrinsics = (camera.focal, camera.cx, camera.cy)
    for j, block in enumerate(blocks):
        label = first_label - j
        depth = float(np.mean(camera.to_camera(block.corners())[:, 2]))
        for corners_px, plane, colour in block_faces(block, camera, light):
            jobs.append(
                (depth, partial(canvas.draw_polygon, corners_px, plane, intrinsics, label, colour))
            )
    return jobs
