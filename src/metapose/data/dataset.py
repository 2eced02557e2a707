"""Top-down training/evaluation samples: a person crop, its heatmap targets and where it came from.

:class:`TopDownDataset` serves any list of :class:`Instance` (from a COCO-format dataset, from
detections, or built in memory); randomness comes from ``(seed, epoch, index)`` so a sample is the
same whichever DataLoader worker makes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from metapose.config import TopDownAugmentConfig
from metapose.data.coco import CocoDataset
from metapose.data.codec import Encoded, HeatmapCodec
from metapose.data.crops import (
    CropParams,
    crop_keypoints,
    sample_crop_params,
    warp_crop,
)
from metapose.data.images import read_rgb
from metapose.progress import Progress
from metapose.skeleton import COCO17, Skeleton

# A hook applied to the crop and its crop-space keypoints before encoding (task augmentation).
CropTransform = Callable[
    [np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]
]


class Sample(NamedTuple):
    """One person crop; torch's default collate stacks these into a batch of the same type."""

    image: torch.Tensor  # (3, H, W) float32, normalised
    heatmaps: torch.Tensor  # (K, h, w) float32 targets; (K, 0, 0) in a dataset without targets
    target_weight: torch.Tensor  # (K,) float32 (zeros without targets)
    keypoints: torch.Tensor  # (K, 3) crop pixels (x, y, flag)
    center: torch.Tensor  # (2,) image pixels
    scale: torch.Tensor  # (2,) image pixels (w, h)
    rotation: float
    flip: bool
    image_id: int
    annotation_id: int
    area: float
    box_score: float


@dataclass(frozen=True)
class Instance:
    """A person to crop: the image (a file or pixels), a box and, for training, labels."""

    image: Path | np.ndarray
    box: tuple[float, float, float, float]
    keypoints: np.ndarray  # (K, 3) image pixels; flags 0 where unknown
    image_id: int = 0
    annotation_id: int = 0
    area: float = 0.0
    score: float = 1.0


def make_sample(
    image: np.ndarray,
    instance: Instance,
    codec: HeatmapCodec,
    *,
    augment: TopDownAugmentConfig | None = None,
    rng: np.random.Generator | None = None,
    crop_transform: CropTransform | None = None,
    skeleton: Skeleton = COCO17,
    targets: bool = True,
) -> Sample:
    """Crop ``instance`` out of ``image`` (RGB uint8), augment, and (with ``targets``) encode its
    heatmaps; prediction needs the crop and its geometry only."""
    aspect = codec.input_size[0] / codec.input_size[1]
    params = sample_crop_params(instance.box, instance.keypoints, aspect, augment, rng, skeleton)
    matrix = codec.crop_matrix(params)
    crop = warp_crop(image, matrix, codec.input_size)
    keypoints = crop_keypoints(instance.keypoints, matrix, params, skeleton)
    if crop_transform is not None:
        if rng is None:
            raise ValueError("a crop_transform needs an rng")
        crop, keypoints = crop_transform(crop, keypoints, rng)
    if targets:
        encoded = codec.encode(keypoints)
    else:
        k = keypoints.shape[0]
        encoded = Encoded(np.zeros((k, 0, 0), np.float32), np.zeros(k, np.float32))
    return Sample(
        image=torch.from_numpy(codec.normalization.apply(crop)),
        heatmaps=torch.from_numpy(encoded.heatmaps),
        target_weight=torch.from_numpy(encoded.target_weight),
        keypoints=torch.from_numpy(keypoints),
        center=torch.from_numpy(params.center),
        scale=torch.from_numpy(params.scale),
        rotation=params.rotation,
        flip=params.flip,
        image_id=instance.image_id,
        annotation_id=instance.annotation_id,
        area=instance.area,
        box_score=instance.score,
    )


def crop_params_of(sample: Sample, index: int | None = None) -> CropParams:
    """The crop geometry stored in a sample (or in row ``index`` of a collated batch)."""
    center, scale = sample.center, sample.scale
    rotation, flip = sample.rotation, sample.flip
    if index is not None:
        center, scale = center[index], scale[index]
        rotation = float(torch.as_tensor(rotation)[index])
        flip = bool(torch.as_tensor(flip)[index])
    return CropParams(
        center.numpy().astype(np.float64),
        scale.numpy().astype(np.float64),
        float(rotation),
        bool(flip),
    )


def instances_from_coco(
    dataset: CocoDataset, *, trainable_only: bool = True, image_ids: Sequence[int] | None = None
) -> list[Instance]:
    """One instance per person annotation (GT boxes); crowd and unlabelled people left out."""
    wanted = None if image_ids is None else set(image_ids)
    out = []
    for ann in dataset.annotations:
        if wanted is not None and ann.image_id not in wanted:
            continue
        if ann.iscrowd or (trainable_only and not ann.trainable):
            continue
        out.append(
            Instance(
                image=dataset.image_path(ann.image_id),
                box=ann.bbox,
                keypoints=ann.keypoints,
                image_id=ann.image_id,
                annotation_id=ann.id,
                area=ann.area,
            )
        )
    return out


class TopDownDataset(Dataset[Sample]):
    """Person crops of ``instances``; with ``augment`` set, SimpleBaseline's training augmentation.

    Sample ``i`` of epoch ``e`` draws its randomness from ``np.random.default_rng([seed, e, i])``.
    Decoded images are cached per worker when ``cache_images`` (few-shot sets are small).
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        codec: HeatmapCodec,
        *,
        augment: TopDownAugmentConfig | None = None,
        crop_transform: CropTransform | None = None,
        seed: int = 0,
        cache_images: bool = False,
        skeleton: Skeleton = COCO17,
        targets: bool = True,
    ) -> None:
        self.instances = list(instances)
        self.codec = codec
        self.augment = augment
        self.crop_transform = crop_transform
        self.seed = seed
        self.epoch = 0
        self.cache_images = cache_images
        self.skeleton = skeleton
        self.targets = targets  # encode heatmap targets (training); prediction needs none
        self._cache: dict[Path, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.instances)

    def load_image(self, instance: Instance) -> np.ndarray:
        if isinstance(instance.image, np.ndarray):
            return instance.image
        if self.cache_images:
            if instance.image not in self._cache:
                self._cache[instance.image] = read_rgb(instance.image)
            return self._cache[instance.image]
        return read_rgb(instance.image)

    def preload(self, progress: Progress | None = None) -> int:
        """Decode every image file of the instances into the cache now; returns how many.

        Few-shot sets are read once here (with a progress stage of one step per image) instead of
        during the first epoch. Needs ``cache_images``.
        """
        if not self.cache_images:
            raise ValueError("preload() needs a dataset made with cache_images=True")
        files = list(
            dict.fromkeys(i.image for i in self.instances if not isinstance(i.image, np.ndarray))
        )
        advance = progress.stage("cache images", len(files)) if progress is not None else None
        try:
            for file in files:
                assert isinstance(file, Path)
                if file not in self._cache:
                    self._cache[file] = read_rgb(file)
                if advance is not None:
                    advance(1)
        finally:
            if progress is not None:
                progress.close_stage()
        return len(files)

    def __getitem__(self, index: int) -> Sample:
        instance = self.instances[index]
        random = self.augment is not None or self.crop_transform is not None
        rng = np.random.default_rng([self.seed, self.epoch, index]) if random else None
        return make_sample(
            self.load_image(instance),
            instance,
            self.codec,
            augment=self.augment,
            rng=rng,
            crop_transform=self.crop_transform,
            skeleton=self.skeleton,
            targets=self.targets,
        )
