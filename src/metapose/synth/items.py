"""Item ``i`` of a synthetic stream, from ``(seed, i)`` alone.

Item ``i`` of the stream seeded ``s`` is rendered from ``np.random.default_rng([s, i])``
(numpy's SeedSequence hashes the pair into independent streams), so it is the same in whatever
process, worker or order it is made. Kept free of torch so that writer processes start fast.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from metapose.data.records import LabelledImage
from metapose.synth.domains import Domain, get_domain
from metapose.synth.scene import render_crop, render_scene

Mode = Literal["crop", "scene"]
CROP_SIZE = (192, 256)  # (width, height): SimpleBaseline's input
SCENE_SIZE = (640, 480)


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of the stream seeded ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got {seed}, {index}")
    return np.random.default_rng([seed, index])


def default_size(mode: Mode) -> tuple[int, int]:
    return CROP_SIZE if mode == "crop" else SCENE_SIZE


def render_item(
    domain: Domain, rng: np.random.Generator, mode: Mode, size: tuple[int, int]
) -> LabelledImage:
    """A crop or a scene of ``size = (width, height)`` drawn with ``rng``."""
    width, height = size
    if mode == "crop":
        return render_crop(domain, rng, width, height)
    if mode == "scene":
        return render_scene(domain, rng, width, height)
    raise ValueError(f"mode must be 'crop' or 'scene', got {mode!r}")


def synth_item(
    domain: Domain | str,
    seed: int,
    index: int,
    *,
    mode: Mode = "crop",
    size: tuple[int, int] | None = None,
) -> LabelledImage:
    """Item ``index`` of the single-domain stream ``(domain, seed)``, rendered directly."""
    return render_item(get_domain(domain), item_rng(seed, index), mode, size or default_size(mode))
