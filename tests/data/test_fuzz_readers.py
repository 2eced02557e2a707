"""The COCO and results readers never crash and never silently drop data (seeded fuzzing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metapose.data.coco import load_coco
from metapose.errors import DataError
from metapose.evaluation.coco import evaluate_oks
from tests.conftest import COCO_TINY, require
from tests.fuzz_readers import base_files, run

MUTATIONS = 300


def _files() -> tuple[Path, Path]:
    coco = require(COCO_TINY)
    return coco / "annotations" / "person_keypoints_val2017.json", coco / "val2017"


def test_three_hundred_seeded_mutations_end_cleanly(tmp_path: Path) -> None:
    annotations, images = _files()
    counts, crashes = run(annotations, images, tmp_path, MUTATIONS, seed=0)
    assert crashes == []
    assert sum(counts.values()) == 2 * MUTATIONS
    # Both outcomes occur: the mutations are neither all harmless nor all fatal.
    for reader in ("annotations", "results"):
        assert counts[f"{reader}: valid"] > 0 and counts[f"{reader}: clean error"] > 0


def _set(tree: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node: Any = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("images", 0, "id"), 2**63, "images[0].id': must be an integer"),
        (("annotations", 0, "id"), 2**63, "annotations[0].id': must be an integer"),
        (("annotations", 0, "category_id"), "12", "must be an integer category id, got '12'"),
        (("annotations", 0, "category_id"), None, "must be an integer category id, got None"),
        (("annotations", 0, "category_id"), 2.5, "must be an integer category id, got 2.5"),
        (("annotations", 0, "category_id"), True, "must be an integer category id, got True"),
        (("annotations", 0, "bbox", 0), 10**400, "must be 4 finite numbers"),
        (("categories", 0, "keypoints"), 7, "must be a list of keypoint names, got 7"),
        (("images", 0, "file_name"), "x" * 5000, "image file not found"),
    ],
)
def test_cases_the_fuzzer_found(
    path: tuple[Any, ...], value: Any, message: str, tmp_path: Path
) -> None:
    annotations, images = _files()
    gt, _ = base_files(annotations)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_set(gt, path, value)))
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_coco(bad, images)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"images": [{"id": ' + "9" * 5000 + "}]}", "unreadable JSON: Exceeds the limit"),
    ],
)
def test_unparseable_json_is_one_line(text: str, message: str, tmp_path: Path) -> None:
    annotations, _ = _files()
    bad = tmp_path / "results.json"
    bad.write_text(text)
    with pytest.raises(DataError, match=message):
        load_coco(bad)
    with pytest.raises(DataError, match=message) as err:
        evaluate_oks(annotations, bad)
    assert str(err.value).startswith(str(bad))  # the results file is named, not <results>
