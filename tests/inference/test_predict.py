"""Prediction on image files: planning boxes, batching, results JSON, overlays, ONNX, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.config import ModelConfig
from metapose.data.boxes import Detection
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import TopDownDataset, instances_from_coco
from metapose.data.images import read_rgb, write_rgb
from metapose.data.keypoint_results import read_keypoint_results
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.evaluation.coco import evaluate_oks, how_results_match
from metapose.evaluation.evaluate import evaluate
from metapose.inference.estimators import (
    PoseEstimator,
    estimator_from_checkpoint,
    estimator_from_onnx,
)
from metapose.inference.export import export_onnx
from metapose.inference.predict import (
    PredictOptions,
    plan_prediction,
    predict_folder,
    predict_images,
)
from metapose.models import TopDownModel
from metapose.models.checkpoint import save_checkpoint
from metapose.skeleton import COCO17
from tests.conftest import COCO_TINY, TINY_MODEL, require

# float32: compared against onnxruntime (float32) to 1e-4, which bfloat16 autocast is not.
CPU = DeviceOptions(torch.device("cpu"), amp=False)
VAL_JSON = "annotations/person_keypoints_val2017.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = TopDownModel(TINY_MODEL)
    with torch.no_grad():  # heatmaps of order one, so keypoint scores differ between crops
        torch.nn.init.normal_(model.final_layer.weight, std=0.5)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model)


def write_images(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        image = rng.integers(0, 256, (60 + 10 * i, 50 + 5 * i, 3), dtype=np.uint8)
        write_rgb(folder / name, image)
        paths.append(folder / name)
    return paths


# ------------------------------------------------------------------------------ planning


def test_whole_image_plans_one_box_per_image_and_numbers_images(tmp_path: Path) -> None:
    write_images(tmp_path / "a", ["beach.jpg", "Street.PNG"])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    plan = plan_prediction([tmp_path / "a"], whole_image=True)
    assert [(j.path.name, j.image_id, j.boxes) for j in plan.jobs] == [
        ("Street.PNG", 1, None),
        ("beach.jpg", 2, None),
    ]
    coco_named = write_images(tmp_path / "b", ["000000000042.png", "000000000007.png"])
    plan = plan_prediction(coco_named, whole_image=True)
    assert [j.image_id for j in plan.jobs] == [42, 7]


def test_planning_refuses_bad_input_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either boxes"):
        plan_prediction([tmp_path], whole_image=True, boxes=tmp_path / "b.json")
    with pytest.raises(DataError, match="no such image"):
        plan_prediction([tmp_path / "absent.jpg"], whole_image=True)
    with pytest.raises(DataError, match="no image files"):
        plan_prediction([tmp_path], whole_image=True)
    images = write_images(tmp_path / "img", ["holiday.png"])
    detections = tmp_path / "dets.json"
    detections.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1}])
    )
    with pytest.raises(DataError, match=r"dets\.json.*not \(distinct\) COCO ids"):
        plan_prediction(images, boxes=detections)


def test_boxes_come_from_detections_by_coco_id(tmp_path: Path) -> None:
    images = write_images(tmp_path, ["000000000005.png", "000000000009.png"])
    entries = [
        {"image_id": 5, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9},
        {"image_id": 5, "category_id": 1, "bbox": [3, 3, 10, 10], "score": 0.1},
        {"image_id": 5, "category_id": 2, "bbox": [3, 3, 10, 10], "score": 0.9},
        {"image_id": 77, "category_id": 1, "bbox": [3, 3, 10, 10], "score": 0.9},
    ]
    (tmp_path / "dets.json").write_text(json.dumps(entries))
    plan = plan_prediction(images, boxes=tmp_path / "dets.json", box_score_threshold=0.5)
    assert plan.from_detections
    assert plan.jobs[0].boxes == ((1.0, 2.0, 30.0, 40.0),) and plan.jobs[0].scores == (0.9,)
    assert plan.jobs[1].boxes == ()


def test_boxes_come_from_annotations_by_file_name(tmp_path: Path) -> None:
    images = write_images(tmp_path / "pics", ["me.png", "you.png"])
    gt = {
        "images": [
            {"id": 11, "file_name": "you.png", "width": 55, "height": 70},
            {"id": 12, "file_name": "me.png", "width": 50, "height": 60},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 1, "bbox": [5, 5, 20, 30], "area": 600,
             "iscrowd": 0, "keypoints": [0] * 51, "num_keypoints": 0},
            {"id": 2, "image_id": 11, "category_id": 1, "bbox": [0, 0, 50, 60], "area": 900,
             "iscrowd": 1, "keypoints": [0] * 51, "num_keypoints": 0},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    plan = plan_prediction(images, boxes=tmp_path / "gt.json")
    assert not plan.from_detections
    assert [(j.image_id, j.boxes) for j in plan.jobs] == [(12, ()), (11, ((5.0, 5.0, 20.0, 30.0),))]
    stranger = write_images(tmp_path / "more", ["stranger.png"])
    with pytest.raises(DataError, match=r"gt\.json.*no image named stranger\.png"):
        plan_prediction(stranger, boxes=tmp_path / "gt.json")


# ------------------------------------------------------------------------------ running


def test_predict_writes_results_and_overlays_independent_of_batching(
    tmp_path: Path, checkpoint: Path
) -> None:
    images = write_images(
        tmp_path / "in", ["000000000001.png", "000000000002.png", "000000000003.png"]
    )
    entries = [
        {"image_id": i, "category_id": 1, "bbox": [2.0 * i, 3, 30, 40], "score": 0.5 + 0.1 * i}
        for i in (1, 2, 2, 3)
    ]
    entries[2]["bbox"] = [20, 10, 25, 35]
    (tmp_path / "dets.json").write_text(json.dumps(entries))
    plan = plan_prediction(images, boxes=tmp_path / "dets.json")
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    outputs = []
    for batch_size in (1, 3, 32):
        out = tmp_path / f"b{batch_size}"
        summary = predict_images(
            plan, estimator, out / "results.json", overlay_dir=out / "overlays",
            options=PredictOptions(batch_size=batch_size, oks_nms=False),
        )  # fmt: skip
        assert summary.images == 3 and summary.people == 4
        outputs.append(read_keypoint_results(summary.results_path))
        for image, overlay in zip(images, summary.overlays, strict=True):
            assert overlay == out / "overlays" / f"{image.stem}.jpg"  # JPEG by default
            assert read_rgb(overlay).shape == read_rgb(image).shape
    assert [r["image_id"] for r in outputs[0]] == [1, 2, 2, 3]
    raw = json.loads((tmp_path / "b1" / "results.json").read_text())
    assert raw[0]["file_name"] == "000000000001.png"
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other, strict=True):
            np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-4)
            assert a["score"] == pytest.approx(b["score"], abs=1e-6)


def test_duplicate_detections_are_suppressed_by_oks_nms(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path, ["000000000004.png"])
    box = {"image_id": 4, "category_id": 1, "bbox": [5, 5, 30, 40]}
    (tmp_path / "dets.json").write_text(json.dumps([{**box, "score": 0.9}, {**box, "score": 0.8}]))
    plan = plan_prediction(images, boxes=tmp_path / "dets.json")
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    kept = predict_images(plan, estimator, tmp_path / "nms.json")
    both = predict_images(
        plan, estimator, tmp_path / "all.json", options=PredictOptions(oks_nms=False)
    )
    assert (kept.people, both.people) == (1, 2)


def test_overlays_draw_the_people_found_and_nothing_else(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path / "in", ["000000000001.png", "000000000002.png"], seed=2)
    box = {"image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 40], "score": 0.9}
    (tmp_path / "dets.json").write_text(json.dumps([box]))
    plan = plan_prediction(images, boxes=tmp_path / "dets.json")
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    summary = predict_images(
        plan, estimator, tmp_path / "r.json", overlay_dir=tmp_path / "overlays",
        options=PredictOptions(draw_threshold=0.0, overlay_format="png"),
    )  # fmt: skip
    with_person, without = (read_rgb(p) for p in summary.overlays)
    changed = np.any(with_person != read_rgb(images[0]), axis=2)
    assert changed.sum() > 100
    # Drawn within the padded crop of the box (x from 1 to 39 here) and the joints' radius.
    assert np.nonzero(changed)[1].max() < 45 < with_person.shape[1]
    assert np.array_equal(without, read_rgb(images[1]))


def test_onnx_and_pytorch_estimators_agree(tmp_path: Path, checkpoint: Path) -> None:
    from metapose.models.checkpoint import load_checkpoint

    onnx_path = export_onnx(load_checkpoint(checkpoint).model, tmp_path / "tiny.onnx")
    images = write_images(tmp_path / "in", ["a.png", "b.png"], seed=4)
    plan = plan_prediction(images, whole_image=True)
    torch_run = predict_images(
        plan, estimator_from_checkpoint(checkpoint, CPU), tmp_path / "t.json"
    )
    onnx_run = predict_images(plan, estimator_from_onnx(onnx_path), tmp_path / "o.json")
    for a, b in zip(
        read_keypoint_results(torch_run.results_path),
        read_keypoint_results(onnx_run.results_path),
        strict=True,
    ):
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-3)


# ------------------------------------------------------------------------------ scoring


class Oracle:
    """A heatmap function that answers each crop with its ground-truth heatmaps, in order."""

    def __init__(self, dataset: TopDownDataset) -> None:
        self.targets = np.stack([dataset[i].heatmaps.numpy() for i in range(len(dataset))])
        self.served = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self.targets[self.served : self.served + images.shape[0]]
        self.served += images.shape[0]
        return out


def test_scoring_a_perfect_estimator_on_real_coco_gives_near_perfect_ap() -> None:
    gt = load_coco(require(COCO_TINY) / VAL_JSON)
    codec = HeatmapCodec.for_model(ModelConfig())
    oracle = Oracle(TopDownDataset(instances_from_coco(gt), codec))
    estimator = PoseEstimator(oracle, codec, COCO17, Path("oracle"))
    score = evaluate(estimator, gt, options=PredictOptions(flip=False, batch_size=16))
    assert oracle.served == len(oracle.targets)
    assert score.ap > 0.95
    assert score.pck is not None and score.pck > 0.95
    # The same heatmaps given to the wrong people must score far worse.
    oracle.served, oracle.targets = 0, oracle.targets[::-1].copy()
    assert evaluate(estimator, gt, options=PredictOptions(flip=False)).ap < 0.5


def test_scoring_from_detections_rescores_and_suppresses(tmp_path: Path, checkpoint: Path) -> None:
    gt = load_coco(require(COCO_TINY) / VAL_JSON)
    people = [a for a in gt.annotations if a.trainable][:3]
    entries = [
        {"image_id": a.image_id, "category_id": 1, "bbox": list(a.bbox), "score": s}
        for a in people
        for s in (0.9, 0.8)  # every box detected twice
    ]
    (tmp_path / "dets.json").write_text(json.dumps(entries))
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    saved = tmp_path / "results.json"
    score = evaluate(estimator, gt, boxes=tmp_path / "dets.json", results_path=saved)
    assert len(read_keypoint_results(saved)) == len(people)
    assert 0.0 <= score.ap <= 1.0
    assert score.pck is None  # a pose in a detected box belongs to no particular person


# ------------------------------------------------------------------------------ detector, folders


class FixedDetector:
    """A stand-in detector that finds the same two people in every picture."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray, image_id: int = 0) -> tuple[Detection, ...]:
        self.calls += 1
        return (
            Detection(image_id, (2.0, 3.0, 20.0, 30.0), 0.9),
            Detection(image_id, (25.0, 5.0, 20.0, 40.0), 0.8),
        )


def test_without_boxes_the_detector_finds_the_people(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path / "in", ["holiday.png", "beach.png"])
    plan = plan_prediction(images)
    assert plan.detect and [j.image_id for j in plan.jobs] == [1, 2]
    with pytest.raises(ValueError, match="pass one"):
        predict_images(plan, estimator_from_checkpoint(checkpoint, CPU), tmp_path / "r.json")
    detector = FixedDetector()
    summary = predict_images(
        plan,
        estimator_from_checkpoint(checkpoint, CPU),
        tmp_path / "r.json",
        detector=detector,  # type: ignore[arg-type]
        options=PredictOptions(oks_nms=False),
    )
    assert detector.calls == 2 and summary.people == 4
    raw = json.loads((tmp_path / "r.json").read_text())
    assert [(r["image_id"], r["file_name"]) for r in raw] == [(1, "holiday.png")] * 2 + [
        (2, "beach.png")
    ] * 2


def test_detections_naming_files_are_matched_by_file_name(tmp_path: Path) -> None:
    images = write_images(tmp_path / "in", ["zebra.png", "apple.png"])
    entries = [
        {"image_id": 900, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9,
         "file_name": "zebra.png"},
    ]  # fmt: skip
    (tmp_path / "d.json").write_text(json.dumps(entries))
    plan = plan_prediction(images, boxes=tmp_path / "d.json")
    assert [(j.file_name, j.image_id, j.boxes) for j in plan.jobs] == [
        ("zebra.png", 1, ((1.0, 2.0, 30.0, 40.0),)),
        ("apple.png", 2, ()),
    ]
    entries[0]["file_name"] = "pear.png"
    (tmp_path / "d.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match=r"d\.json: field '\[0\]\.file_name': no image named"):
        plan_prediction(images, boxes=tmp_path / "d.json")


def test_recursive_folders_name_results_and_overlays_by_their_path(
    tmp_path: Path, checkpoint: Path
) -> None:
    write_images(tmp_path / "in" / "day1", ["a.png"])
    write_images(tmp_path / "in" / "day2", ["a.png"])
    with pytest.raises(DataError, match="no image files.*--recursive"):
        plan_prediction([tmp_path / "in"], whole_image=True)
    plan = plan_prediction([tmp_path / "in"], whole_image=True, recursive=True)
    assert [j.file_name for j in plan.jobs] == ["day1/a.png", "day2/a.png"]
    summary = predict_folder(plan, estimator_from_checkpoint(checkpoint, CPU), tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in summary.overlays] == [
        "overlays/day1/a.jpg",
        "overlays/day2/a.jpg",
    ]
    assert all(p.is_file() for p in summary.overlays)


def test_predict_folder_replaces_an_old_output_whole_or_not_at_all(
    tmp_path: Path, checkpoint: Path
) -> None:
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    out = tmp_path / "out"
    first = write_images(tmp_path / "one", ["first.png"])
    predict_folder(plan_prediction(first, whole_image=True), estimator, out)
    second = write_images(tmp_path / "two", ["second.png"])
    predict_folder(plan_prediction(second, whole_image=True), estimator, out)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["second.jpg"]  # no mixing
    before = (out / "results.json").read_bytes()
    (tmp_path / "two" / "broken.png").write_text("not an image")
    with pytest.raises(DataError, match="cannot decode"):
        predict_folder(
            plan_prediction([tmp_path / "two"], whole_image=True),
            estimator,
            out,
            options=PredictOptions(strict=True),
        )
    assert (out / "results.json").read_bytes() == before  # the old output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "out", "two"]  # no staging left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a predict output.*thesis.tex"):
        predict_folder(plan_prediction(second, whole_image=True), estimator, tmp_path / "mine")


def test_results_are_scored_by_file_name_when_their_ids_differ(tmp_path: Path) -> None:
    gt_path = require(COCO_TINY) / VAL_JSON
    gt = load_coco(gt_path)
    names = {i.id: i.file_name for i in gt.images}
    results = [
        {"image_id": a.image_id, "category_id": 1, "score": 1.0,
         "keypoints": a.keypoints.reshape(-1).tolist(), "file_name": names[a.image_id]}
        for a in gt.annotations if a.trainable
    ]  # fmt: skip
    by_id = evaluate_oks(gt_path, results)
    numbered = {image_id: n for n, image_id in enumerate(sorted(names), start=1)}
    renumbered = [{**r, "image_id": numbered[r["image_id"]]} for r in results]
    (tmp_path / "r.json").write_text(json.dumps(renumbered))
    assert how_results_match(gt_path, tmp_path / "r.json") == "file name"
    assert evaluate_oks(gt_path, tmp_path / "r.json").ap == by_id.ap > 0.9
    no_names = [{k: v for k, v in r.items() if k != "file_name"} for r in renumbered]
    with pytest.raises(DataError, match="no image with this id"):  # ids alone: other images
        evaluate_oks(gt_path, no_names)


class InterruptingDetector(FixedDetector):
    """Ctrl-C while the second picture is searched."""

    def detect(self, image: np.ndarray, image_id: int = 0) -> tuple[Detection, ...]:
        if self.calls == 1:
            raise KeyboardInterrupt
        return super().detect(image, image_id)


def test_an_interrupted_run_leaves_the_old_output_and_no_staging(
    tmp_path: Path, checkpoint: Path
) -> None:
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    images = write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    predict_folder(plan_prediction(images[:1], whole_image=True), estimator, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        predict_folder(
            plan_prediction(images),
            estimator,
            out,
            detector=InterruptingDetector(),  # type: ignore[arg-type]
            options=PredictOptions(batch_size=1),
        )
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_the_estimator_decides_the_flip_test_and_options_override_it() -> None:
    """A checkpoint's ``codec.flip_test`` is its estimator's default; ``PredictOptions.flip``
    overrides it: every caller (evaluate, predict, adapt, validation) reads the same decision."""
    from metapose.config import CodecConfig, replace
    from metapose.inference.estimators import torch_estimator

    gt = load_coco(require(COCO_TINY) / VAL_JSON)
    codec = HeatmapCodec.for_model(ModelConfig())
    oracle = Oracle(TopDownDataset(instances_from_coco(gt), codec))
    people = len(oracle.targets)
    calls: list[int] = []

    def counted(images: np.ndarray) -> np.ndarray:
        calls.append(images.shape[0])
        return oracle.targets[: images.shape[0]]

    for flip, options, served in (
        (True, None, 2 * people),
        (False, None, people),
        (False, PredictOptions(flip=True), 2 * people),
        (True, PredictOptions(flip=False), people),
    ):
        calls.clear()
        evaluate(PoseEstimator(counted, codec, COCO17, Path("counted"), flip), gt, options=options)
        assert sum(calls) == served, (flip, options)
    no_flip = replace(ModelConfig(), codec=CodecConfig(flip_test=False))
    options = DeviceOptions(torch.device("cpu"))
    assert not torch_estimator(TopDownModel(no_flip), options).flip
    assert torch_estimator(TopDownModel(ModelConfig()), options).flip


def test_evaluate_refuses_test_crops_cut_for_another_input_size() -> None:
    from metapose.config import ConfigError
    from metapose.evaluation.evaluate import make_eval_set

    gt = load_coco(require(COCO_TINY) / VAL_JSON)
    small = HeatmapCodec.for_sizes((96, 128), (24, 32))
    test = make_eval_set(gt.subset([gt.images[0].id]), small)
    big = HeatmapCodec.for_model(ModelConfig())
    assert big.input_size != small.input_size
    estimator = PoseEstimator(lambda images: images, big, COCO17, Path("other.onnx"))
    with pytest.raises(ConfigError, match=r"other\.onnx takes \(.*make_eval_set"):
        evaluate(estimator, test)
