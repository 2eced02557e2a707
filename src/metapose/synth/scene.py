"""Rendered scenes and top-down crops of synthetic people, labelled from the renderer itself.

:func:`render_scene` places 1-4 people on a floor in front of a camera drawn from the domain's
prior; :func:`render_crop` frames one person the way a top-down pipeline crops a detection (the
box, padded by SimpleBaseline's 1.25 and stretched to the crop's aspect ratio, roughly fills the
crop; Xiao et al., 2018), with neighbours and clutter around. Both return a
:class:`~metapose.data.records.LabelledImage` whose labels come from the buffers of the render:

* a keypoint is visible (2) when what the camera sees at its pixel is one of its own body parts,
  no further in front of it than that part's girth (a face keypoint: on the surface), or when
  nothing at all lies in front of it; it is occluded (1) when something nearer covers it (the
  person's own body or anything else); outside the image it is 0 with ``x = y = 0``, as COCO;
* the box and ``area`` are those of the person's visible silhouette (the label buffer), as
  COCO's come from the visible segmentation.

Everything random comes from the generator passed in: the same generator state gives the same
image, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import cv2
import numpy as np

from metapose.data.crops import BOX_PADDING
from metapose.data.records import LabelledImage, Person
from metapose.skeleton import COCO17
from metapose.synth.appearance import (
    BOTTOM,
    HAIR,
    SHOES,
    SKIN,
    TOP,
    PersonLook,
    native_scale,
)
from metapose.synth.background import (
    NEAR_PLANE,
    Block,
    Caster,
    draw_blocks,
    paint_blocks,
    render_background,
    sample_room,
)
from metapose.synth.body import KEYPOINT_PARTS, NUM_PARTS, BodyGeometry, P, rot_y, sample_shape
from metapose.synth.camera import Camera, focal_from_fov, look_at
from metapose.synth.domains import Domain, get_domain
from metapose.synth.poses import settle
from metapose.synth.raster import SOLID_PATTERN, Canvas, Light

MIN_AREA = 24.0  # output pixels: smaller visible people are left unlabelled (and invisible)
FOCUS_HEIGHT = 0.9  # metres: scene cameras aim this high above the floor
PERSON_GAP = 0.15  # metres between the footprints of two people
CROP_FILL = (0.8, 1.15)  # padded box size relative to the crop
CROP_SHIFT = 0.06  # centre jitter, as a share of the crop size
NEIGHBOUR_SHARE = 0.3  # chance of a second person near a crop's person
OCCLUDER_SHARE = 0.1  # chance of a block between the camera and a crop's person
LATERAL_SPREAD = 1.1  # scene people spread this far past the image sides (x tan(fov/2))
BACKGROUND_RESOLUTION = 0.3  # the room is ray-cast at this share of the output resolution
PLACEMENT_TRIES = 12
BLOCK_LABEL = -2  # first label of depth-tested blocks; block j is BLOCK_LABEL - j

# Paint of each part: (palette index near the part's start, index beyond the split, which
# garment measure splits it: "sleeve", "legs" or None, and the pattern of the garment).
_CONE_PAINT: dict[int, tuple[int, int, str | None, int]] = {
    P["chest"]: (TOP, TOP, None, 0),  # the shoulder girdle
    P["neck"]: (SKIN, SKIN, None, 0),
    P["nose"]: (SKIN, SKIN, None, 0),
    P["left_upper_arm"]: (TOP, SKIN, "sleeve", 0),
    P["right_upper_arm"]: (TOP, SKIN, "sleeve", 0),
    P["left_forearm"]: (TOP, SKIN, "sleeve", 1),
    P["right_forearm"]: (TOP, SKIN, "sleeve", 1),
    P["left_thigh"]: (BOTTOM, SKIN, "legs", 0),
    P["right_thigh"]: (BOTTOM, SKIN, "legs", 0),
    P["left_shin"]: (BOTTOM, SKIN, "legs", 1),
    P["right_shin"]: (BOTTOM, SKIN, "legs", 1),
    P["left_foot"]: (SHOES, SHOES, None, 0),
    P["right_foot"]: (SHOES, SHOES, None, 0),
}
_ELLIPSOID_PAINT: dict[int, int] = {
    P["chest"]: TOP,
    P["waist"]: TOP,
    P["pelvis"]: BOTTOM,
    P["left_hand"]: SKIN,
    P["right_hand"]: SKIN,
    P["left_ear"]: SKIN,
    P["right_ear"]: SKIN,
    P["hair"]: HAIR,
}

# own[k, part]: part belongs to keypoint k.
_OWN = np.zeros((COCO17.num_keypoints, NUM_PARTS), dtype=bool)
for _k, _parts in enumerate(KEYPOINT_PARTS):
    _OWN[_k, list(_parts)] = True


@dataclass(frozen=True)
class Figure:
    """A posed, dressed person standing in the world, with the seat it may sit on."""

    body: BodyGeometry
    look: PersonLook
    action: str
    seat: Block | None = None

    def footprint(self) -> tuple[float, float, float]:
        """``(x, z, radius)`` of the circle on the floor that holds the body."""
        points = self.body.points()
        centre = points.mean(0)
        radius = float(np.hypot(points[:, 0] - centre[0], points[:, 2] - centre[2]).max())
        return float(centre[0]), float(centre[2]), radius + 0.1


class SceneRender(NamedTuple):
    """A render with its buffers, for tests and debugging.

    ``canvas`` holds the native-resolution depth and label buffers (labels: ``figure *
    NUM_PARTS + part``; its colour buffer served as the sensor finish's scratch space);
    ``labelled.people[i]`` is figure ``person_figures[i]``.
    """

    labelled: LabelledImage
    canvas: Canvas
    camera: Camera
    native: Camera
    figures: tuple[Figure, ...]
    person_figures: tuple[int, ...]
    light: Light


# ----------------------------------------------------------------------------------- people


def sample_figure(domain: Domain, rng: np.random.Generator) -> Figure:
    """A person of ``domain`` at the origin, facing +z, standing (or lying, sitting) on y = 0."""
    shape = sample_shape(rng)
    pose = domain.poses.sample(rng)
    look = domain.style.person(rng)
    body, seat_height = settle(shape, pose, look.clothing())
    seat = None
    if seat_height > 0:
        pelvis = body.ellipsoids[body.ellipsoid_parts == P["pelvis"]][0]
        width = 2.0 * (shape.hip_half + shape.thigh_r[0]) + 0.08
        depth = float(rng.uniform(0.38, 0.5))
        seat = Block(
            float(pelvis[0]),
            float(pelvis[2] + 0.35 * depth),
            (width, seat_height, depth),
            0.0,
            domain.style.surface("furniture", rng),
        )
    return Figure(body, look, pose.action, seat)


def place(figure: Figure, yaw_deg: float, x: float, z: float) -> Figure:
    """``figure`` turned by ``yaw_deg`` about the vertical and moved to floor point ``(x, z)``."""
    body = figure.body.rotated(rot_y(yaw_deg)).translated(np.array([x, 0.0, z]))
    seat = figure.seat
    if seat is not None:
        c, s = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
        sx, sz = c * seat.x + s * seat.z, -s * seat.x + c * seat.z
        seat = Block(
            float(sx + x), float(sz + z), seat.size, seat.yaw + np.deg2rad(yaw_deg), seat.look
        )
    return Figure(body, figure.look, figure.action, seat)


def figure_jobs(
    canvas: Canvas, figure: Figure, camera: Camera, light: Light, index: int
) -> list[tuple[float, Callable[[], None]]]:
    """Draw calls ``(depth, draw)`` for every volume of ``figure`` (label base ``index``)."""
    body, look = figure.body, figure.look
    f = camera.focal
    jobs: list[tuple[float, Callable[[], None]]] = []
    base = index * NUM_PARTS
    garments = {"sleeve": look.sleeve, "legs": look.legs}
    patterns = {TOP: look.top_pattern, BOTTOM: look.bottom_pattern}

    cones = body.cones
    uv0, z0 = camera.project(cones[:, 0:3])
    uv1, z1 = camera.project(cones[:, 4:7])
    # Plain Python numbers from here: the rasteriser's arithmetic on them stays float32.
    rows = np.column_stack(
        [uv0, z0, cones[:, 3] * f / z0, uv1, z1, cones[:, 7] * f / z1, z0 / f, z1 / f]
    ).tolist()
    for row, part in zip(rows, body.cone_parts.tolist(), strict=True):
        if row[2] <= NEAR_PLANE or row[6] <= NEAR_PLANE:
            continue
        near, far, measure, segment = _CONE_PAINT[part]
        split = 1.0 if measure is None else garments[measure] - segment
        jobs.append(
            (
                0.5 * (row[2] + row[6]),
                partial(
                    canvas.draw_cone,
                    tuple(row[:8]),
                    (row[8], row[9]),
                    base + part,
                    look.palette,
                    near,
                    far,
                    split,
                    light,
                    patterns.get(near, SOLID_PATTERN),
                ),
            )
        )

    uv, z = camera.project(body.ellipsoids)
    axes_px_all = (camera.rotation @ body.ellipsoid_axes) * (f / np.maximum(z, NEAR_PLANE))[
        :, None, None
    ]
    inverses = np.linalg.inv(axes_px_all)
    for i, part in enumerate(body.ellipsoid_parts):
        if z[i] <= NEAR_PLANE:
            continue
        axes_px = axes_px_all[i]
        centre = (float(uv[i, 0]), float(uv[i, 1]), float(z[i]))
        if part == P["head"]:
            paint: dict = {"index": SKIN, "face": look.face}
        else:
            index_ = _ELLIPSOID_PAINT[int(part)]
            paint = {"index": index_, "pattern": patterns.get(index_, SOLID_PATTERN)}
        jobs.append(
            (
                float(z[i]),
                partial(
                    canvas.draw_ellipsoid,
                    centre,
                    axes_px,
                    float(z[i] / f),
                    base + int(part),
                    look.palette,
                    light=light,
                    inv_axes=inverses[i],
                    **paint,
                ),
            )
        )
    return jobs


# ----------------------------------------------------------------------------------- labels


def label_figure(
    canvas: Canvas, camera: Camera, native: Camera, figure: Figure, index: int
) -> Person | None:
    """COCO labels of figure ``index`` read off ``canvas`` (rendered by ``native``)."""
    scale = native.focal / camera.focal
    uv, z = camera.project(figure.body.keypoints)
    w, h = camera.width, camera.height
    inside = (z > NEAR_PLANE) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0)
    inside &= uv[:, 1] <= h - 1
    nuv, _ = native.project(figure.body.keypoints)
    col = np.clip(np.rint(nuv[:, 0]), 0, canvas.width - 1).astype(np.intp)
    row = np.clip(np.rint(nuv[:, 1]), 0, canvas.height - 1).astype(np.intp)
    label = canvas.label[row, col]
    depth = canvas.depth[row, col]
    part = np.where(label >= 0, label % NUM_PARTS, 0)
    own = (label >= 0) & (label // NUM_PARTS == index) & _OWN[np.arange(len(part)), part]
    seen = (own & (depth >= z - figure.body.keypoint_tolerance)) | (depth >= z)
    flags = np.where(inside, np.where(seen, 2, 1), 0)

    silhouette = (canvas.label >= index * NUM_PARTS) & (canvas.label < (index + 1) * NUM_PARTS)
    count = int(np.count_nonzero(silhouette))
    area = count / (scale * scale)
    if area < MIN_AREA or not (flags > 0).any():
        return None
    rows = np.flatnonzero(silhouette.any(axis=1))
    cols = np.flatnonzero(silhouette.any(axis=0))
    x0 = max(cols[0] / scale, 0.0)
    y0 = max(rows[0] / scale, 0.0)
    x1 = min((cols[-1] + 1) / scale, float(w))
    y1 = min((rows[-1] + 1) / scale, float(h))
    keypoints = np.zeros((COCO17.num_keypoints, 3), np.float32)
    keypoints[:, :2] = np.where(flags[:, None] > 0, uv, 0.0)
    keypoints[:, 2] = flags
    return Person(
        keypoints=keypoints,
        bbox=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
        area=float(area),
    )


# ----------------------------------------------------------------------------------- rendering


def _camera_light(light: Light, camera: Camera) -> Light:
    if light.headlight:
        return light._replace(direction=np.array([0.0, 0.0, -1.0]))
    return light._replace(direction=camera.rotation @ np.asarray(light.direction))


def _render(
    domain: Domain,
    rng: np.random.Generator,
    camera: Camera,
    figures: list[Figure],
    *,
    focus: np.ndarray,
    occluder_share: float,
) -> tuple[Canvas, Camera, Light, np.ndarray]:
    """Room, people and blocks as ``camera`` sees them; returns the native canvas, camera and
    light, and the finished ``(H, W, 3)`` image."""
    style = domain.style
    scale = native_scale(style.resolution(rng), (camera.width, camera.height))
    native = camera.resized(scale)
    forward = camera.rotation[2]
    depths = [float(np.max((fig.body.points() - camera.position) @ forward)) for fig in figures]
    far = max(depths) if depths else 5.0
    taken = [fig.footprint() for fig in figures]
    taken += [(s.x, s.z, s.footprint()) for s in (fig.seat for fig in figures) if s is not None]
    room = sample_room(style, rng, camera, focus, taken, far=far, occluder_share=occluder_share)
    light = style.light(rng)

    # Blocks behind every person go into the background; the rest are depth-tested.
    seats = [fig.seat for fig in figures if fig.seat is not None]
    behind: list[Block] = []
    front = list(seats)
    for block in room.blocks:
        nearest = float(np.min(camera.to_camera(block.corners())[:, 2]))
        (behind if nearest > far else front).append(block)
    casters = []
    for fig in figures:
        x, z, radius = fig.footprint()
        casters.append(Caster(x, z, 0.45 * radius, 0.35 * radius))
    casters += [
        Caster(b.x, b.z, 0.6 * b.size[0], 0.6 * b.size[2]) for b in room.blocks if b.lift == 0
    ]
    bg_scale = min(1.0, BACKGROUND_RESOLUTION / scale)
    bg_camera = native.resized(bg_scale)
    background = render_background(room, bg_camera, light, style.channels, casters, rng)
    paint_blocks(background, behind, bg_camera, light)
    if bg_camera.width != native.width or bg_camera.height != native.height:
        # The room is smooth and unlabelled: a plain resize is exact enough for it.
        size = (native.width, native.height)
        full = np.empty((style.channels, native.height, native.width), np.float32)
        for plane, out in zip(background, full, strict=True):
            cv2.resize(plane, size, dst=out, interpolation=cv2.INTER_LINEAR)
        background = full
    canvas = Canvas.over(background)
    light_cam = _camera_light(light, native)
    jobs = draw_blocks(canvas, front, native, light, BLOCK_LABEL)
    for i, fig in enumerate(figures):
        jobs += figure_jobs(canvas, fig, native, light_cam, i)
    # Far to near, so anti-aliased edges blend over what is behind them.
    jobs.sort(key=lambda job: -job[0])
    for _, draw in jobs:
        draw()
    image = style.finish(canvas.colour, rng, (camera.width, camera.height), scale)
    return canvas, native, light_cam, image


def render_scene_debug(
    domain: Domain | str,
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    num_people: int | None = None,
) -> SceneRender:
    """:func:`render_scene` with the render's buffers (see :class:`SceneRender`)."""
    domain = get_domain(domain)
    prior = domain.camera
    count = int(rng.integers(1, domain.max_people + 1)) if num_people is None else num_people
    if count < 1:
        raise ValueError(f"num_people must be >= 1, got {count}")
    fov = float(rng.uniform(*prior.fov))
    focal = focal_from_fov(fov, width)
    distance = float(rng.uniform(*prior.distance))
    cam_height = float(rng.uniform(*prior.height))
    position = np.array([0.0, cam_height, 0.0])
    target = np.array([0.0, FOCUS_HEIGHT, distance])
    camera = Camera(
        focal,
        0.5 * (width - 1),
        0.5 * (height - 1),
        look_at(position, target, prior.roll(rng)),
        position,
        width,
        height,
    )
    half_width = np.tan(np.deg2rad(fov) * 0.5)
    figures: list[Figure] = []
    taken: list[tuple[float, float, float]] = []
    for _ in range(count):
        figure = sample_figure(domain, rng)
        for _attempt in range(PLACEMENT_TRIES):
            z = max(float(rng.uniform(0.6, 1.4)) * distance, 1.5)
            x = float(rng.uniform(-LATERAL_SPREAD, LATERAL_SPREAD)) * z * half_width
            to_camera = np.rad2deg(np.arctan2(-x, -z))
            yaw = float(to_camera + prior.azimuth(rng))
            placed = place(figure, yaw, x, z)
            fx, fz, fr = placed.footprint()
            if all(np.hypot(fx - tx, fz - tz) > fr + tr + PERSON_GAP for tx, tz, tr in taken):
                figures.append(placed)
                taken.append((fx, fz, fr))
                break
    canvas, native, light, image = _render(
        domain, rng, camera, figures, focus=target, occluder_share=0.0
    )
    people, ids = [], []
    for i, fig in enumerate(figures):
        person = label_figure(canvas, camera, native, fig, i)
        if person is not None:
            people.append(person)
            ids.append(i)
    return SceneRender(
        LabelledImage(image, tuple(people)),
        canvas,
        camera,
        native,
        tuple(figures),
        tuple(ids),
        light,
    )


def render_scene(
    domain: Domain | str,
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    num_people: int | None = None,
) -> LabelledImage:
    """A ``width x height`` scene of ``num_people`` people (1 to ``domain.max_people`` if None).

    People who end up (almost) entirely hidden or outside the image are left unlabelled, so the
    result may hold fewer people than were placed.
    """
    return render_scene_debug(domain, rng, width, height, num_people).labelled


def _extent_box(body: BodyGeometry, camera: Camera) -> tuple[float, float, float, float]:
    """Projected ``(u0, v0, u1, v1)`` of the body's volumes (pixels of ``camera``)."""
    cones = body.cones
    uv0, z0 = camera.project(cones[:, 0:3])
    uv1, z1 = camera.project(cones[:, 4:7])
    r0 = cones[:, 3] * camera.focal / z0
    r1 = cones[:, 7] * camera.focal / z1
    uve, ze = camera.project(body.ellipsoids)
    re = np.linalg.norm(body.ellipsoid_axes, axis=1).max(1) * camera.focal / ze
    uv = np.concatenate([uv0, uv1, uve])
    r = np.concatenate([r0, r1, re])[:, None]
    low = (uv - r).min(0)
    high = (uv + r).max(0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def render_crop_debug(
    domain: Domain | str, rng: np.random.Generator, width: int = 192, height: int = 256
) -> SceneRender:
    """:func:`render_crop` with the render's buffers (see :class:`SceneRender`)."""
    domain = get_domain(domain)
    prior = domain.camera
    figure = sample_figure(domain, rng)
    points = figure.body.points()
    target = 0.5 * (points.min(0) + points.max(0))
    azimuth = np.deg2rad(prior.azimuth(rng))
    elevation = np.deg2rad(rng.uniform(*prior.elevation))
    distance = float(rng.uniform(*prior.crop_distance))
    direction = np.array(
        [
            np.sin(azimuth) * np.cos(elevation),
            np.sin(elevation),
            np.cos(azimuth) * np.cos(elevation),
        ]
    )
    position = target + distance * direction
    position[1] = max(position[1], 0.15)  # keep the camera above the floor
    rotation = look_at(position, target, prior.roll(rng))
    probe = Camera(1.0, 0.0, 0.0, rotation, position, width, height)
    u0, v0, u1, v1 = _extent_box(figure.body, probe)
    # The top-down framing: the box padded and stretched to the crop's aspect ratio.
    box_w, box_h = max(u1 - u0, 1e-6), max(v1 - v0, 1e-6)
    aspect = width / height
    box_w, box_h = max(box_w, box_h * aspect), max(box_h, box_w / aspect)
    focal = width / (box_w * BOX_PADDING) * float(rng.uniform(*CROP_FILL))
    shift = rng.uniform(-CROP_SHIFT, CROP_SHIFT, 2) * (width, height)
    cx = 0.5 * (width - 1) - focal * 0.5 * (u0 + u1) + float(shift[0])
    cy = 0.5 * (height - 1) - focal * 0.5 * (v0 + v1) + float(shift[1])
    camera = Camera(focal, cx, cy, rotation, position, width, height)

    figures = [figure]
    if rng.random() < NEIGHBOUR_SHARE:
        right = rotation[0] * np.array([1.0, 0.0, 1.0])
        forward = rotation[2] * np.array([1.0, 0.0, 1.0])
        right /= np.linalg.norm(right) + 1e-9
        forward /= np.linalg.norm(forward) + 1e-9
        other = sample_figure(domain, rng)
        side = 1.0 if rng.random() < 0.5 else -1.0
        spot = right * side * rng.uniform(0.7, 1.8) + forward * rng.uniform(-1.0, 3.0)
        placed = place(other, float(rng.uniform(-180, 180)), float(spot[0]), float(spot[2]))
        fx, fz, fr = placed.footprint()
        mx, mz, mr = figure.footprint()
        ahead = (np.array([fx, 0.0, fz]) - position) @ rotation[2]
        if np.hypot(fx - mx, fz - mz) > fr + mr + PERSON_GAP and ahead > 1.0:
            figures.append(placed)
    canvas, native, light, image = _render(
        domain, rng, camera, figures, focus=np.array([0.0, 0.0, 0.0]), occluder_share=OCCLUDER_SHARE
    )
    person = label_figure(canvas, camera, native, figure, 0)
    people = () if person is None else (person,)
    return SceneRender(
        LabelledImage(image, people),
        canvas,
        camera,
        native,
        tuple(figures),
        (0,) if person is not None else (),
        light,
    )


def render_crop(
    domain: Domain | str, rng: np.random.Generator, width: int = 192, height: int = 256
) -> LabelledImage:
    """One person framed as a top-down crop, ``width x height`` (SimpleBaseline's 192 x 256).

    ``people`` holds that person only (neighbours may show, unlabelled, as in real crops). In
    the rare render where the person ends up hidden, the draw is repeated with the generator's
    next values, so the result stays a function of the generator's state.
    """
    while True:
        result = render_crop_debug(domain, rng, width, height)
        if result.labelled.people:
            return result.labelled
