"""Person boxes from a detector.

Reads a COCO detection-results JSON (https://cocodataset.org/#format-results: a list of
``{image_id, category_id, bbox, score}``), keeps the person boxes scoring at least a threshold
and turns them into top-down instances. What happens to the poses found in them (SimpleBaseline's
rescoring and OKS-NMS) is :mod:`metapose.inference.postprocess`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from metapose.data.boxes import Detection
from metapose.data.coco import CocoDataset
from metapose.data.crops import box_to_center_scale
from metapose.data.dataset import Instance
from metapose.data.images import MAX_COORDINATE
from metapose.errors import DataError
from metapose.files import is_integer, is_number, read_json, show

log = logging.getLogger(__name__)

# COCO's person category, the only one a pose estimator uses.
PERSON_CATEGORY_ID = 1
# SimpleBaseline's ``TEST.IMAGE_THRE``: boxes scoring below it are dropped (0 keeps them all).
BOX_SCORE_THRESHOLD = 0.0
# SimpleBaseline's ``TEST.IN_VIS_THRE``: keypoints scoring above it enter the instance score.


def _parse_detection(path: Path, index: int, entry: Any) -> tuple[int, Detection]:
    where = f"[{index}]"
    if not isinstance(entry, dict):
        raise DataError(path, "must be an object", field=where)
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in entry:
            raise DataError(path, "missing key", field=f"{where}.{key}")
    image_id = entry["image_id"]
    for key in ("image_id", "category_id"):
        if not is_integer(entry[key]):
            raise DataError(
                path, f"must be an integer, got {show(entry[key])}", field=f"{where}.{key}"
            )
    bbox = entry["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        raise DataError(
            path,
            f"must be 4 finite numbers [x, y, w, h], got {show(bbox)}",
            field=f"{where}.bbox",
            image_id=image_id,
        )
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise DataError(
            path,
            f"width and height must be positive, got {show(bbox)}",
            field=f"{where}.bbox",
            image_id=image_id,
        )
    if max(abs(v) for v in bbox) > MAX_COORDINATE:
        raise DataError(
            path,
            f"coordinates beyond {MAX_COORDINATE} pixels cannot be in an image, got {show(bbox)}",
            field=f"{where}.bbox",
            image_id=image_id,
        )
    score = entry["score"]
    if not is_number(score):
        raise DataError(
            path,
            f"must be a finite number, got {show(score)}",
            field=f"{where}.score",
            image_id=image_id,
        )
    box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    return entry["category_id"], Detection(image_id, box, float(score))


def load_detections(
    path: str | Path,
    *,
    score_threshold: float = BOX_SCORE_THRESHOLD,
    category_id: int = PERSON_CATEGORY_ID,
    image_ids: Sequence[int] | None = None,
    file_names: Mapping[str, int] | None = None,
) -> dict[int, tuple[Detection, ...]]:
    """Person boxes of a COCO detection-results JSON, by image id, in file order.

    Every entry is validated (a bad one raises :class:`~metapose.errors.DataError` naming the file,
    the entry's index and the field) before any is kept; boxes of other categories and boxes
    scoring below ``score_threshold`` are dropped. With ``file_names`` (image file name -> id)
    an entry that names its image (``file_name``, as ``metapose detect`` writes) gets that
    image's id, whatever its ``image_id`` says. With ``image_ids`` (the ground truth's images)
    a box on an unknown image is an error. Images without a kept box are absent from the result.
    """
    path = Path(path)
    payload = read_json(path)
    if not isinstance(payload, list):
        raise DataError(
            path, "detection results must be a JSON list of objects", field="(top level)"
        )
    known = None if image_ids is None else set(image_ids)
    out: dict[int, list[Detection]] = {}
    other_category = low_score = 0
    for index, entry in enumerate(payload):
        category, detection = _parse_detection(path, index, entry)
        named = entry.get("file_name")
        if file_names is not None and isinstance(named, str):
            if Path(named).name not in file_names:
                raise DataError(
                    path, f"no image named {named!r} here", field=f"[{index}].file_name"
                )
            detection = replace(detection, image_id=file_names[Path(named).name])
        if known is not None and detection.image_id not in known:
            raise DataError(
                path,
                "no image with this id in the ground truth",
                field=f"[{index}].image_id",
                image_id=detection.image_id,
            )
        if category != category_id:
            other_category += 1
        elif detection.score < score_threshold:
            low_score += 1
        else:
            out.setdefault(detection.image_id, []).append(detection)
    kept = sum(len(v) for v in out.values())
    log.info(
        "%s: kept %d person boxes on %d images (%d of other categories, %d below score %g)",
        path,
        kept,
        len(out),
        other_category,
        low_score,
        score_threshold,
    )
    return {image_id: tuple(boxes) for image_id, boxes in out.items()}


def detection_instances(
    dataset: CocoDataset,
    detections: Mapping[int, Sequence[Detection]],
    aspect_ratio: float,
) -> list[Instance]:
    """One unlabelled top-down instance per detected box, in the dataset's image order.

    ``aspect_ratio`` is the model input's width / height. The instance's ``area`` is that of
    the padded crop box, as SimpleBaseline's results use it for OKS-NMS; ``annotation_id`` is
    the detection's 1-based rank in this list (detections are not annotations).
    """
    unknown = set(detections) - set(dataset.image_by_id)
    if unknown:
        raise DataError(
            dataset.annotation_file,
            f"detections on images this dataset does not hold: {sorted(unknown)[:5]}",
            field="images[].id",
        )
    out: list[Instance] = []
    for image in dataset.images:
        for detection in detections.get(image.id, ()):
            out.append(
                box_instance(
                    dataset.image_path(image.id),
                    detection.bbox,
                    detection.score,
                    image_id=image.id,
                    annotation_id=len(out) + 1,
                    aspect_ratio=aspect_ratio,
                    num_keypoints=dataset.skeleton.num_keypoints,
                )
            )
    return out


def box_instance(
    image: Path | np.ndarray,
    box: tuple[float, float, float, float],
    score: float,
    *,
    image_id: int,
    annotation_id: int,
    aspect_ratio: float,
    num_keypoints: int,
) -> Instance:
    """An unlabelled top-down instance for a person box that is not an annotation (a detection,
    the whole image). Its ``area`` is the padded crop box's, as SimpleBaseline's OKS-NMS uses it."""
    _, scale = box_to_center_scale(box, aspect_ratio)
    return Instance(
        image=image,
        box=box,
        keypoints=np.zeros((num_keypoints, 3), dtype=np.float32),
        image_id=image_id,
        annotation_id=annotation_id,
        area=float(scale[0] * scale[1]),
        score=score,
    )
