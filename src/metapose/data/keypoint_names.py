"""Keypoint names of label files mapped onto a skeleton's: a small table of synonyms
(``left_shoulder`` / ``l_shoulder`` / ``LShoulder`` / ``shoulder_l``) and a user's map for the rest.

Labelling tools export their own keypoint names and order; the columns of a file are read by
their names, never by their position (:mod:`metapose.data.label_formats` applies the order).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metapose.errors import DataError
from metapose.files import read_json, show
from metapose.skeleton import Skeleton

log = logging.getLogger(__name__)

# Side words and body-part words of keypoint names as labelling tools and datasets spell them.
_SIDES = {"left": "left", "l": "left", "lft": "left", "right": "right", "r": "right", "rt": "right"}
_PARTS = {
    "shoulder": "shoulder",
    "shldr": "shoulder",
    "sho": "shoulder",
    "elbow": "elbow",
    "elb": "elbow",
    "wrist": "wrist",
    "wri": "wrist",
    "hip": "hip",
    "knee": "knee",
    "kne": "knee",
    "ankle": "ankle",
    "ank": "ankle",
    "eye": "eye",
    "ear": "ear",
    "nose": "nose",
}


def canonical_name(name: str) -> str:
    """``name`` as ``left_shoulder`` / ``nose`` where the synonym table knows it, else lowercased
    with ``_`` between words."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name.strip())
    words = [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]
    side = None
    if len(words) >= 2 and words[0] in _SIDES:
        side, words = _SIDES[words[0]], words[1:]
    elif len(words) >= 2 and words[-1] in _SIDES:
        side, words = _SIDES[words[-1]], words[:-1]
    part = _PARTS.get("_".join(words), "_".join(words))
    return part if side is None else f"{side}_{part}"


def load_keypoint_map(path: str | Path) -> dict[str, str | None]:
    """A ``--keypoint-map`` JSON object: a file's keypoint name -> a skeleton name (null: drop)."""
    payload = read_json(path)
    if not isinstance(payload, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in payload.items()
    ):
        raise DataError(
            path, 'must be a JSON object of names, e.g. {"LSho": "left_shoulder", "tail": null}'
        )
    return dict(payload)


def keypoint_order(
    names: Sequence[Any],
    skeleton: Skeleton,
    path: Path,
    *,
    keypoint_map: Mapping[str, str | None] | None = None,
    where: str = "categories[person].keypoints",
) -> list[int | None]:
    """For each name of a file, the skeleton index it is (None: dropped by the map).

    Unknown names raise one :class:`DataError` listing them; skeleton keypoints the file does not
    label are logged (they read as unlabelled).
    """
    user = dict(keypoint_map or {})
    by_canonical = {canonical_name(k): i for i, k in enumerate(skeleton.keypoints)}
    order: list[int | None] = []
    unknown = []
    for name in names:
        if not isinstance(name, str):
            raise DataError(path, f"keypoint names must be strings, got {show(name)}", field=where)
        if name in user:
            target = user[name]
            if target is None:
                order.append(None)
                continue
            if target not in skeleton.keypoints:
                raise DataError(
                    path,
                    f"the keypoint map sends {name!r} to {target!r}, which is not a "
                    f"{skeleton.name} keypoint ({', '.join(skeleton.keypoints)})",
                    field=where,
                )
            order.append(skeleton.keypoints.index(target))
            continue
        index = by_canonical.get(canonical_name(name))
        if index is None:
            unknown.append(name)
        order.append(index)
    if unknown:
        raise DataError(
            path,
            f"keypoint names not in {skeleton.name} nor known synonyms: "
            f"{', '.join(repr(n) for n in unknown[:8])}"
            f"{' ...' if len(unknown) > 8 else ''}; give --keypoint-map FILE, a JSON object "
            'such as {"%s": "left_shoulder"} (null drops a keypoint)' % unknown[0],
            field=where,
        )
    used = [i for i in order if i is not None]
    repeated = sorted({skeleton.keypoints[i] for i in used if used.count(i) > 1})
    if repeated:
        raise DataError(
            path, f"several names map to the same keypoint: {', '.join(repeated)}", field=where
        )
    missing = [k for i, k in enumerate(skeleton.keypoints) if i not in used]
    if missing:
        log.warning("%s labels no %s: read as unlabelled", path, ", ".join(missing))
    return order
