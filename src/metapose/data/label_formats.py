"""Label files made by other tools, brought to metapose's COCO keypoint layout before validation.

- Keypoint *names*: a file's ``categories[].keypoints`` are mapped onto the skeleton by name
  (:mod:`metapose.data.keypoint_names`); coordinates move with their names.
- CVAT's "COCO Keypoints 1.0" export: a COCO file whose keypoint category has any name and id.
- Label Studio's COCO export: one annotation per point, the point's label its category (ids from
  0); the points of one image are one person.
- Label Studio's JSON export: tasks whose ``keypointlabels`` results hold percentages of the
  image; points belong to the rectangle named by their ``parentID``, else to the task's only
  rectangle, else to one person per task.
- A missing ``bbox`` is derived from the segmentation polygons or the labelled keypoints, a
  missing ``area`` from the polygons, else the box (its width times its height).

:func:`to_coco_payload` returns a plain COCO keypoint dict in the skeleton's order, which
:func:`metapose.data.coco.parse_coco` then validates as any other file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metapose.data.keypoint_names import keypoint_order
from metapose.errors import DataError
from metapose.files import is_number, show
from metapose.skeleton import Skeleton

# A box made from keypoints alone grows by this fraction of its size on each side: keypoints sit
# inside the body (joint centres), a labelled box around its outline.
KEYPOINT_BOX_MARGIN = 0.1
# Label Studio prefixes uploaded files with 8 hex digits and a dash ("3f2a1b9c-frame_001.jpg").
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def _polygons(segmentation: Any) -> list[np.ndarray]:
    if not isinstance(segmentation, list):
        return []  # RLE or absent
    out = []
    for poly in segmentation:
        if isinstance(poly, list) and len(poly) >= 6 and all(is_number(v) for v in poly):
            out.append(np.asarray(poly, np.float64).reshape(-1, 2))
    return out


def derive_box(entry: Mapping[str, Any]) -> list[float] | None:
    """``[x, y, w, h]`` around the segmentation polygons, else around the labelled keypoints
    (grown by :data:`KEYPOINT_BOX_MARGIN`); None when neither gives a box."""
    points = _polygons(entry.get("segmentation"))
    margin = 0.0
    if points:
        xy = np.concatenate(points)
    else:
        kps = entry.get("keypoints")
        if not isinstance(kps, list) or len(kps) % 3 or not all(is_number(v) for v in kps):
            return None
        arr = np.asarray(kps, np.float64).reshape(-1, 3)
        xy = arr[arr[:, 2] > 0, :2]
        margin = KEYPOINT_BOX_MARGIN
    if len(xy) == 0:
        return None
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    size = np.maximum(hi - lo, 1.0)
    lo = lo - margin * size
    size = size * (1 + 2 * margin)
    return [float(lo[0]), float(lo[1]), float(size[0]), float(size[1])]


def polygon_area(segmentation: Any) -> float | None:
    """The area of the segmentation polygons (shoelace), None for RLE or none."""
    polys = _polygons(segmentation)
    if not polys:
        return None
    total = 0.0
    for p in polys:
        x, y = p[:, 0], p[:, 1]
        total += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return total


def _complete(entry: Any) -> Any:
    """An annotation with ``bbox`` and ``area`` derived where absent (COCO's own rules)."""
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    if entry.get("bbox") in (None, []):
        box = derive_box(entry)
        if box is not None:
            entry["bbox"] = box
    if entry.get("area") is None:
        area = polygon_area(entry.get("segmentation"))
        if area is not None and area > 0:
            entry["area"] = area
        elif isinstance(entry.get("bbox"), list) and len(entry["bbox"]) == 4:
            box = entry["bbox"]
            if all(is_number(v) for v in box):
                entry["area"] = float(box[2]) * float(box[3])
    return entry


def _keypoint_category(categories: list[Any], path: Path) -> dict[str, Any] | None:
    """The category that holds people: the one listing several keypoints, preferring "person"."""
    with_points = [
        c
        for c in categories
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and len(c["keypoints"]) > 1
    ]
    persons = [c for c in categories if isinstance(c, dict) and c.get("name") == "person"]
    if len(with_points) > 1:
        named = [c for c in with_points if c.get("name") == "person"]
        if len(named) != 1:
            raise DataError(
                path,
                f"{len(with_points)} categories list keypoints "
                f"({', '.join(show(c.get('name')) for c in with_points)}); keep one",
                field="categories",
            )
        return named[0]
    if with_points:
        return with_points[0]
    return persons[0] if persons else None


def to_coco_payload(
    payload: Any,
    path: Path,
    skeleton: Skeleton,
    *,
    keypoint_map: Mapping[str, str | None] | None = None,
) -> Any:
    """``payload`` (any supported layout) as a COCO keypoint dict in ``skeleton``'s order."""
    if isinstance(payload, list) and all(isinstance(t, dict) and "data" in t for t in payload):
        return _from_label_studio_json(payload, path, skeleton, keypoint_map)
    if not isinstance(payload, dict):
        return payload  # the validator names what is wrong
    categories = payload.get("categories")
    categories = categories if isinstance(categories, list) else []
    person = _keypoint_category(categories, path)
    if person is None and _is_label_studio_coco(categories):
        return _from_label_studio_coco(payload, path, skeleton, keypoint_map)
    if person is None or not isinstance(person.get("keypoints"), list):
        if isinstance(payload.get("annotations"), list):  # plain COCO: boxes and areas only
            return {**payload, "annotations": [_complete(a) for a in payload["annotations"]]}
        return payload
    order = keypoint_order(person["keypoints"], skeleton, path, keypoint_map=keypoint_map)
    person_id = person.get("id")
    annotations = payload.get("annotations")
    if isinstance(annotations, list):
        annotations = [
            _in_order(_complete(a), order, skeleton.num_keypoints, path)
            if isinstance(a, dict) and a.get("category_id", person_id) == person_id
            else a
            for a in annotations
        ]
    category = {**person, "name": "person", "keypoints": list(skeleton.keypoints)}
    others = [c for c in categories if c is not person]
    out = {**payload, "categories": [category, *others]}
    if isinstance(annotations, list):
        out["annotations"] = annotations
    return out


def _in_order(
    entry: dict[str, Any], order: Sequence[int | None], num_keypoints: int, path: Path
) -> Any:
    """An annotation's flat ``[x, y, v] * len(order)`` keypoints in the skeleton's order
    (unlabelled where the file has none); what is not a list passes through for the validator."""
    flat = entry.get("keypoints")
    if not isinstance(flat, list):
        return entry
    if len(flat) != 3 * len(order):
        raise DataError(
            path,
            f"has {len(flat)} values, but categories[person].keypoints lists {len(order)} "
            f"names ({3 * len(order)} values: x, y, v each)",
            field="keypoints",
            annotation_id=show(entry.get("id")),
        )
    out: list[Any] = [0, 0, 0] * num_keypoints
    for source, target in enumerate(order):
        if target is not None:
            out[3 * target : 3 * target + 3] = flat[3 * source : 3 * source + 3]
    entry = {**entry, "keypoints": out}
    if None in order and "num_keypoints" in entry:  # dropped names no longer count
        entry["num_keypoints"] = sum(1 for v in out[2::3] if is_number(v) and v > 0)
    return entry


# ------------------------------------------------------------------------------ Label Studio


def _is_label_studio_coco(cats: list[Any]) -> bool:
    """Categories of one keypoint each (named as it) and annotations of one point each."""
    singles = [
        c
        for c in cats
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and len(c["keypoints"]) == 1
    ]
    return len(singles) >= 2


def _person_annotation(
    ann_id: int,
    image_id: int,
    points: Mapping[int, tuple[float, float]],
    box: list[float] | None,
    num_keypoints: int,
    path: Path,
) -> dict[str, Any]:
    flat: list[float] = [0.0] * (3 * num_keypoints)
    for index, (x, y) in points.items():
        flat[3 * index : 3 * index + 3] = [x, y, 2.0]  # the tools record no visibility
    entry: dict[str, Any] = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": flat,
        "iscrowd": 0,
    }
    if box is not None:
        entry["bbox"] = box
    return _complete(entry)


def _add_point(
    points: dict[int, tuple[float, float]],
    index: int,
    xy: tuple[float, float],
    skeleton: Skeleton,
    path: Path,
    image_id: Any,
) -> None:
    if index in points:
        raise DataError(
            path,
            f"two {skeleton.keypoints[index]!r} points for one person: Label Studio's file does "
            "not say which person each point belongs to; draw a person rectangle around each "
            "person and export Label Studio JSON (points inside a rectangle are its person)",
            image_id=image_id,
        )
    points[index] = xy


def _from_label_studio_coco(
    payload: dict[str, Any],
    path: Path,
    skeleton: Skeleton,
    keypoint_map: Mapping[str, str | None] | None,
) -> dict[str, Any]:
    """Label Studio's COCO export: the points of one image (one annotation each) -> one person;
    an image's only box (an annotation without keypoints) is that person's box."""
    point_cats = [
        c
        for c in payload["categories"]
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and len(c["keypoints"]) == 1
    ]
    order = keypoint_order(
        [c["keypoints"][0] for c in point_cats],
        skeleton,
        path,
        keypoint_map=keypoint_map,
        where="categories[].keypoints",
    )
    index_of = {c.get("id"): i for c, i in zip(point_cats, order, strict=True)}
    points: dict[Any, dict[int, tuple[float, float]]] = {}
    boxes: dict[Any, list[list[float]]] = {}
    annotations = payload.get("annotations")
    if not isinstance(annotations, list):
        return payload
    for i, a in enumerate(annotations):
        if not isinstance(a, dict):
            raise DataError(path, "must be an object", field=f"annotations[{i}]")
        image_id = a.get("image_id")
        kps = a.get("keypoints")
        if a.get("category_id") in index_of and isinstance(kps, list) and len(kps) >= 2:
            index = index_of[a["category_id"]]
            if not all(is_number(v) for v in kps[:2]):
                raise DataError(
                    path,
                    f"must be numbers, got {show(kps)}",
                    field="keypoints",
                    annotation_id=show(a.get("id")),
                )
            if index is not None:
                per_image = points.setdefault(image_id, {})
                _add_point(
                    per_image, index, (float(kps[0]), float(kps[1])), skeleton, path, image_id
                )
        elif isinstance(a.get("bbox"), list) and not kps:
            boxes.setdefault(image_id, []).append(a["bbox"])
    people = []
    for n, (image_id, found) in enumerate(points.items(), start=1):
        box = boxes.get(image_id, [])
        people.append(
            _person_annotation(
                n, image_id, found, box[0] if len(box) == 1 else None, skeleton.num_keypoints, path
            )
        )
    category = {"id": 1, "name": "person", "keypoints": list(skeleton.keypoints)}
    return {**payload, "annotations": people, "categories": [category]}


def _task_image(task: dict[str, Any], index: int, path: Path) -> dict[str, Any]:
    data = task.get("data")
    image = data.get("image") if isinstance(data, dict) else None
    if not isinstance(image, str) or not image:
        raise DataError(path, "no image path (data.image)", field=f"[{index}].data.image")
    task_id = task.get("id", index + 1)
    entry: dict[str, Any] = {"id": task_id, "file_name": image}
    return entry


def _from_label_studio_json(
    tasks: list[Any],
    path: Path,
    skeleton: Skeleton,
    keypoint_map: Mapping[str, str | None] | None,
) -> dict[str, Any]:
    """Label Studio's JSON export: one image a task, its first kept annotation's results.

    ``keypointlabels`` and ``rectanglelabels`` values are percentages of the image
    (``original_width`` / ``original_height``). A point belongs to the rectangle its
    ``parentID`` names, else to the task's only rectangle, else (no rectangle) to the task's one
    person.
    """
    images: list[dict[str, Any]] = []
    parsed: list[tuple[Any, list[dict[str, Any]]]] = []
    names: list[str] = []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise DataError(path, "must be a Label Studio task object", field=f"[{i}]")
        image = _task_image(task, i, path)
        kept = [
            a
            for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        results = kept[0].get("result", []) if kept else []
        if not isinstance(results, list):
            raise DataError(path, "must be a list", field=f"[{i}].annotations[0].result")
        for r in results:
            if isinstance(r, dict) and "original_width" in r and "width" not in image:
                image["width"], image["height"] = r["original_width"], r.get("original_height")
            labels = (r.get("value") or {}).get("keypointlabels") if isinstance(r, dict) else None
            if labels:
                names.extend(n for n in labels if n not in names)
        images.append(image)
        parsed.append((image["id"], [r for r in results if isinstance(r, dict)]))
    order = dict(
        zip(
            names,
            keypoint_order(
                names, skeleton, path, keypoint_map=keypoint_map, where="keypointlabels"
            ),
            strict=True,
        )
    )
    people: list[dict[str, Any]] = []
    for image, (image_id, results) in zip(images, parsed, strict=True):
        width, height = image.get("width"), image.get("height")
        rects = {r.get("id"): r for r in results if r.get("type") == "rectanglelabels"}
        groups: dict[Any, dict[int, tuple[float, float]]] = {}
        for r in results:
            if r.get("type") != "keypointlabels":
                continue
            value = r.get("value") or {}
            if not (is_number(width) and is_number(height)) or not all(
                is_number(value.get(k)) for k in ("x", "y")
            ):
                raise DataError(
                    path,
                    "a keypoint needs value.x, value.y and original_width/original_height",
                    image_id=image_id,
                    field="result",
                )
            owner = r.get("parentID")
            if owner not in rects:
                if len(rects) > 1:
                    raise DataError(
                        path,
                        f"point {show(r.get('id'))} lies in none of the {len(rects)} person "
                        "rectangles (no parentID): draw points inside their person's rectangle",
                        image_id=image_id,
                    )
                owner = next(iter(rects), None)
            index = order[value["keypointlabels"][0]]
            if index is not None:
                xy = (value["x"] / 100 * width, value["y"] / 100 * height)
                _add_point(groups.setdefault(owner, {}), index, xy, skeleton, path, image_id)
        for owner, found in groups.items():
            box = None
            if owner in rects:
                v = rects[owner].get("value") or {}
                if all(is_number(v.get(k)) for k in ("x", "y", "width", "height")):
                    box = [
                        v["x"] / 100 * width,
                        v["y"] / 100 * height,
                        v["width"] / 100 * width,
                        v["height"] / 100 * height,
                    ]
            people.append(
                _person_annotation(
                    len(people) + 1, image_id, found, box, skeleton.num_keypoints, path
                )
            )
    category = {"id": 1, "name": "person", "keypoints": list(skeleton.keypoints)}
    return {"images": images, "annotations": people, "categories": [category]}


def resolve_file_name(image_dir: Path, file_name: str) -> str | None:
    """``file_name`` as found under ``image_dir``: as given, without its leading folders
    (``images/x.jpg``, ``/data/upload/1/x.jpg``), or without Label Studio's upload prefix;
    None when none exists."""
    parts = Path(file_name.replace("\\", "/")).parts
    candidates = [file_name] + ["/".join(parts[i:]) for i in range(1, len(parts))]
    base = parts[-1] if parts else file_name
    if _UPLOAD_PREFIX.match(base):
        candidates.append(_UPLOAD_PREFIX.sub("", base))
    for cand in candidates:
        try:
            if cand and (image_dir / cand).is_file():
                return cand
        except OSError:
            continue
    return None
