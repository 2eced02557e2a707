"""COCO keypoint results files (https://cocodataset.org/#format-results).

One entry a pose: its ``(K, 3)`` image-pixel keypoints flattened, and a score. Written by
prediction, read by evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metapose.errors import DataError
from metapose.files import is_integer, is_number, read_json, show, write_json_atomic
from metapose.skeleton import COCO17

# COCO's category id for people, the default of a keypoint result entry.
PERSON_CATEGORY_ID = 1
# Where errors in in-memory results say they come from.
IN_MEMORY_RESULTS = Path("<results>")


def make_result(
    image_id: int,
    keypoints: np.ndarray,
    score: float,
    category_id: int = PERSON_CATEGORY_ID,
) -> dict[str, Any]:
    """One COCO keypoint result entry from ``(K, 3)`` image-pixel ``(x, y, score)`` keypoints."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3:
        raise ValueError(f"keypoints must be (K, 3), got {keypoints.shape}")
    if not np.isfinite(keypoints).all() or not np.isfinite(score):
        raise ValueError(f"non-finite keypoints or score for image {image_id}")
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "keypoints": [float(v) for v in keypoints.reshape(-1)],
        "score": float(score),
    }


def results_to_json(path: str | Path, results: Sequence[Mapping[str, Any]]) -> None:
    """Write COCO keypoint results (a JSON list) atomically."""
    write_json_atomic(path, [dict(r) for r in results])


def validate_results(
    payload: Any, num_keypoints: int, path: str | Path = IN_MEMORY_RESULTS
) -> list[dict[str, Any]]:
    """Check COCO keypoint results; returns copies of the entries (pycocotools mutates them).

    Each entry needs an integer ``image_id`` and ``category_id``, ``keypoints`` as
    ``3 * num_keypoints`` finite numbers and a finite ``score``; a ``file_name`` is kept.
    """
    if not isinstance(payload, list):
        raise DataError(path, "COCO results must be a JSON list of objects", field="(top level)")
    out = []
    for i, entry in enumerate(payload):
        where = f"[{i}]"
        if not isinstance(entry, dict):
            raise DataError(path, "must be an object", field=where)
        for key in ("image_id", "category_id", "keypoints", "score"):
            if key not in entry:
                raise DataError(path, "missing key", field=f"{where}.{key}")
        image_id = entry["image_id"]
        for key in ("image_id", "category_id"):
            if not is_integer(entry[key]):
                raise DataError(
                    path, f"must be an integer, got {show(entry[key])}", field=f"{where}.{key}"
                )
        kps = entry["keypoints"]
        if not isinstance(kps, list) or not all(is_number(v) for v in kps):
            raise DataError(
                path,
                "must be a list of finite numbers",
                field=f"{where}.keypoints",
                image_id=image_id,
            )
        if len(kps) != 3 * num_keypoints:
            raise DataError(
                path,
                f"has {len(kps)} values, expected {3 * num_keypoints} "
                f"(x, y, score for {num_keypoints} keypoints)",
                field=f"{where}.keypoints",
                image_id=image_id,
            )
        if not is_number(entry["score"]):
            raise DataError(
                path,
                f"must be a finite number, got {show(entry['score'])}",
                field=f"{where}.score",
                image_id=image_id,
            )
        copy = {
            "image_id": image_id,
            "category_id": entry["category_id"],
            "keypoints": [float(v) for v in kps],
            "score": float(entry["score"]),
        }
        if isinstance(entry.get("file_name"), str):  # lets evaluation match by file name
            copy["file_name"] = entry["file_name"]
        out.append(copy)
    return out


def read_keypoint_results(
    path: str | Path, num_keypoints: int = COCO17.num_keypoints
) -> list[dict[str, Any]]:
    """Read and validate a COCO keypoint results JSON (a list of entries, possibly empty)."""
    return validate_results(read_json(path), num_keypoints, path)
