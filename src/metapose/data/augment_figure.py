"""The paper's Figure 2 ("examples of data augmentation for meta training") as an RGB array.

One source crop, then the same crop under each task augmentation style of
:mod:`metapose.data.augment`, its keypoints and limbs drawn with OpenCV, tiled in a titled grid.
Drawing stays in OpenCV so the figure needs no plotting library; the panels are also returned
undrawn for callers that lay them out themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from metapose.data.augment import TaskAugmenter
from metapose.data.viz import SIDE_COLOURS, draw_pose
from metapose.skeleton import COCO17, Skeleton

TITLE_HEIGHT = 18  # pixels of the strip above each panel
TITLE_SCALE = 0.4  # OpenCV font scale that fits TITLE_HEIGHT
GAP = 4  # pixels between panels
BACKGROUND = 255  # white page


class FigurePanel(NamedTuple):
    """One panel: a title, an RGB crop and its ``(K, 3)`` keypoints in crop pixels."""

    title: str
    image: np.ndarray
    keypoints: np.ndarray


def augmentation_panels(
    image: np.ndarray,
    keypoints: np.ndarray,
    augmenter: TaskAugmenter,
    rng: np.random.Generator,
    *,
    per_style: int = 2,
    styles: Sequence[str] | None = None,
) -> list[FigurePanel]:
    """The original crop, then ``per_style`` augmentations for each style (the augmenter's own)."""
    panels = [FigurePanel("original", image, keypoints)]
    for style in augmenter.styles if styles is None else styles:
        for j in range(per_style):
            out = augmenter.augment(image, keypoints, rng, style=style)
            panels.append(FigurePanel(f"{style} #{j + 1}", out.image, out.keypoints))
    return panels


def draw_keypoints(
    image: np.ndarray, keypoints: np.ndarray, skeleton: Skeleton = COCO17, *, zoom: int = 1
) -> np.ndarray:
    """A copy of an RGB crop, enlarged ``zoom`` times, with its labelled keypoints and limbs
    drawn by :func:`metapose.data.viz.draw_pose` (the project's one palette)."""
    height, width = image.shape[:2]
    canvas = cv2.resize(image, (width * zoom, height * zoom), interpolation=cv2.INTER_NEAREST)
    if len(keypoints) == 0:
        return np.ascontiguousarray(canvas)
    scaled = keypoints.astype(np.float64).copy()
    # Pixel centres sit at integers: pixel i of the crop spans [i - 0.5, i + 0.5).
    scaled[:, :2] = (scaled[:, :2] + 0.5) * zoom - 0.5
    if len(scaled) == skeleton.num_keypoints:
        return draw_pose(canvas, scaled, skeleton, kind="flags")
    # Points that are not a skeleton's (test dots, say): no limbs, one colour.
    canvas = np.ascontiguousarray(canvas)
    for x, y, flag in scaled:
        if flag > 0:
            centre = (int(round(x)), int(round(y)))
            cv2.circle(canvas, centre, max(1, zoom + 1), SIDE_COLOURS["center"], -1, cv2.LINE_AA)
    return canvas


def tile_panels(
    panels: Sequence[FigurePanel],
    *,
    cols: int,
    zoom: int = 2,
    skeleton: Skeleton = COCO17,
) -> np.ndarray:
    """Titled panels, keypoints drawn, in a grid of ``cols`` columns: ``(H, W, 3)`` uint8 RGB."""
    if not panels:
        raise ValueError("no panels to tile")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    drawn = [draw_keypoints(p.image, p.keypoints, skeleton, zoom=zoom) for p in panels]
    cell_h = max(d.shape[0] for d in drawn) + TITLE_HEIGHT
    cell_w = max(d.shape[1] for d in drawn)
    rows = -(-len(panels) // cols)
    page = np.full(
        (rows * (cell_h + GAP) - GAP, cols * (cell_w + GAP) - GAP, 3), BACKGROUND, np.uint8
    )
    for i, (panel, image) in enumerate(zip(panels, drawn, strict=True)):
        top, left = (i // cols) * (cell_h + GAP), (i % cols) * (cell_w + GAP)
        page[
            top + TITLE_HEIGHT : top + TITLE_HEIGHT + image.shape[0], left : left + image.shape[1]
        ] = image if image.ndim == 3 else image[..., None]
        baseline = top + TITLE_HEIGHT - TITLE_HEIGHT // 4
        cv2.putText(
            page,
            panel.title,
            (left, baseline),
            cv2.FONT_HERSHEY_SIMPLEX,
            TITLE_SCALE,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return page


def figure2(
    image: np.ndarray,
    keypoints: np.ndarray,
    augmenter: TaskAugmenter,
    rng: np.random.Generator,
    *,
    per_style: int = 2,
    zoom: int = 2,
) -> np.ndarray:
    """Fig. 2: the crop, then ``per_style`` augmentations per style in one column each."""
    panels = augmentation_panels(image, keypoints, augmenter, rng, per_style=per_style)
    # The original heads the first column; each style's examples fill one column beneath a blank.
    grid: list[FigurePanel] = []
    blank = FigurePanel("", np.full_like(image, BACKGROUND), np.zeros((0, 3), np.float32))
    columns = 1 + len(augmenter.styles)
    for row in range(per_style):
        grid.append(panels[0] if row == 0 else blank)
        for s in range(len(augmenter.styles)):
            grid.append(panels[1 + s * per_style + row])
    return tile_panels(grid, cols=columns, zoom=zoom)


__all__ = ["FigurePanel", "augmentation_panels", "draw_keypoints", "tile_panels", "figure2"]
