"""Writing COCO person-keypoint datasets: a streaming writer for rendered or converted images and
their people, with the annotation file written atomically at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metapose.data.coco import Annotation, CocoDataset, CocoImage, annotation_to_dict, coco_category
from metapose.data.images import read_rgb, write_rgb
from metapose.data.records import LabelledImage, Person
from metapose.files import (
    remove_temporary,
    replace_folder,
    temporary_folder,
    write_json_atomic,
)
from metapose.skeleton import COCO17, Skeleton


def person_to_annotation(person: Person, ann_id: int, image_id: int) -> Annotation:
    keypoints = person.keypoints.astype(np.float32).copy()
    keypoints[keypoints[:, 2] == 0, :2] = 0.0
    return Annotation(
        id=ann_id,
        image_id=image_id,
        bbox=tuple(float(v) for v in person.bbox),  # type: ignore[arg-type]
        keypoints=keypoints,
        area=float(person.area),
        iscrowd=person.iscrowd,
    )


class CocoWriter:
    """Writes a COCO-layout dataset into ``root`` atomically.

    Layout: ``root/annotations/person_keypoints_<split>.json`` and ``root/<split>/<file>``, which
    :func:`load_coco` reads back unchanged. Everything goes to a staging folder first and is moved
    into place only when the ``with`` block ends without error.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        skeleton: Skeleton = COCO17,
        info: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.skeleton = skeleton
        self.info = dict(info or {})
        self.overwrite = overwrite
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._stage: Path | None = None

    @property
    def annotation_file(self) -> Path:
        return self.root / "annotations" / f"person_keypoints_{self.split}.json"

    def __enter__(self) -> CocoWriter:
        if self.annotation_file.exists() and not self.overwrite:
            raise FileExistsError(
                f"{self.annotation_file} exists; choose another folder or overwrite"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._stage = temporary_folder(self.root / f"staging-{self.split}", "staging")
        try:
            (self._stage / self.split).mkdir()
        except BaseException:
            remove_temporary(self._stage)
            raise
        return self

    def add(
        self, labelled: LabelledImage, file_name: str | None = None, *, image_id: int | None = None
    ) -> int:
        """Store one image and its people; returns the image id."""
        if self._stage is None:
            raise RuntimeError("CocoWriter.add outside its `with` block")
        image_id = len(self._images) + 1 if image_id is None else image_id
        file_name = file_name or f"{image_id:012d}.png"
        write_rgb(self._stage / self.split / file_name, labelled.image)
        self._images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": labelled.width,
                "height": labelled.height,
            }
        )
        for person in labelled.people:
            ann = person_to_annotation(person, len(self._annotations) + 1, image_id)
            self._annotations.append(annotation_to_dict(ann))
        return image_id

    def payload(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "images": self._images,
            "annotations": self._annotations,
            "categories": [coco_category(self.skeleton)],
        }

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        stage, self._stage = self._stage, None
        assert stage is not None
        try:
            if exc_type is not None:
                return
            write_json_atomic(stage / "annotations" / self.annotation_file.name, self.payload())
            replace_folder(stage / self.split, self.root / self.split)
            self.annotation_file.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / "annotations" / self.annotation_file.name, self.annotation_file)
        finally:
            remove_temporary(stage)


def iter_labelled(dataset: CocoDataset) -> Iterator[tuple[CocoImage, LabelledImage]]:
    """Each image of ``dataset`` read from disk with its people (crowd regions included)."""
    for img in dataset.images:
        people = tuple(
            Person(keypoints=a.keypoints, bbox=a.bbox, area=a.area, iscrowd=a.iscrowd)
            for a in dataset.annotations_by_image[img.id]
        )
        yield img, LabelledImage(read_rgb(dataset.image_path(img.id)), people)


def write_coco_payload(
    path: str | Path,
    images: Sequence[CocoImage],
    annotations: Sequence[Annotation],
    skeleton: Skeleton = COCO17,
    extra_fields: Mapping[int, Mapping[str, Any]] | None = None,
) -> None:
    """Write a ground-truth JSON for existing image files (importers use this)."""
    extra_fields = extra_fields or {}
    payload = {
        "images": [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in images
        ],
        "annotations": [
            {**annotation_to_dict(a), **extra_fields.get(a.id, {})} for a in annotations
        ],
        "categories": [coco_category(skeleton)],
    }
    write_json_atomic(path, payload)
