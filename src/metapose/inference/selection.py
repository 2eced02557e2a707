"""Which images to label: diversity of a model's features, or its uncertainty.

Each image is run through the model once (the whole image as the person's box, as
``metapose predict --whole-image``): its backbone features, average-pooled onto a coarse grid that
keeps where things are, are the image's description (L2-normalised); the mean over keypoints of
the heatmaps' peaks is the model's confidence. Then K images are chosen:

- ``kcenter``: greedy k-center (Sener & Savarese, ICLR 2018, "core-set"): start from the image
  nearest the mean, repeatedly add the image farthest from every one chosen so far, so that no
  image is far from a labelled one;
- ``kmeans``: k-means++ then Lloyd iterations (DeepLabCut's frame extraction), the image nearest
  each centre;
- ``uncertain``: the K images the model is least confident on (a suggestion queue as SLEAP's);
- ``random``: K images drawn uniformly (the baseline a selection must beat).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from metapose.data.batches import collate
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, TopDownDataset
from metapose.device import DeviceOptions
from metapose.models import TopDownModel

SelectMethod = Literal["kcenter", "kmeans", "uncertain", "random"]
SELECT_METHODS: tuple[SelectMethod, ...] = ("kcenter", "kmeans", "uncertain", "random")
# The grid the backbone's feature map is pooled onto (rows, columns of a person crop): coarse
# enough to ignore small shifts, fine enough to tell an arm up from an arm down.
POOL_GRID = (4, 3)
KMEANS_ITERATIONS = 20


@dataclass(frozen=True)
class ImageFeatures:
    image_ids: tuple[int, ...]
    vectors: np.ndarray  # (N, D) float32, L2-normalised
    confidence: np.ndarray  # (N,) mean heatmap peak over keypoints


def image_features(
    model: TopDownModel,
    instances: Sequence[Instance],
    codec: HeatmapCodec,
    options: DeviceOptions,
    *,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> ImageFeatures:
    """One feature vector and confidence per instance (an image's person box)."""
    dataset = TopDownDataset(list(instances), codec, targets=False)
    model.eval()
    options.prepare(model)
    vectors, confidence = [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        x = batch.image.to(options.device).contiguous(memory_format=options.memory_format)
        with torch.inference_mode():
            features = model.forward_features(x)
            heatmaps = model.forward_head(features).float()
        pooled = F.adaptive_avg_pool2d(features.float(), POOL_GRID).flatten(1)
        vectors.append(F.normalize(pooled, dim=1).cpu().numpy())
        confidence.append(heatmaps.flatten(2).amax(dim=2).mean(dim=1).cpu().numpy())
        if on_batch is not None:
            on_batch(int(x.shape[0]))
    return ImageFeatures(
        tuple(i.image_id for i in instances),
        np.concatenate(vectors).astype(np.float32),
        np.concatenate(confidence).astype(np.float32),
    )


def _sq_distances(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return np.square(points - centre).sum(axis=1)


def k_center(vectors: np.ndarray, k: int) -> list[int]:
    """Greedy k-center: indices of ``k`` rows, the first nearest the mean."""
    first = int(np.argmin(_sq_distances(vectors, vectors.mean(axis=0))))
    chosen = [first]
    nearest = _sq_distances(vectors, vectors[first])
    while len(chosen) < k:
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, _sq_distances(vectors, vectors[nxt]))
    return chosen


def k_means(vectors: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ seeding and Lloyd iterations; the index of the row nearest each centre."""
    n = len(vectors)
    centres = [vectors[int(rng.integers(n))]]
    nearest = _sq_distances(vectors, centres[0])
    for _ in range(1, k):
        weights = nearest / nearest.sum() if nearest.sum() > 0 else np.full(n, 1 / n)
        centres.append(vectors[int(rng.choice(n, p=weights))])
        nearest = np.minimum(nearest, _sq_distances(vectors, centres[-1]))
    c = np.stack(centres)
    for _ in range(KMEANS_ITERATIONS):
        assign = np.argmin(((vectors[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            members = vectors[assign == j]
            if len(members):
                c[j] = members.mean(axis=0)
    chosen: list[int] = []
    for j in range(k):  # the nearest image not taken yet: K distinct images
        order = np.argsort(_sq_distances(vectors, c[j]))
        chosen.append(int(next(i for i in order if int(i) not in chosen)))
    return chosen


def select_images(
    features: ImageFeatures, k: int, method: SelectMethod, rng: np.random.Generator
) -> list[int]:
    """The image ids of ``k`` images to label, in the order chosen."""
    n = len(features.image_ids)
    if not 1 <= k <= n:
        raise ValueError(f"cannot choose {k} of {n} images")
    if method == "kcenter":
        picked = k_center(features.vectors, k)
    elif method == "kmeans":
        picked = k_means(features.vectors, k, rng)
    elif method == "uncertain":
        picked = [int(i) for i in np.argsort(features.confidence, kind="stable")[:k]]
    else:
        picked = [int(i) for i in rng.choice(n, size=k, replace=False)]
    return [features.image_ids[i] for i in picked]
