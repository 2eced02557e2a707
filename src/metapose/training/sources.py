"""Where training batches come from: synthetic people rendered on the fly, or a COCO-format folder.

Every batch is a pure function of ``(seed, batch number)``, so a stream restarts exactly where a
checkpoint left it and two consumers (the baseline and the meta-learner) can read the same
batches. With task augmentation (paper §4.2) each crop is also warped (affine, elastic or
perspective); the ``"style"`` sampler gives all crops of a batch (a task) one source domain and one
augmentation style, the ``"mixed"`` sampler (the paper's) draws both per crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from metapose.config import (
    CocoFolderConfig,
    SourceConfig,
    TaskAugmentConfig,
    TopDownAugmentConfig,
)
from metapose.data.augment import TaskAugmenter
from metapose.data.batches import BatchStream, EpochBatches, IndexedBatches, collate
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import (
    CropTransform,
    Instance,
    Sample,
    TopDownDataset,
    instances_from_coco,
    make_sample,
)
from metapose.data.images import read_rgb
from metapose.data.records import LabelledImage
from metapose.errors import DataError
from metapose.synth.domains import get_domain
from metapose.synth.scene import render_crop


def _task_transform(augmenter: TaskAugmenter, style: str) -> CropTransform:
    def transform(
        image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        out = augmenter.augment(image, keypoints, rng, style=style)
        return out.image, out.keypoints

    return transform


def _batch_maker(
    draw: Callable[[np.random.Generator, int], tuple[np.ndarray, Instance]],
    *,
    choices: int,
    codec: HeatmapCodec,
    augment: TopDownAugmentConfig | None,
    task_augment: TaskAugmentConfig | None,
    batch_size: int,
    seed: int,
) -> Callable[[int], Sample]:
    """Batch ``b``: crops ``draw(rng, choice)`` with ``choice`` one of ``choices`` sources."""
    augmenter = TaskAugmenter(task_augment) if task_augment is not None else None
    per_task = task_augment is not None and task_augment.sampler == "style"

    def make_batch(b: int) -> Sample:
        task_rng = np.random.default_rng([seed, b])
        task_choice = int(task_rng.integers(choices))
        task_style = augmenter.sample_style(task_rng) if augmenter is not None else None
        samples = []
        for i in range(batch_size):
            rng = np.random.default_rng([seed, b, i])
            choice = task_choice if per_task else int(rng.integers(choices))
            image, instance = draw(rng, choice)
            transform = None
            if augmenter is not None:
                style = task_style if per_task else augmenter.sample_style(rng)
                transform = _task_transform(augmenter, str(style))
            samples.append(
                make_sample(
                    image, instance, codec, augment=augment, rng=rng, crop_transform=transform
                )
            )
        return collate(samples)

    return make_batch


def person_instance(labelled: LabelledImage, index: int = 0) -> Instance:
    person = labelled.people[index]
    return Instance(labelled.image, person.bbox, person.keypoints, area=person.area)


def mixed_batches(
    source: SourceConfig,
    codec: HeatmapCodec,
    *,
    augment: TopDownAugmentConfig | None,
    task_augment: TaskAugmentConfig | None = None,
    batch_size: int = 32,
    seed: int = 0,
    workers: int = 0,
) -> IndexedBatches:
    """Endless batches whose crops come from ``source``'s synthetic domains and COCO folders.

    Each crop (each task, with the ``style`` sampler) picks one source with equal probability;
    a COCO folder then gives one of its labelled people, also uniformly. COCO folders are checked
    completely (every image decoded) before the first batch, and their images kept in memory.
    """
    domains = [get_domain(name) for name in source.domains]
    people: list[list[Instance]] = []
    images: dict[Path, np.ndarray] = {}
    for folder in source.coco:
        coco = load_coco(folder.annotations, folder.image_dir, check_images="decode")
        instances = instances_from_coco(coco)
        if not instances:
            raise DataError(folder.annotations, "no labelled person to draw source tasks from")
        people.append(instances)
    width, height = codec.input_size

    def draw(rng: np.random.Generator, choice: int) -> tuple[np.ndarray, Instance]:
        if choice < len(domains):
            labelled = render_crop(domains[choice], rng, width, height)
            return labelled.image, person_instance(labelled)
        candidates = people[choice - len(domains)]
        instance = candidates[int(rng.integers(len(candidates)))]
        assert isinstance(instance.image, Path)
        if instance.image not in images:
            images[instance.image] = read_rgb(instance.image)
        return images[instance.image], instance

    make = _batch_maker(
        draw,
        choices=len(domains) + len(people),
        codec=codec,
        augment=augment,
        task_augment=task_augment,
        batch_size=batch_size,
        seed=seed,
    )
    return IndexedBatches(make, num_workers=workers)


def dataset_batches(
    dataset: TopDownDataset,
    *,
    task_augment: TaskAugmentConfig | None = None,
    batch_size: int = 32,
    seed: int = 0,
    workers: int = 0,
) -> EpochBatches | IndexedBatches:
    """A finite dataset's batches: shuffled epochs, or random tasks under task augmentation."""
    if task_augment is None:
        return EpochBatches(dataset, batch_size, seed=seed, num_workers=workers)
    instances = dataset.instances

    def draw(rng: np.random.Generator, choice: int) -> tuple[np.ndarray, Instance]:
        instance = instances[int(rng.integers(len(instances)))]
        return dataset.load_image(instance), instance

    make = _batch_maker(
        draw,
        choices=1,
        codec=dataset.codec,
        augment=dataset.augment,
        task_augment=task_augment,
        batch_size=batch_size,
        seed=seed,
    )
    return IndexedBatches(make, num_workers=workers)


def batches_for(
    data: SourceConfig,
    codec: HeatmapCodec,
    *,
    augment: TopDownAugmentConfig | None,
    task_augment: TaskAugmentConfig | None = None,
    batch_size: int = 32,
    seed: int = 0,
    workers: int = 0,
) -> BatchStream:
    """The batch stream of ``metapose train`` / ``meta``: one COCO folder alone is read in
    shuffled epochs (every person once per epoch); synthetic domains, several folders or both are
    drawn crop by crop (:func:`mixed_batches`).

    A lone COCO-format dataset is checked completely (every image decoded) before the first batch,
    so bad data fails before anything is written.
    """
    if data.domains or len(data.coco) != 1:
        return mixed_batches(
            data,
            codec,
            augment=augment,
            task_augment=task_augment,
            batch_size=batch_size,
            seed=seed,
            workers=workers,
        )
    folder = data.coco[0]
    coco = load_coco(folder.annotations, folder.image_dir, check_images="decode")
    dataset = TopDownDataset(instances_from_coco(coco), codec, augment=augment, seed=seed)
    return dataset_batches(
        dataset,
        task_augment=task_augment,
        batch_size=batch_size,
        seed=seed,
        workers=workers,
    )


def calibration_batches(
    codec: HeatmapCodec,
    coco: Sequence[CocoFolderConfig] = (),
    *,
    count: int = 256,
    batch_size: int = 32,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Un-augmented person crops to measure activation statistics on (see
    :func:`metapose.models.weights.unfold.unfold_batchnorm`): the labelled people of ``coco``
    folders (up to ``count``, in file order), or, with none given, ``count`` synthetic ``rgb``
    people drawn from ``seed``."""
    crops: list[torch.Tensor] = []
    if coco:
        for folder in coco:
            data = load_coco(folder.annotations, folder.image_dir)
            dataset = TopDownDataset(instances_from_coco(data), codec)
            crops += [dataset[i].image for i in range(min(len(dataset), count - len(crops)))]
    else:
        rng = np.random.default_rng(seed)
        domain = get_domain("rgb")
        width, height = codec.input_size
        for _ in range(count):
            labelled = render_crop(domain, rng, width, height)
            crops.append(make_sample(labelled.image, person_instance(labelled), codec).image)
    if not crops:
        raise ValueError("no person to calibrate on")
    return [torch.stack(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
