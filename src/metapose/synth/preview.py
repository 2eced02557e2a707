"""Preview grids: synthetic images of a domain with their labels drawn, one PNG per domain.

The top rows are top-down crops (items ``0 .. rows * cols - 1`` of the crop stream), the bottom row
whole scenes, all from :func:`metapose.synth.items.synth_item`, so a preview shows exactly what
training and the written datasets get. Labels are drawn with :func:`metapose.data.viz.draw_pose`
(occluded keypoints hollow) and person boxes with :func:`metapose.data.viz.draw_box`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from metapose.data.images import write_rgb
from metapose.data.records import LabelledImage
from metapose.data.viz import draw_box, draw_pose
from metapose.synth.domains import Domain, get_domain
from metapose.synth.items import CROP_SIZE, synth_item

SCENE_SIZE = (480, 360)  # scenes in previews are rendered at this size
GAP = 4  # pixels between tiles
BACKGROUND = 255  # white margins
PREVIEW_FILE = "synth_preview_{name}.png"


def annotate(labelled: LabelledImage, *, boxes: bool = True) -> np.ndarray:
    """The image with every person's keypoints (and box) drawn."""
    image = labelled.image
    for person in labelled.people:
        if boxes:
            image = draw_box(image, person.bbox)
        image = draw_pose(image, person.keypoints, kind="flags")
    return image


def _row(tiles: list[np.ndarray], width: int) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    row = np.full((height, width, 3), BACKGROUND, np.uint8)
    x = 0
    for tile in tiles:
        row[: tile.shape[0], x : x + tile.shape[1]] = tile
        x += tile.shape[1] + GAP
    return row


def preview_grid(
    domain: Domain | str,
    seed: int = 0,
    rows: int = 2,
    cols: int = 5,
    *,
    scenes: int = 2,
    crop_size: tuple[int, int] = CROP_SIZE,
    labels: bool = True,
) -> np.ndarray:
    """``rows x cols`` labelled crops over a row of ``scenes`` labelled scenes, RGB uint8."""
    if rows < 0 or cols < 1 or scenes < 0 or rows + scenes == 0:
        raise ValueError(f"need cols >= 1 and some rows or scenes, got {rows}x{cols}, {scenes}")
    domain = get_domain(domain)
    width = cols * crop_size[0] + (cols - 1) * GAP
    parts = []
    for r in range(rows):
        tiles = []
        for c in range(cols):
            item = synth_item(domain, seed, r * cols + c, mode="crop", size=crop_size)
            tiles.append(annotate(item) if labels else item.image)
        parts.append(_row(tiles, width))
    if scenes:
        tiles = []
        tile_w = (width - (scenes - 1) * GAP) // scenes
        for s in range(scenes):
            item = synth_item(domain, seed, s, mode="scene", size=SCENE_SIZE)
            image = annotate(item) if labels else item.image
            tile_h = round(image.shape[0] * tile_w / image.shape[1])
            tiles.append(cv2.resize(image, (tile_w, tile_h), interpolation=cv2.INTER_AREA))
        parts.append(_row(tiles, width))
    gap = np.full((GAP, width, 3), BACKGROUND, np.uint8)
    stacked = [parts[0]]
    for part in parts[1:]:
        stacked += [gap, part]
    return np.concatenate(stacked, axis=0)


def write_previews(
    domains: Iterable[Domain | str],
    out_dir: str | Path,
    *,
    seed: int = 0,
    rows: int = 2,
    cols: int = 5,
    scenes: int = 2,
    scale: float = 1.0,
) -> list[Path]:
    """One ``synth_preview_<domain>.png`` per domain in ``out_dir``; returns the paths.

    ``scale`` shrinks the grids (the small PNGs under ``docs/`` use 0.6).
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for domain in domains:
        domain = get_domain(domain)
        grid = preview_grid(domain, seed, rows, cols, scenes=scenes)
        if scale != 1.0:
            grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        path = out_dir / PREVIEW_FILE.format(name=domain.name)
        write_rgb(path, grid)
        paths.append(path)
    return paths
