"""Seeded mutations of a real COCO annotation file and of a results file, for the readers.

Each mutation is written to disk and read the way the commands read it (``load_coco`` for
training and adaptation data, ``evaluate_oks`` of ``read_keypoint_results`` for scoring). A reader
may accept the file (a valid result) or refuse it with a DataError/ConfigError; anything else (a
traceback) is a bug. Used by tests/data/test_fuzz_readers.py and runnable to print the counts:
``python -m tests.fuzz_readers [N]``.
"""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metapose.config import ConfigError
from metapose.data.coco import load_coco
from metapose.data.keypoint_results import read_keypoint_results
from metapose.errors import DataError
from metapose.evaluation.coco import evaluate_oks

# Values a hand-edited or badly exported file holds where a number, a list or a name belongs.
ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    2.5,
    "12",
    "",
    "x" * 5000,
    [],
    {},
    [1, 2],
    2**63,
    -(2**63) - 1,
    10**400,
    float("nan"),
    float("inf"),
    1e308,
    {"id": 1},
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a JSON tree (dict keys and list indices), the root excluded."""
    out = []
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        tree = tree[key]
    return tree


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def mutate(payload: Any, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random mutation of ``payload``: its kind and the bytes of the mutated file."""
    kind = str(rng.choice(["value", "delete", "text", "nest", "truncate", "bytes", "duplicate"]))
    tree = copy.deepcopy(payload)
    paths = _paths(tree)
    path = paths[int(rng.integers(len(paths)))] if paths else ()
    if kind == "value" and path:
        _parent(tree, path)[path[-1]] = copy.deepcopy(ODD_VALUES[rng.integers(len(ODD_VALUES))])
    elif kind == "delete" and path:
        del _parent(tree, path)[path[-1]]
    elif kind == "duplicate" and path and isinstance(_parent(tree, path), list):
        parent = _parent(tree, path)
        parent.append(copy.deepcopy(parent[path[-1]]))
    text = json.dumps(tree)
    if kind == "text":
        # Numbers JSON allows but Python's float/int cannot hold, placed where a number was.
        number = str(rng.choice(["9" * 5000, "1e400", "-1e400", "1" + "0" * 30, "NaN"]))
        digits = [i for i, c in enumerate(text) if c.isdigit() and not text[i - 1].isdigit()]
        if digits:
            at = digits[int(rng.integers(len(digits)))]
            end = at
            while end < len(text) and (text[end].isdigit() or text[end] in ".eE-+"):
                end += 1
            text = text[:at] + number + text[end:]
    elif kind == "nest":
        at = text.index("[") if "[" in text else 0
        text = text[:at] + _nest(int(rng.integers(2000, 100_000))) + "," + text[at + 1 :]
        if not text.startswith("["):
            text = text.replace(",", "", 1)
    data = text.encode()
    if kind == "truncate":
        data = data[: int(rng.integers(len(data)))]
    elif kind == "bytes":
        flips = rng.integers(0, len(data), size=int(rng.integers(1, 8)))
        buf = bytearray(data)
        for i in flips:
            buf[i] = int(rng.integers(256))
        data = bytes(buf)
    return kind, data


def base_files(annotations: Path, images: int = 4) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A small real ground truth (its first ``images`` images) and results made from it."""
    full = json.loads(annotations.read_text())
    kept = full["images"][:images]
    ids = {im["id"] for im in kept}
    gt = {
        **{k: v for k, v in full.items() if k not in ("images", "annotations")},
        "images": kept,
        "annotations": [a for a in full["annotations"] if a["image_id"] in ids],
    }
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 0.9}
        for a in gt["annotations"]
        if a.get("num_keypoints", 0) > 0
    ]
    return gt, results


def run(
    annotations: Path, image_dir: Path, out: Path, n: int, seed: int = 0
) -> tuple[Counter[str], list[str]]:
    """``n`` mutations of each file; returns outcome counts and the tracebacks' descriptions."""
    gt, results = base_files(annotations)
    gt_path = out / "gt.json"
    gt_path.write_text(json.dumps(gt))
    rng = np.random.default_rng(seed)
    counts: Counter[str] = Counter()
    crashes: list[str] = []

    def attempt(label: str, read: Callable[[], Any]) -> None:  # kind: the mutation just made
        try:
            read()
            counts[f"{label}: valid"] += 1
        except (DataError, ConfigError) as err:
            counts[f"{label}: clean error"] += 1
            if "\n" in str(err) or len(str(err)) > 2000:
                crashes.append(f"{label}: multi-line or huge message: {str(err)[:200]!r}")
        except Exception as err:  # noqa: BLE001 - the point is to catch what should not happen
            counts[f"{label}: CRASH"] += 1
            crashes.append(f"{label} {kind}: {type(err).__name__}: {str(err)[:200]}")

    for i in range(n):
        kind, data = mutate(gt, rng)
        path = out / f"gt_{i}.json"
        path.write_bytes(data)
        attempt("annotations", lambda p=path: load_coco(p, image_dir, require_trainable=False))
        path.unlink()
        kind, data = mutate(results, rng)
        path = out / f"results_{i}.json"
        path.write_bytes(data)
        attempt("results", lambda p=path: evaluate_oks(gt_path, read_keypoint_results(p)))
        path.unlink()
    return counts, crashes


if __name__ == "__main__":
    import tempfile

    from tests.conftest import COCO_TINY

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        counts, crashes = run(
            COCO_TINY / "annotations" / "person_keypoints_val2017.json",
            COCO_TINY / "val2017",
            Path(tmp),
            n,
        )
    for key in sorted(counts):
        print(f"{key}: {counts[key]}")
    for line in crashes:
        print(line)
