"""Bad input: one clear DataError naming the file, the field (and the id) per case.

Covers the COCO ground-truth reader (:func:`metapose.data.coco.load_coco`), the keypoint results
reader and evaluator (:mod:`metapose.evaluation.coco`) and the detection reader
(:mod:`metapose.data.detections`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metapose.data.coco import load_coco
from metapose.data.detections import load_detections
from metapose.data.images import write_rgb
from metapose.data.keypoint_results import read_keypoint_results
from metapose.errors import DataError
from metapose.evaluation.coco import evaluate_oks
from metapose.skeleton import COCO17

K = 17
IMAGE_SIZE = (8, 6)  # width, height


def person(ann_id: int = 1, image_id: int = 1) -> dict[str, Any]:
    keypoints = np.zeros((K, 3))
    keypoints[5:, :2] = 3.0
    keypoints[5:, 2] = 2
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [1.0, 1.0, 5.0, 4.0],
        "area": 12.0,
        "iscrowd": 0,
        "keypoints": keypoints.reshape(-1).tolist(),
        "num_keypoints": K - 5,
    }


VALID: dict[str, Any] = {
    "images": [{"id": 1, "file_name": "a.png", "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1]}],
    "annotations": [person()],
    "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoints)}],
}


def write_dataset(root: Path, payload: Any) -> Path:
    """A COCO-layout folder: ``annotations/person_keypoints_val.json`` and ``val/a.png``."""
    (root / "val").mkdir(parents=True, exist_ok=True)
    write_rgb(root / "val" / "a.png", np.zeros((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), np.uint8))
    annotation_file = root / "annotations" / "person_keypoints_val.json"
    annotation_file.parent.mkdir(exist_ok=True)
    annotation_file.write_text(json.dumps(payload))
    return annotation_file


def mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    payload = copy.deepcopy(VALID)
    change(payload)
    return payload


def raises_data_error(call: Callable[[], object], *expected: str) -> DataError:
    with pytest.raises(DataError) as info:
        call()
    for text in expected:
        assert text in str(info.value), f"{text!r} not in {str(info.value)!r}"
    return info.value


def test_valid_dataset_loads(tmp_path: Path) -> None:
    dataset = load_coco(write_dataset(tmp_path, VALID), check_images="decode")
    assert len(dataset.annotations) == 1 and dataset.image_dir == tmp_path / "val"


# ------------------------------------------------------------------------------ ground truth


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``payload[a][i][b] = value`` for a dotted path like ``annotations.0.bbox``."""

    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = payload
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = payload
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return change


def _append(key: str, entry: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda payload: payload[key].append(entry)


GT_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    "missing images": (_delete("images"), ("field 'images'", "missing key")),
    "missing annotations": (_delete("annotations"), ("field 'annotations'", "missing key")),
    "annotations not a list": (_set("annotations", {}), ("field 'annotations'", "must be a list")),
    "image without file_name": (_delete("images.0.file_name"), ("images[0].file_name",)),
    "image of zero width": (_set("images.0.width", 0), ("images[0].width", "positive")),
    "repeated image id": (
        _append("images", {"id": 1, "file_name": "b.png", "width": 8, "height": 6}),
        ("image ids repeat",),
    ),
    "annotation without keypoints": (
        _delete("annotations.0.keypoints"),
        ("annotation id 1", "annotations[0].keypoints", "missing key"),
    ),
    "annotation without id": (_delete("annotations.0.id"), ("annotations[0].id", "missing key")),
    "non-integer annotation id": (
        _set("annotations.0.id", "one"),
        ("annotations[0].id", "must be an integer"),
    ),
    "keypoints of wrong length": (
        _set("annotations.0.keypoints", [0.0] * (3 * K - 3)),
        (
            "annotation id 1",
            "field 'keypoints'",
            f"has {3 * K - 3} values, but categories[person].keypoints lists {K} names",
        ),
    ),
    "keypoints not numbers": (
        _set("annotations.0.keypoints.4", "x"),
        ("annotation id 1", "field 'keypoints'", "finite numbers"),
    ),
    "visibility flag out of range": (
        _set("annotations.0.keypoints.17", 3),
        ("annotation id 1", "field 'keypoints'", "0, 1 or 2"),
    ),
    "zero-width box": (
        _set("annotations.0.bbox", [1, 1, 0, 4]),
        ("annotation id 1", "field 'bbox'", "positive"),
    ),
    "negative-height box": (
        _set("annotations.0.bbox", [1, 1, 5, -4]),
        ("annotation id 1", "field 'bbox'", "positive"),
    ),
    "box of three numbers": (
        _set("annotations.0.bbox", [1, 1, 5]),
        ("annotation id 1", "field 'bbox'", "4 finite numbers"),
    ),
    "negative area": (
        _set("annotations.0.area", -1.0),
        ("annotation id 1", "field 'area'", "non-negative"),
    ),
    "iscrowd not a flag": (_set("annotations.0.iscrowd", 2), ("annotation id 1", "'iscrowd'")),
    "unknown image_id": (
        _set("annotations.0.image_id", 99),
        ("annotation id 1", "field 'image_id'", "no image with id 99"),
    ),
    "repeated annotation id": (
        _append("annotations", person(ann_id=1)),
        ("annotation id 1", "annotation id repeats"),
    ),
    "category with wrong keypoint count": (
        _set("categories.0.keypoints", ["nose", "left_eye"]),
        ("annotation id 1", "has 51 values, but categories[person].keypoints lists 2 names"),
    ),
    "unknown keypoint names": (
        _set("categories.0.keypoints", ["a", *COCO17.keypoints[1:]]),
        ("categories[person].keypoints", "not in coco17 nor known synonyms: 'a'", "--keypoint-map"),
    ),
    "no images (empty dataset)": (
        lambda p: p.update(images=[], annotations=[]),
        ("field 'images'", "no images"),
    ),
    "no labelled person": (
        lambda p: (
            _set("annotations.0.keypoints", [0.0] * (3 * K))(p),
            _delete("annotations.0.num_keypoints")(p),
        ),
        ("field 'annotations'", "dataset is empty"),
    ),
    "num_keypoints disagrees with the flags": (
        _set("annotations.0.num_keypoints", 3),
        ("annotation id 1", "field 'num_keypoints'", "keypoints have a flag > 0"),
    ),
    "non-integer person category id": (
        _set("categories.0.id", "person"),
        ("categories[person].id", "must be an integer"),
    ),
}


@pytest.mark.parametrize("case", list(GT_CASES), ids=list(GT_CASES))
def test_ground_truth_field_errors(tmp_path: Path, case: str) -> None:
    change, expected = GT_CASES[case]
    annotation_file = write_dataset(tmp_path, mutated(change))
    raises_data_error(lambda: load_coco(annotation_file), str(annotation_file), *expected)


def test_ground_truth_malformed_json(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, VALID)
    annotation_file.write_text('{"images": [}')
    raises_data_error(
        lambda: load_coco(annotation_file), str(annotation_file), "malformed JSON at line 1"
    )


def test_ground_truth_not_utf8(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, VALID)
    annotation_file.write_bytes(b'{"images": "\xff\xfe"}')
    raises_data_error(lambda: load_coco(annotation_file), str(annotation_file), "UTF-8")


def test_ground_truth_top_level_not_an_object(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, [VALID])
    raises_data_error(lambda: load_coco(annotation_file), "top level must be a JSON object")


def test_ground_truth_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.json"
    raises_data_error(lambda: load_coco(missing), str(missing), "file not found")


def test_ground_truth_folder_without_annotation_file(tmp_path: Path) -> None:
    raises_data_error(lambda: load_coco(tmp_path), str(tmp_path), "person_keypoints_*.json")


def test_missing_image_file(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, VALID)
    (tmp_path / "val" / "b.png").write_bytes((tmp_path / "val" / "a.png").read_bytes())
    (tmp_path / "val" / "a.png").unlink()
    payload = mutated(
        lambda p: p["images"].append({**p["images"][0], "id": 2, "file_name": "b.png"})
    )
    payload["images"].reverse()  # the image folder is found through b.png; a.png is missing
    annotation_file.write_text(json.dumps(payload))
    raises_data_error(
        lambda: load_coco(annotation_file), "image id 1", "field 'file_name'", "a.png"
    )


def test_image_folder_not_found(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, VALID)
    (tmp_path / "val" / "a.png").unlink()
    raises_data_error(
        lambda: load_coco(annotation_file), str(annotation_file), "cannot find the image folder"
    )


def test_corrupt_image_file(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, VALID)
    (tmp_path / "val" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    load_coco(annotation_file, check_images="exists")  # only decoding finds it
    raises_data_error(
        lambda: load_coco(annotation_file, check_images="decode"), "a.png", "cannot decode image"
    )


def test_image_size_disagrees_with_annotation(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, mutated(_set("images.0.width", 9)))
    raises_data_error(
        lambda: load_coco(annotation_file, check_images="decode"),
        "image id 1",
        "field 'width/height'",
        "is 8x6 but the annotation says 9x6",
    )


# ------------------------------------------------------------------------------ results


def result(image_id: int = 1) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": 1, "keypoints": [1.0] * (3 * K), "score": 0.5}


RESULT_CASES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "top level not a list": ({"annotations": []}, ("(top level)", "JSON list")),
    "entry not an object": ([result(), 3], ("field '[1]'", "must be an object")),
    "entry without score": (
        [{k: v for k, v in result().items() if k != "score"}],
        ("field '[0].score'", "missing key"),
    ),
    "entry without category_id": (
        [{k: v for k, v in result().items() if k != "category_id"}],
        ("field '[0].category_id'", "missing key"),
    ),
    "image_id not an integer": (
        [{**result(), "image_id": "1"}],
        ("field '[0].image_id'", "must be an integer"),
    ),
    "keypoints of wrong length": (
        [result(), {**result(), "keypoints": [1.0] * 34}],
        ("image id 1", "field '[1].keypoints'", "has 34 values, expected 51"),
    ),
    "keypoints not numbers": (
        [{**result(), "keypoints": [None] * (3 * K)}],
        ("field '[0].keypoints'", "finite numbers"),
    ),
    "score not a number": (
        [{**result(), "score": "high"}],
        ("field '[0].score'", "finite number"),
    ),
}


@pytest.mark.parametrize("case", list(RESULT_CASES), ids=list(RESULT_CASES))
def test_results_field_errors(tmp_path: Path, case: str) -> None:
    payload, expected = RESULT_CASES[case]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload))
    raises_data_error(lambda: read_keypoint_results(path, K), str(path), *expected)


def test_results_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('[{"image_id": 1,')
    raises_data_error(lambda: read_keypoint_results(path, K), str(path), "malformed JSON")


def test_results_score_nan(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{**result(), "score": float("nan")}]))  # written as NaN
    raises_data_error(lambda: read_keypoint_results(path, K), "field '[0].score'", "finite number")


def test_results_on_unknown_image(tmp_path: Path) -> None:
    gt = write_dataset(tmp_path, VALID)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([result(1), result(5)]))
    raises_data_error(
        lambda: evaluate_oks(gt, path), str(path), "image id 5", "field '[1].image_id'"
    )


def test_results_of_another_category(tmp_path: Path) -> None:
    gt = write_dataset(tmp_path, VALID)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{**result(), "category_id": 2}]))
    raises_data_error(
        lambda: evaluate_oks(gt, path), str(path), "field '[0].category_id'", "person category 1"
    )


def test_in_memory_results_are_validated_too(tmp_path: Path) -> None:
    gt = write_dataset(tmp_path, VALID)
    raises_data_error(
        lambda: evaluate_oks(gt, [{**result(), "keypoints": [1.0] * 3}]),
        "<results>",
        "field '[0].keypoints'",
    )


def test_cli_writes_nothing_on_bad_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metapose.cli import main

    gt = write_dataset(tmp_path, VALID)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([result(), {**result(), "keypoints": [1.0] * 34}]))
    out = tmp_path / "numbers.json"
    argv = ["evaluate", "--gt", str(gt), "--results", str(path), "--json", str(out)]
    assert main(argv) == 2
    assert "field '[1].keypoints'" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------ detections


def detection() -> dict[str, Any]:
    return {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9}


DETECTION_CASES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "top level not a list": ({"detections": []}, ("(top level)", "JSON list")),
    "entry without bbox": (
        [{k: v for k, v in detection().items() if k != "bbox"}],
        ("field '[0].bbox'", "missing key"),
    ),
    "entry without score": (
        [detection(), {k: v for k, v in detection().items() if k != "score"}],
        ("field '[1].score'", "missing key"),
    ),
    "zero-width box": (
        [{**detection(), "bbox": [1, 2, 0, 4]}],
        ("image id 1", "field '[0].bbox'", "positive"),
    ),
    "negative-height box": (
        [{**detection(), "bbox": [1, 2, 3, -4]}],
        ("image id 1", "field '[0].bbox'", "positive"),
    ),
    "box of three numbers": (
        [{**detection(), "bbox": [1, 2, 3]}],
        ("field '[0].bbox'", "4 finite numbers"),
    ),
    "score not a number": (
        [{**detection(), "score": None}],
        ("field '[0].score'", "finite number"),
    ),
    "category_id not an integer": (
        [{**detection(), "category_id": "person"}],
        ("field '[0].category_id'", "must be an integer"),
    ),
}


@pytest.mark.parametrize("case", list(DETECTION_CASES), ids=list(DETECTION_CASES))
def test_detection_field_errors(tmp_path: Path, case: str) -> None:
    payload, expected = DETECTION_CASES[case]
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(payload))
    raises_data_error(lambda: load_detections(path), str(path), *expected)


def test_detections_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "detections.json"
    path.write_text("[{]")
    raises_data_error(lambda: load_detections(path), str(path), "malformed JSON")


def test_detection_errors_are_found_before_any_box_is_kept(tmp_path: Path) -> None:
    """A bad entry after good ones and below the threshold still fails the whole file."""
    path = tmp_path / "detections.json"
    path.write_text(json.dumps([detection(), {**detection(), "bbox": [0, 0, 0, 0], "score": 0.0}]))
    raises_data_error(lambda: load_detections(path, score_threshold=0.5), "field '[1].bbox'")
