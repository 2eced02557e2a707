"""Small in-memory data for tests: random people on random images, encoded for a tiny model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, TopDownDataset
from tests.conftest import TINY_MODEL

TINY_CODEC = HeatmapCodec.for_model(TINY_MODEL)


def random_instances(n: int, seed: int = 0, size: tuple[int, int] = (80, 100)) -> list[Instance]:
    """``n`` images with one 'person' each: bright blobs at the keypoints so there is signal."""
    rng = np.random.default_rng(seed)
    out = []
    w, h = size
    for i in range(n):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        kp = np.zeros((17, 3), np.float32)
        kp[:, 0] = rng.uniform(20, w - 20, 17)
        kp[:, 1] = rng.uniform(20, h - 20, 17)
        kp[:, 2] = 2
        for j, (x, y) in enumerate(kp[:, :2]):
            image[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = (255, 15 * j, 255 - 15 * j)
        out.append(
            Instance(
                image=image,
                box=(15, 15, w - 30, h - 30),
                keypoints=kp,
                image_id=i + 1,
                annotation_id=i + 1,
            )
        )
    return out


def unlabelled_people(n: int = 8, seed: int = 5) -> list[Instance]:
    """``random_instances`` with their labels removed (every joint unknown)."""
    return [
        Instance(i.image, i.box, np.zeros_like(i.keypoints), i.image_id, -i.image_id)
        for i in random_instances(n, seed=seed)
    ]


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state to compare with later."""
    return {k: v.clone() for k, v in module.state_dict().items()}


def tiny_dataset(n: int = 8, seed: int = 0, **kwargs: object) -> TopDownDataset:
    return TopDownDataset(random_instances(n, seed), TINY_CODEC, seed=seed, **kwargs)  # type: ignore[arg-type]


class RecordingProgress:
    """A :class:`metapose.progress.Progress` that records each stage as ``[name, total, done]``."""

    def __init__(self) -> None:
        self.stages: list[list[object]] = []
        self.open = False

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        entry: list[object] = [name, total, 0]
        self.stages.append(entry)
        self.open = True

        def advance(n: int) -> None:
            entry[2] = int(entry[2]) + n  # type: ignore[call-overload]

        return advance

    def close_stage(self) -> None:
        self.open = False

    def finished(self) -> list[tuple[object, ...]]:
        """``(name, total)`` of the stages, each checked to have reached its total."""
        assert not self.open, "a stage was left open"
        for name, total, done in self.stages:
            assert done == total, f"stage {name!r} advanced {done} of {total}"
        return [(name, total) for name, total, _ in self.stages]
