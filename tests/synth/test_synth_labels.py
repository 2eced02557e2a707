"""Labels read off the renderer agree with the rendered pixels (the issue's "must show" 2)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metapose.skeleton import COCO17
from metapose.synth.body import KEYPOINT_PARTS, NUM_PARTS
from metapose.synth.domains import DOMAINS
from metapose.synth.raster import Canvas
from metapose.synth.scene import (
    Figure,
    SceneRender,
    figure_jobs,
    render_crop_debug,
    render_scene_debug,
)

CROP = (96, 128)
SCENE = (200, 150)


def solo_mask(
    render: SceneRender, figure: Figure, parts: tuple[int, ...], *, edges: bool = False
) -> np.ndarray:
    """Pixels ``parts`` of ``figure`` own when drawn alone on an empty canvas (at least half
    covered), or with ``edges`` every pixel they touch (the anti-aliased rim too)."""
    body = figure.body
    keep_c = np.isin(body.cone_parts, parts)
    keep_e = np.isin(body.ellipsoid_parts, parts)
    alone = replace(
        body,
        cones=body.cones[keep_c],
        cone_parts=body.cone_parts[keep_c],
        ellipsoids=body.ellipsoids[keep_e],
        ellipsoid_axes=body.ellipsoid_axes[keep_e],
        ellipsoid_parts=body.ellipsoid_parts[keep_e],
    )
    native = render.native
    canvas = Canvas.over(np.zeros((render.canvas.colour.shape[0], native.height, native.width)))
    for _, draw in figure_jobs(canvas, replace(figure, body=alone), native, render.light, 0):
        draw()
    if edges:
        return np.abs(canvas.colour).sum(axis=0) > 0
    return canvas.label >= 0


def renders() -> list[SceneRender]:
    out = []
    for name in DOMAINS:
        for i in range(6):
            out.append(render_crop_debug(name, np.random.default_rng([7, i]), *CROP))
        for i in range(3):
            out.append(render_scene_debug(name, np.random.default_rng([8, i]), *SCENE))
    return out


@pytest.fixture(scope="module")
def rendered() -> list[SceneRender]:
    return renders()


def test_visible_keypoints_lie_on_their_own_parts(rendered: list[SceneRender]) -> None:
    """On a pixel the part touches: face keypoints sit on the head's rim in profile views."""
    hits = total = 0
    for render in rendered:
        for person, fig_index in zip(render.labelled.people, render.person_figures, strict=True):
            figure = render.figures[fig_index]
            uv, _ = render.native.project(figure.body.keypoints)
            for k in np.flatnonzero(person.keypoints[:, 2] == 2):
                mask = solo_mask(render, figure, KEYPOINT_PARTS[k], edges=True)
                col = int(np.clip(np.rint(uv[k, 0]), 0, mask.shape[1] - 1))
                row = int(np.clip(np.rint(uv[k, 1]), 0, mask.shape[0] - 1))
                hits += bool(mask[row, col])
                total += 1
    assert total > 200
    assert hits / total >= 0.99, f"{hits}/{total} visible keypoints on their own parts"


def test_occluded_keypoints_are_covered_by_something_nearer(rendered: list[SceneRender]) -> None:
    occluded = 0
    for render in rendered:
        for person, fig_index in zip(render.labelled.people, render.person_figures, strict=True):
            figure = render.figures[fig_index]
            uv, z = render.native.project(figure.body.keypoints)
            for k in np.flatnonzero(person.keypoints[:, 2] == 1):
                col = int(np.clip(np.rint(uv[k, 0]), 0, render.canvas.width - 1))
                row = int(np.clip(np.rint(uv[k, 1]), 0, render.canvas.height - 1))
                assert render.canvas.depth[row, col] < z[k], COCO17.keypoints[k]
                occluded += 1
    assert occluded > 20  # self-occlusion is common: the test must see some


def test_flags_zero_exactly_outside_the_image(rendered: list[SceneRender]) -> None:
    for render in rendered:
        width, height = render.camera.width, render.camera.height
        for person, fig_index in zip(render.labelled.people, render.person_figures, strict=True):
            uv, z = render.camera.project(render.figures[fig_index].body.keypoints)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] <= width - 1) & (uv[:, 1] >= 0)
            inside &= (uv[:, 1] <= height - 1) & (z > 0)
            flags = person.keypoints[:, 2]
            np.testing.assert_array_equal(flags > 0, inside)
            np.testing.assert_array_equal(person.keypoints[flags == 0, :2], 0.0)
            np.testing.assert_allclose(person.keypoints[flags > 0, :2], uv[flags > 0], atol=1e-3)


def test_box_and_area_are_the_visible_silhouette(rendered: list[SceneRender]) -> None:
    for render in rendered:
        scale = render.native.focal / render.camera.focal
        for person, fig_index in zip(render.labelled.people, render.person_figures, strict=True):
            label = render.canvas.label
            mask = (label >= fig_index * NUM_PARTS) & (label < (fig_index + 1) * NUM_PARTS)
            rows = np.flatnonzero(mask.any(1))
            cols = np.flatnonzero(mask.any(0))
            expected = (cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0])
            np.testing.assert_allclose(np.array(person.bbox) * scale, expected, atol=1e-3)
            assert person.area == pytest.approx(mask.sum() / scale**2)
            # Nothing can make a silhouette bigger than the person drawn alone.
            figure = render.figures[fig_index]
            alone = solo_mask(render, figure, tuple(range(NUM_PARTS)))
            assert mask.sum() <= alone.sum()
            assert not (mask & ~alone).any()
            x, y, w, h = person.bbox
            seen = person.keypoints[person.keypoints[:, 2] == 2]
            assert ((seen[:, 0] >= x - 1) & (seen[:, 0] <= x + w + 1)).all()
            assert ((seen[:, 1] >= y - 1) & (seen[:, 1] <= y + h + 1)).all()


def test_crop_frames_one_whole_person_most_of_the_time() -> None:
    whole = 0
    n = 12
    for i in range(n):
        render = render_crop_debug("rgb", np.random.default_rng([9, i]), *CROP)
        assert len(render.labelled.people) == 1
        person = render.labelled.people[0]
        whole += bool((person.keypoints[:, 2] > 0).all())
        # The person (visible box and every labelled keypoint) roughly fills the crop.
        x, y, w, h = person.bbox
        labelled = person.keypoints[person.keypoints[:, 2] > 0, :2]
        low = np.minimum(labelled.min(0), (x, y))
        high = np.maximum(labelled.max(0), (x + w, y + h))
        assert max((high - low) / CROP) > 0.5
    assert whole >= 0.75 * n
