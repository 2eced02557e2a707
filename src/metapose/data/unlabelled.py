"""Unlabelled people of a target domain: image files and person boxes, no keypoints.

Semi-supervised adaptation (:mod:`metapose.training.semi`) learns from these without labels.
They come from a folder of images, a text file listing image paths (one a line, relative to the
file), or a COCO JSON whose annotations carry person boxes (keypoints, if any, are ignored).
Without boxes each image is one person in a whole-image box: right for photos cropped around one
person only; a caller may pass boxes of its own instead (a person detector's: ``metapose adapt
--unlabelled`` finds people with the bundled detector unless told otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from metapose.data.dataset import Instance
from metapose.data.images import IMAGE_SUFFIXES, header_size, read_rgb
from metapose.errors import DataError
from metapose.skeleton import COCO17, Skeleton

Box = tuple[float, float, float, float]  # (x, y, w, h) image pixels


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file's header, decoding it only when the header is not read."""
    try:
        size = header_size(path.read_bytes()[: 1 << 16])
    except OSError as err:
        raise DataError(path, f"cannot read image: {err.strerror or err}") from None
    if size is None:
        height, width = read_rgb(path).shape[:2]
        return width, height
    return size


def whole_image_box(path: Path) -> Box:
    width, height = image_size(path)
    return (0.0, 0.0, float(width), float(height))


def main_people(people: Sequence[Instance], share: float) -> list[Instance]:
    """``people`` less those whose box is shorter than ``share`` times the tallest box of the same
    image (``share`` 0 keeps everyone): the small people in the background of a photo, whose crops
    are blurred and whose labels from a teacher are the least reliable. Order is kept."""
    if share <= 0:
        return list(people)
    tallest: dict[str, float] = {}
    for person in people:
        key = str(person.image)
        tallest[key] = max(tallest.get(key, 0.0), float(person.box[3]))
    return [p for p in people if float(p.box[3]) >= share * tallest[str(p.image)]]


def is_coco_file(source: str | Path) -> bool:
    """Whether ``source`` names a COCO JSON (its boxes are the people) rather than images."""
    source = Path(source)
    return source.is_file() and source.suffix.lower() == ".json"


def unlabelled_files(source: str | Path) -> list[Path]:
    """The image files of a folder (sorted) or of a list file (in its order), checked to exist."""
    source = Path(source)
    if not source.exists():
        raise DataError(source, "no such folder, list file or COCO JSON of unlabelled images")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(source, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return files
    lines = [line.strip() for line in source.read_text().splitlines()]
    files = [
        (source.parent / line) if not Path(line).is_absolute() else Path(line)
        for line in lines
        if line and not line.startswith("#")
    ]
    if not files:
        raise DataError(source, "the list names no image file")
    for number, file in enumerate(files, 1):
        if not file.is_file():
            raise DataError(source, f"line {number}: image file not found: {file}")
    return files


def _coco_people(source: Path, image_dir: Path | None) -> list[tuple[Path, Box | None, int]]:
    try:
        data = json.loads(source.read_text())
    except (OSError, ValueError) as err:
        raise DataError(source, f"not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(source, "a COCO file needs an 'images' list", field="images")
    folder = image_dir if image_dir is not None else source.parent
    files: dict[int, Path] = {}
    for entry in data["images"]:
        if not isinstance(entry, Mapping) or "id" not in entry or "file_name" not in entry:
            raise DataError(source, "every image needs 'id' and 'file_name'", field="images")
        files[int(entry["id"])] = folder / str(entry["file_name"])
    boxes: dict[int, list[Box]] = {}
    for ann in data.get("annotations", []):
        if not isinstance(ann, Mapping) or ann.get("iscrowd", 0):
            continue
        image_id = int(ann.get("image_id", -1))
        if image_id not in files:
            raise DataError(
                source,
                "annotation of an image not in 'images'",
                field="image_id",
                annotation_id=ann.get("id"),
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not float(bbox[2]) > 0 < float(bbox[3]):
            raise DataError(
                source,
                "bbox must be [x, y, w, h] with w, h > 0",
                field="bbox",
                annotation_id=ann.get("id"),
            )
        x, y, w, h = (float(v) for v in bbox)
        boxes.setdefault(image_id, []).append((x, y, w, h))
    people: list[tuple[Path, Box | None, int]] = []
    for image_id, path in sorted(files.items()):
        if not path.is_file():
            raise DataError(source, f"image file not found: {path}", image_id=image_id)
        found: list[Box | None] = list(boxes.get(image_id, [])) or [None]
        people += [(path, box, image_id) for box in found]
    return people


def unlabelled_instances(
    source: str | Path,
    *,
    image_dir: str | Path | None = None,
    boxes: Mapping[Path, Sequence[Box]] | None = None,
    limit: int | None = None,
    skeleton: Skeleton = COCO17,
) -> list[Instance]:
    """The people of ``source`` (a folder, a list file or a COCO JSON) as unlabelled instances.

    A COCO file's boxes are used; otherwise ``boxes`` (by image path) when given, where an image
    without boxes has no people, else one whole-image box per image. ``limit``: the first N images
    only. Keypoints are all unknown.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(source, "no such folder, list file or COCO JSON of unlabelled images")
    if is_coco_file(source):
        people = _coco_people(source, None if image_dir is None else Path(image_dir))
    else:
        people = [(p, None, i) for i, p in enumerate(unlabelled_files(source), 1)]
    if limit is not None:
        keep = sorted({image_id for _, _, image_id in people})[:limit]
        allowed = set(keep)
        people = [p for p in people if p[2] in allowed]
    unknown = np.zeros((skeleton.num_keypoints, 3), np.float32)
    out = []
    for number, (path, box, image_id) in enumerate(people):
        if box is not None:
            found = [box]
        elif boxes is not None:
            found = list(boxes.get(path, ()))
        else:
            found = [whole_image_box(path)]
        out += [
            Instance(path, b, unknown, image_id=image_id, annotation_id=-(number + 1))
            for b in found
        ]
    return out
