"""COCO person-keypoint datasets: validated reading (writing: :mod:`metapose.data.coco_writer`).

Follows the COCO 2017 keypoint annotation format (https://cocodataset.org/#format-data): an
``images`` list, an ``annotations`` list with ``keypoints`` as flat ``[x, y, v] * K``, ``bbox`` as
``[x, y, w, h]`` and a segmentation-based ``area``, and a person entry in ``categories``. Every
field is checked on load; the first problem raises one :class:`~metapose.errors.DataError` naming
the file, the field and the annotation id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from metapose.data.coco_images import ImageCheck, check_image_files, check_near_image, locate_images
from metapose.data.label_formats import resolve_file_name, to_coco_payload
from metapose.errors import DataError
from metapose.files import is_integer, is_number, read_json, show
from metapose.skeleton import COCO17, Skeleton


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class Annotation:
    """One person annotation; ``keypoints`` is ``(K, 3)`` float32 in image pixels."""

    id: int
    image_id: int
    bbox: tuple[float, float, float, float]
    keypoints: np.ndarray
    area: float
    iscrowd: bool
    score: float = 1.0

    @property
    def num_keypoints(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())

    @property
    def trainable(self) -> bool:
        """Crowd regions and people with no labelled keypoint are kept for evaluation only."""
        return not self.iscrowd and self.num_keypoints > 0


@dataclass(frozen=True)
class CocoDataset:
    """A validated COCO keypoint dataset: the images, the person annotations and where they live."""

    annotation_file: Path
    image_dir: Path
    images: tuple[CocoImage, ...]
    annotations: tuple[Annotation, ...]
    skeleton: Skeleton = COCO17
    person_category_id: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def image_by_id(self) -> dict[int, CocoImage]:
        return {img.id: img for img in self.images}

    @cached_property
    def annotations_by_image(self) -> dict[int, list[Annotation]]:
        out: dict[int, list[Annotation]] = {img.id: [] for img in self.images}
        for ann in self.annotations:
            out[ann.image_id].append(ann)
        return out

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.image_by_id[image_id].file_name

    def trainable(self) -> list[Annotation]:
        return [a for a in self.annotations if a.trainable]

    def subset(self, image_ids: Iterable[int]) -> CocoDataset:
        """The same dataset restricted to ``image_ids`` (order of the original kept)."""
        keep = set(image_ids)
        unknown = keep - set(self.image_by_id)
        if unknown:
            raise KeyError(f"image ids not in {self.annotation_file}: {sorted(unknown)[:5]}")
        return CocoDataset(
            annotation_file=self.annotation_file,
            image_dir=self.image_dir,
            images=tuple(i for i in self.images if i.id in keep),
            annotations=tuple(a for a in self.annotations if a.image_id in keep),
            skeleton=self.skeleton,
            person_category_id=self.person_category_id,
            extra=self.extra,
        )

    def to_coco_dict(self) -> dict[str, Any]:
        """The dataset as a COCO ground-truth dict (what pycocotools' ``COCO`` reads)."""
        return {
            "images": [
                {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
                for i in self.images
            ],
            "annotations": [
                annotation_to_dict(a, self.person_category_id) for a in self.annotations
            ],
            "categories": [coco_category(self.skeleton, self.person_category_id)],
        }


def annotation_to_dict(ann: Annotation, category_id: int = 1) -> dict[str, Any]:
    return {
        "id": ann.id,
        "image_id": ann.image_id,
        "category_id": category_id,
        "bbox": [float(v) for v in ann.bbox],
        "area": float(ann.area),
        "iscrowd": int(ann.iscrowd),
        "keypoints": [round(float(v), 3) for v in ann.keypoints.reshape(-1)],
        "num_keypoints": ann.num_keypoints,
    }


def coco_category(skeleton: Skeleton = COCO17, category_id: int = 1) -> dict[str, Any]:
    return {
        "supercategory": "person",
        "id": category_id,
        "name": "person",
        "keypoints": list(skeleton.keypoints),
        "skeleton": skeleton.coco_skeleton(),
    }


# ----------------------------------------------------------------------------------- reading


def resolve_annotation_file(path: str | Path) -> Path:
    """A JSON file as given, or the single ``annotations/person_keypoints_*.json`` of a folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted((path / "annotations").glob("person_keypoints_*.json"))
        if len(found) != 1:
            raise DataError(
                path,
                f"expected one annotations/person_keypoints_*.json here, found {len(found)}; "
                "pass the annotation file itself",
            )
        return found[0]
    return path


def _guess_image_dir(annotation_file: Path, first_file: str | None) -> Path:
    """Where COCO-style layouts keep the images: ``../<split>/``, ``images/`` or beside the JSON."""
    candidates = []
    stem = annotation_file.stem
    if stem.startswith("person_keypoints_"):
        candidates.append(annotation_file.parent.parent / stem[len("person_keypoints_") :])
    candidates += [annotation_file.parent / "images", annotation_file.parent]
    for cand in candidates:
        if cand.is_dir() and (first_file is None or resolve_file_name(cand, first_file)):
            return cand
    raise DataError(
        annotation_file,
        f"cannot find the image folder (looked in {', '.join(str(c) for c in candidates)}); "
        "pass the image folder explicitly",
        field="images[].file_name",
    )


def _parse_image(path: Path, index: int, entry: Any) -> CocoImage:
    where = f"images[{index}]"
    if not isinstance(entry, dict):
        raise DataError(path, "must be an object", field=where)
    for key in ("id", "file_name"):
        if key not in entry:
            raise DataError(path, "missing key", field=f"{where}.{key}", image_id=entry.get("id"))
    image_id = entry["id"]
    if not is_integer(image_id):
        raise DataError(path, f"must be an integer, got {show(image_id)}", field=f"{where}.id")
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        raise DataError(
            path, "must be a non-empty string", field=f"{where}.file_name", image_id=image_id
        )
    for key in ("width", "height"):
        if entry.get(key) is None:
            continue  # read from the image file by load_coco
        if not is_integer(entry[key]) or entry[key] <= 0:
            raise DataError(
                path,
                f"must be a positive integer, got {show(entry[key])}",
                field=f"{where}.{key}",
                image_id=image_id,
            )
    return CocoImage(
        image_id, entry["file_name"], entry.get("width") or 0, entry.get("height") or 0
    )


def _parse_annotation(
    path: Path, index: int, entry: Any, num_keypoints: int, image_ids: set[int], require_area: bool
) -> Annotation:
    where = f"annotations[{index}]"
    if not isinstance(entry, dict):
        raise DataError(path, "must be an object", field=where)
    ann_id: Any = entry.get("id")
    required = ["id", "image_id", "bbox", "keypoints"] + (["area"] if require_area else [])
    for key in required:
        if key not in entry:
            raise DataError(path, "missing key", field=f"{where}.{key}", annotation_id=ann_id)
    if not is_integer(ann_id):
        raise DataError(path, f"must be an integer, got {show(ann_id)}", field=f"{where}.id")
    image_id = entry["image_id"]
    if not is_integer(image_id) or image_id not in image_ids:
        raise DataError(
            path, f"no image with id {show(image_id)}", field="image_id", annotation_id=ann_id
        )

    bbox = entry["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        raise DataError(
            path,
            f"must be 4 finite numbers [x, y, w, h], got {show(bbox)}",
            field="bbox",
            annotation_id=ann_id,
        )
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise DataError(
            path,
            f"width and height must be positive, got {show(bbox)}",
            field="bbox",
            annotation_id=ann_id,
        )

    kps = entry["keypoints"]
    if not isinstance(kps, list) or not all(is_number(v) for v in kps):
        raise DataError(
            path, "must be a list of finite numbers", field="keypoints", annotation_id=ann_id
        )
    if len(kps) != 3 * num_keypoints:
        raise DataError(
            path,
            f"has {len(kps)} values, expected {3 * num_keypoints} "
            f"(x, y, v for {num_keypoints} keypoints)",
            field="keypoints",
            annotation_id=ann_id,
        )
    keypoints = np.asarray(kps, dtype=np.float32).reshape(num_keypoints, 3)
    flags = keypoints[:, 2]
    if not np.isin(flags, (0, 1, 2)).all():
        raise DataError(
            path, "visibility flags must be 0, 1 or 2", field="keypoints", annotation_id=ann_id
        )
    keypoints[flags == 0, :2] = 0.0
    # pycocotools trusts num_keypoints (it marks people with 0 as ignored), so it must agree.
    stated = entry.get("num_keypoints")
    if stated is not None and stated != int((flags > 0).sum()):
        raise DataError(
            path,
            f"is {show(stated)} but {int((flags > 0).sum())} keypoints have a flag > 0",
            field="num_keypoints",
            annotation_id=ann_id,
        )

    if "area" in entry:
        area = entry["area"]
        if not is_number(area) or area < 0:
            raise DataError(
                path,
                f"must be a non-negative number, got {show(area)}",
                field="area",
                annotation_id=ann_id,
            )
    else:
        area = bbox[2] * bbox[3]
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1, True, False):
        raise DataError(
            path, f"must be 0 or 1, got {show(iscrowd)}", field="iscrowd", annotation_id=ann_id
        )
    score = entry.get("score", 1.0)
    if not is_number(score):
        raise DataError(
            path, f"must be a number, got {show(score)}", field="score", annotation_id=ann_id
        )
    return Annotation(
        id=int(ann_id),
        image_id=image_id,
        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
        keypoints=keypoints,
        area=float(area),
        iscrowd=bool(iscrowd),
        score=float(score),
    )


def parse_coco(
    payload: Any,
    annotation_file: Path,
    *,
    skeleton: Skeleton = COCO17,
    require_area: bool = True,
    keypoint_map: Mapping[str, str | None] | None = None,
) -> tuple[tuple[CocoImage, ...], tuple[Annotation, ...], int]:
    """Validate a COCO keypoint payload; returns images, person annotations and the category id.

    Other tools' layouts (CVAT, Label Studio) and keypoint names in another order are first
    brought to COCO in ``skeleton``'s order (:func:`metapose.data.label_formats.to_coco_payload`,
    ``keypoint_map`` naming what its synonyms do not know).
    """
    path = annotation_file
    payload = to_coco_payload(payload, path, skeleton, keypoint_map=keypoint_map)
    if not isinstance(payload, dict):
        raise DataError(path, "top level must be a JSON object")
    for key in ("images", "annotations"):
        if key not in payload:
            raise DataError(path, "missing key", field=key)
        if not isinstance(payload[key], list):
            raise DataError(path, "must be a list", field=key)

    person_id = 1
    categories = payload.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            raise DataError(path, "must be a list", field="categories")
        persons = [c for c in categories if isinstance(c, dict) and c.get("name") == "person"]
        if persons:
            person_id = persons[0].get("id", 1)
            if not is_integer(person_id):
                raise DataError(
                    path,
                    f"must be an integer, got {show(person_id)}",
                    field="categories[person].id",
                )
            names = persons[0].get("keypoints")
            if names is not None and not isinstance(names, list):
                raise DataError(
                    path,
                    f"must be a list of keypoint names, got {show(names)}",
                    field="categories[person].keypoints",
                )

    images = tuple(_parse_image(path, i, e) for i, e in enumerate(payload["images"]))
    image_ids = {img.id for img in images}
    if len(image_ids) != len(images):
        raise DataError(path, "image ids repeat", field="images[].id")

    image_by_id = {img.id: img for img in images}
    annotations = []
    seen: set[int] = set()
    for i, entry in enumerate(payload["annotations"]):
        if isinstance(entry, dict) and "category_id" in entry:
            category = entry["category_id"]
            if not is_integer(category):
                # "12", null, 2.5 or true would otherwise silently count (or not) as people.
                raise DataError(
                    path,
                    f"must be an integer category id, got {show(category)}",
                    field=f"annotations[{i}].category_id",
                    annotation_id=show(entry.get("id")),
                )
            if category != person_id:
                continue
        ann = _parse_annotation(path, i, entry, skeleton.num_keypoints, image_ids, require_area)
        if ann.id in seen:
            raise DataError(path, "annotation id repeats", field="id", annotation_id=ann.id)
        seen.add(ann.id)
        image = image_by_id[ann.image_id]
        if image.width and image.height:  # else checked once the size is read from the file
            check_near_image(path, ann, image)
        annotations.append(ann)
    return images, tuple(annotations), person_id


def load_coco(
    annotation_file: str | Path,
    image_dir: str | Path | None = None,
    *,
    skeleton: Skeleton = COCO17,
    check_images: ImageCheck = "exists",
    require_trainable: bool = True,
    keypoint_map: Mapping[str, str | None] | None = None,
) -> CocoDataset:
    """Load and validate a COCO person-keypoint dataset.

    ``annotation_file`` may also be a dataset folder holding one
    ``annotations/person_keypoints_*.json``.
    ``image_dir`` defaults to the COCO layout (``annotations/person_keypoints_val2017.json`` →
    ``val2017/``), then ``images/`` beside the JSON, then the JSON's own folder.
    With ``require_trainable`` a dataset without one labelled, non-crowd person is an error.
    Files of CVAT and Label Studio are read too (:mod:`metapose.data.label_formats`); a
    ``file_name`` with a folder prefix is found under ``image_dir``, and a missing image size
    is read from the image file.
    """
    path = resolve_annotation_file(annotation_file)
    payload = read_json(path)
    images, annotations, person_id = parse_coco(
        payload, path, skeleton=skeleton, keypoint_map=keypoint_map
    )
    if not images:
        raise DataError(path, "the dataset has no images", field="images")
    if image_dir is None:
        image_dir = _guess_image_dir(path, images[0].file_name)
    sized = {img.id for img in images if img.width and img.height}
    images = locate_images(path, Path(image_dir), images)
    image_by_id = {img.id: img for img in images}
    for ann in annotations:
        if ann.image_id not in sized:
            check_near_image(path, ann, image_by_id[ann.image_id])
    dataset = CocoDataset(
        annotation_file=path,
        image_dir=Path(image_dir),
        images=images,
        annotations=annotations,
        skeleton=skeleton,
        person_category_id=person_id,
    )
    if require_trainable and not dataset.trainable():
        raise DataError(
            path, "no person with labelled keypoints (the dataset is empty)", field="annotations"
        )
    check_image_files(dataset, check_images)
    return dataset
