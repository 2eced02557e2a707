"""The person detector: YOLOX decoding and NMS, the bundled model on real photos, other layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from metapose.cli import main
from metapose.data.images import read_rgb, write_rgb
from metapose.errors import DataError
from metapose.inference.detector import (
    BUNDLED_DETECTOR,
    DetectorOptions,
    PersonDetector,
    decode,
    grid_cells,
    letterbox,
    nms,
    people_in_files,
)
from tests.conftest import COCO_MINI, require

SIZE = (64, 64)  # (W, H): 8x8 + 4x4 + 2x2 = 84 cells
CLASSES = 2


def raw_output(cells: dict[int, tuple[float, float, float, float, float, float]]) -> np.ndarray:
    """A ``(84, 5 + CLASSES)`` output with the given rows ``(x, y, log w, log h, obj, person)``;
    every other row scores 0."""
    out = np.zeros((grid_cells(SIZE)[0].shape[0], 5 + CLASSES), np.float32)
    for row, values in cells.items():
        out[row, :6] = values
    return out


def test_decoding_places_boxes_on_the_grid_and_divides_by_the_ratio() -> None:
    cells, strides = grid_cells(SIZE)
    assert cells.shape == (84, 2) and strides[0, 0] == 8 and strides[-1, 0] == 32
    assert tuple(cells[8 * 8 + 5]) == (1.0, 1.0)  # stride 16, row 1, column 1
    # Cell (column 2, row 3) of stride 8: centre ((0.5 + 2) * 8, (0.5 + 3) * 8) = (20, 28),
    # size exp(log 2) * 8 = 16 by exp(log 4) * 8 = 32; the image was scaled by 0.5.
    out = raw_output({3 * 8 + 2: (0.5, 0.5, np.log(2), np.log(4), 0.9, 0.8)})
    (found,) = decode(out, SIZE, 0.5, (200, 200), DetectorOptions(), image_id=7)
    assert found.image_id == 7 and found.score == pytest.approx(0.72)
    np.testing.assert_allclose(found.bbox, (24.0, 24.0, 32.0, 64.0), atol=1e-4)


def test_threshold_nms_min_size_and_max_people() -> None:
    out = raw_output(
        {
            10: (0.5, 0.5, np.log(2), np.log(3), 0.9, 0.9),  # a person
            11: (0.0, 0.5, np.log(2), np.log(3), 0.8, 0.9),  # the same person, 4 px on (IoU 0.6)
            40: (0.5, 0.5, np.log(2), np.log(3), 0.9, 0.2),  # scores 0.18
            64: (0.5, 0.5, np.log(0.2), np.log(3), 0.9, 0.9),  # 3.2 px wide
            70: (0.5, 0.5, np.log(1), np.log(1), 0.7, 0.9),  # another person
        }
    )
    options = DetectorOptions()
    found = decode(out, SIZE, 1.0, SIZE, options)
    assert [round(d.score, 2) for d in found] == [0.81, 0.63]
    assert len(decode(out, SIZE, 1.0, SIZE, DetectorOptions(nms_iou=0.9))) == 3
    assert len(decode(out, SIZE, 1.0, SIZE, DetectorOptions(score_threshold=0.1))) == 3
    assert len(decode(out, SIZE, 1.0, SIZE, DetectorOptions(min_box_size=0))) == 3
    assert len(decode(out, SIZE, 1.0, SIZE, DetectorOptions(max_people=1))) == 1
    with pytest.raises(ValueError, match="max_people"):
        DetectorOptions(max_people=0)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float64)
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.7).tolist() == [1, 0, 2]


def test_letterbox_scales_the_longer_side_and_pads_bottom_right_with_grey() -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :, 0] = 255  # red
    batch, ratio = letterbox(image, (80, 80))
    assert ratio == 2.0 and batch.shape == (1, 3, 80, 80)
    assert batch[0, 2, 0, 0] == 255 and batch[0, 0, 0, 0] == 0  # BGR: red is the last channel
    assert (batch[0, :, 40:, :] == 114).all()


def test_the_bundled_detector_finds_nobody_in_a_blank_picture() -> None:
    assert BUNDLED_DETECTOR.is_file()  # package data, always present
    detector = PersonDetector(threads=1)
    assert detector.size == (416, 416)
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == ()


def test_the_bundled_detector_finds_the_two_people_of_a_coco_photo() -> None:
    folder = require(COCO_MINI)
    gt = json.loads((folder / "annotations" / "person_keypoints_val2017.json").read_text())
    people = [a["bbox"] for a in gt["annotations"] if a["image_id"] == 214753 and not a["iscrowd"]]
    found = PersonDetector(threads=1).detect(read_rgb(folder / "val2017" / "000000214753.jpg"))
    assert len(found) == len(people) == 2

    def iou(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
        w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
        h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
        inter = max(w, 0) * max(h, 0)
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    for box in people:
        assert max(iou(box, d.bbox) for d in found) > 0.6


def test_a_detector_of_another_layout_is_one_clear_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output"])],
        "not-yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(DataError, match=r"other\.onnx: expected a YOLOX-layout detector"):
        PersonDetector(path)
    with pytest.raises(DataError, match="onnxruntime cannot load"):
        (tmp_path / "junk.onnx").write_text("junk")
        PersonDetector(tmp_path / "junk.onnx")


def test_detect_command_writes_coco_detections_naming_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    write_rgb(tmp_path / "in" / "blank.png", np.full((60, 80, 3), 90, np.uint8))
    assert main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "d.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "d.json").read_text()) == []
    assert "0 people on 1 images" in capsys.readouterr().out


def test_the_detector_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import metapose.inference.detector\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_detect_scores_detected_people_beside_gt_boxes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from metapose.models import TopDownModel
    from metapose.models.checkpoint import save_checkpoint
    from tests.conftest import COCO_TINY, TINY_MODEL

    coco = require(COCO_TINY)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", TopDownModel(TINY_MODEL))
    full = json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    labelled = sorted({a["image_id"] for a in full["annotations"] if a["num_keypoints"] > 0})[:3]
    subset = {
        **full,
        "images": [i for i in full["images"] if i["id"] in labelled],
        "annotations": [a for a in full["annotations"] if a["image_id"] in labelled],
    }
    (tmp_path / "gt.json").write_text(json.dumps(subset))  # three photos keep the test short
    argv = ["evaluate", "--gt", str(tmp_path / "gt.json")]
    argv += ["--images", str(coco / "val2017"), "--checkpoint", str(checkpoint), "--detect"]
    assert main([*argv, "--quiet", "--no-flip", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "from detector yolox_nano_416x416.onnx boxes beside ground-truth boxes" in printed
    assert "detected boxes |" in printed and "ground-truth boxes |" in printed
    assert "time per image: detector" in printed


def test_detect_then_predict_with_its_boxes_on_photos_not_named_by_coco_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from metapose.models import TopDownModel
    from metapose.models.checkpoint import save_checkpoint
    from tests.conftest import TINY_MODEL

    photo = require(COCO_MINI) / "val2017" / "000000214753.jpg"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "beach ride.jpg").write_bytes(photo.read_bytes())
    detections = tmp_path / "det.json"
    assert main(["detect", str(tmp_path / "in"), "--out", str(detections), "--quiet"]) == 0
    entries = json.loads(detections.read_text())
    assert [e["file_name"] for e in entries] == ["beach ride.jpg"] * 2
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", TopDownModel(TINY_MODEL))
    argv = ["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--no-nms"]
    argv += ["--boxes", str(detections), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*argv, "--quiet"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["file_name"] for r in results] == ["beach ride.jpg"] * 2


def test_the_bundled_detector_is_the_published_file() -> None:
    """The YOLOX-Nano release as published (sha256 of its ONNX file), tracked by git."""
    import hashlib

    from metapose.inference.detector import BUNDLED_DETECTOR

    digest = hashlib.sha256(BUNDLED_DETECTOR.read_bytes()).hexdigest()
    assert digest == "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


def test_people_in_files_stops_once_enough_people_are_found(tmp_path: Path) -> None:
    photo = require(COCO_MINI) / "val2017" / "000000214753.jpg"  # two people
    blank = tmp_path / "blank.png"
    write_rgb(blank, np.full((240, 320, 3), 128, np.uint8))
    detector = PersonDetector(threads=1)
    every = people_in_files(detector, [blank, photo])
    assert [len(every[f]) for f in (blank, photo)] == [0, 2]
    read: list[int] = []
    never = tmp_path / "never.jpg"  # not an image: reading it would raise
    some = people_in_files(detector, [blank, photo, never], enough=1, on_image=read.append)
    assert list(some) == [blank, photo] and len(read) == 2  # one image with somebody: enough
    with pytest.raises(DataError, match="never.jpg"):  # two people, but in one image
        people_in_files(detector, [blank, photo, never], enough=2)
