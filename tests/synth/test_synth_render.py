"""The rasteriser, cameras and domains: geometry that can be checked by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metapose.synth.appearance import upsample
from metapose.synth.body import P
from metapose.synth.camera import Camera, CameraPrior, look_at
from metapose.synth.domains import DOMAINS, RGB, Domain, get_domain
from metapose.synth.raster import STRIPES, Canvas, Light, Pattern
from metapose.synth.scene import render_crop, render_scene

LIGHT = Light(np.array([0.0, 0.0, -1.0]), 0.5, 0.5)
WHITE = np.ones((4, 3), np.float32)


def canvas(w: int = 80, h: int = 60) -> Canvas:
    return Canvas.over(np.zeros((3, h, w), np.float32))


def test_sphere_covers_its_disc_with_the_right_depth() -> None:
    c = canvas()
    radius = 15.0
    c.draw_ellipsoid((40.0, 30.0, 5.0), np.eye(3) * radius, 0.01, 3, WHITE, 0, LIGHT)
    assert (c.label == 3).sum() == pytest.approx(np.pi * radius**2, rel=0.03)
    assert c.depth[30, 40] == pytest.approx(5.0 - radius * 0.01, abs=1e-4)
    # Edges are anti-aliased: partly covered pixels get part of the colour.
    partial = (c.colour[0] > 0.02) & (c.colour[0] < 0.45)
    assert partial.sum() > 20


def test_capsule_silhouette_and_depth() -> None:
    c = canvas()
    c.draw_cone((10, 30, 4.0, 6, 70, 30, 4.0, 6), (0.01, 0.01), 1, WHITE, 0, 0, 1.0, LIGHT)
    mask = c.label == 1
    assert mask[30, 10:71].all() and mask[24:37, 40].all()
    assert not mask[17, 40] and not mask[30, 2]
    assert c.depth[30, 40] == pytest.approx(4.0 - 0.06, abs=1e-4)


def test_garment_pattern_stays_on_the_garment() -> None:
    """A sleeve's stripes stop where the sleeve ends; bare skin carries no pattern."""
    palette = np.zeros((6, 3), np.float32)
    palette[0] = (0, 1, 0)  # skin
    palette[4] = (1, 0, 0)  # garment
    palette[5] = (0, 0, 1)  # its stripes
    stripes = Pattern(STRIPES, period=0.05)
    ends = (10, 30, 4.0, 8, 70, 30, 4.0, 8)
    for split, shown in ((0.0, {1}), (1.0, {0, 2}), (0.5, {0, 1, 2})):
        c = canvas()
        c.draw_cone(ends, (0.01, 0.01), 1, palette, 4, 0, split, LIGHT, stripes)
        dominant = set(np.argmax(c.colour[:, c.label == 1], axis=0).tolist())
        assert dominant == shown, split


def test_nearer_surface_wins_whatever_the_order() -> None:
    labels = []
    for order in ((0, 1), (1, 0)):
        c = canvas()
        for i in order:
            z = 3.0 if i == 0 else 4.0
            c.draw_ellipsoid((40.0 + 8 * i, 30.0, z), np.eye(3) * 12, 0.01, i, WHITE, 0, LIGHT)
        labels.append(c.label)
    np.testing.assert_array_equal(labels[0], labels[1])
    assert labels[0][30, 40] == 0 and labels[0][30, 58] == 1


def test_camera_resizing_keeps_pixels_aligned() -> None:
    cam = Camera(
        300.0,
        95.5,
        127.5,
        look_at(np.array([0, 1.5, 0.0]), np.array([0, 1, 4.0])),
        np.array([0, 1.5, 0.0]),
        192,
        256,
    )
    points = np.array([[0.3, 1.2, 4.0], [-0.5, 0.1, 6.0]])
    uv, _ = cam.project(points)
    small, _ = cam.resized(0.4).project(points)
    np.testing.assert_allclose(small, (uv + 0.5) * 0.4 - 0.5, atol=1e-9)
    # Upsampling a native render puts its pixel centres back where the output camera has them.
    native = np.zeros((40, 40), np.float32)
    native[10, 20] = 1.0
    out = upsample(native, 0.25, (160, 160))
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert (abs(row - (10.5 / 0.25 - 0.5)) <= 1.0) and (abs(col - (20.5 / 0.25 - 0.5)) <= 1.0)


def test_front_and_back_views_differ_in_the_face() -> None:
    """From the front the head shows skin and eyes, from the back mostly hair."""
    from metapose.synth import scene
    from metapose.synth.appearance import HAIR, SKIN

    rng = np.random.default_rng(4)
    figure = scene.sample_figure(RGB, rng)
    while figure.look.face.hairline_front > 1.0 or figure.action != "stand":  # want hair
        figure = scene.sample_figure(RGB, rng)
    palette = figure.look.palette.copy()
    palette[SKIN] = (1.0, 0.0, 0.0)
    palette[HAIR] = (0.0, 1.0, 0.0)
    figure = replace(figure, look=figure.look._replace(palette=palette))
    skin_shares = []
    for yaw in (0.0, 180.0):
        fig = scene.place(figure, yaw, 0.0, 0.0)
        nose = fig.body.keypoints[0]
        position = nose + np.array([0.0, 0.1, 2.0])  # the same camera, in front at yaw 0
        cam = Camera(600.0, 64.0, 64.0, look_at(position, nose), position, 128, 128)
        c = Canvas.over(np.zeros((3, 128, 128), np.float32))
        for _, draw in scene.figure_jobs(c, fig, cam, LIGHT, 0):
            draw()
        head = c.image()[np.isin(c.label, (P["head"], P["hair"]))]
        skin_shares.append(float((head[:, 0] > head[:, 1]).mean()))
    assert skin_shares[0] > skin_shares[1] + 0.3


def test_get_domain_names_the_known_domains() -> None:
    assert {"rgb", "thermal", "unique"} <= set(DOMAINS)
    assert get_domain("thermal") is DOMAINS["thermal"]
    with pytest.raises(ValueError, match="rgb.*thermal.*unique"):
        get_domain("infrared")


def test_a_new_domain_is_just_a_domain_object() -> None:
    night = Domain(
        "night",
        RGB.poses,
        replace(RGB.style, name="night"),
        CameraPrior(elevation=(40.0, 60.0)),
        max_people=2,
    )
    assert get_domain(night) is night
    crop = render_crop(night, np.random.default_rng(0), 48, 64)
    assert crop.image.shape == (64, 48, 3) and len(crop.people) == 1
    scene = render_scene(night, np.random.default_rng(0), 80, 60)
    assert len(scene.people) <= 2
    with pytest.raises(ValueError, match="max_people"):
        Domain("bad", RGB.poses, RGB.style, RGB.camera, max_people=0)


def test_thermal_images_carry_no_colour_texture() -> None:
    crop = render_crop("thermal", np.random.default_rng(2), 48, 64)
    rgb = crop.image.astype(int)
    # Every palette maps one temperature to one colour: no two pixels of equal green differ much
    # in red and blue, unlike a colour photograph (checked loosely through the channel spread).
    assert np.corrcoef(rgb[..., 0].ravel(), rgb[..., 2].ravel())[0, 1] != 0 or rgb.std() > 0
    camera = DOMAINS["thermal"].camera
    assert camera.elevation[1] > DOMAINS["rgb"].camera.elevation[1]


def test_preview_grid_draws_labels_and_writes_one_png_per_domain(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from metapose.data.images import read_rgb
    from metapose.synth.preview import preview_grid, write_previews

    labelled = preview_grid("rgb", 0, rows=1, cols=2, scenes=1, crop_size=(48, 64))
    plain = preview_grid("rgb", 0, rows=1, cols=2, scenes=1, crop_size=(48, 64), labels=False)
    assert labelled.dtype == np.uint8 and labelled.shape == plain.shape
    assert labelled.shape[1] == 2 * 48 + 4
    assert (labelled != plain).any()
    paths = write_previews(
        ["thermal", night_domain()], tmp_path, rows=1, cols=1, scenes=0, scale=0.5
    )
    assert [p.name for p in paths] == ["synth_preview_thermal.png", "synth_preview_night.png"]
    assert read_rgb(paths[0]).shape == (128, 96, 3)


def night_domain() -> Domain:
    return Domain("night", RGB.poses, replace(RGB.style, name="night"), RGB.camera)


def test_block_faces_turn_with_the_block() -> None:
    """Seen head-on along its turned +z axis, a block shows exactly its front face."""
    from metapose.synth.background import Block, block_faces
    from metapose.synth.body import rot_y

    look = RGB.style.surface("furniture", np.random.default_rng(0))
    light = Light(np.array([0.0, 1.0, 0.0]), 0.5, 0.5)
    for yaw in (0.0, 0.4, 1.3, 2.5):
        block = Block(0.0, 0.0, (1.2, 0.6, 0.5), yaw, look)
        corners = block.corners()
        axis = rot_y(np.rad2deg(yaw)) @ (0.0, 0.0, 1.0)
        front = corners[[2, 3, 6, 7]].mean(0) - corners.mean(0)
        np.testing.assert_allclose(front / np.linalg.norm(front), axis, atol=1e-9)
        position = corners.mean(0) + 4.0 * axis
        cam = Camera(200.0, 64.0, 48.0, look_at(position, corners.mean(0)), position, 128, 96)
        faces = block_faces(block, cam, light)
        assert len(faces) == 1
        np.testing.assert_allclose(faces[0][1][0], (0.0, 0.0, -1.0), atol=1e-6)
