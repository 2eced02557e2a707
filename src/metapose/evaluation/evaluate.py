"""The one entry point that scores a pose estimator: OKS AP/AR (pycocotools) and PCK.

:func:`evaluate` runs an estimator (a PyTorch model or an ONNX model, see
:mod:`metapose.inference.estimators`) over a labelled COCO-format dataset, with ground-truth
boxes or a detections file, and returns an :class:`~metapose.evaluation.coco.EvalResult`.
``metapose evaluate``, ``metapose adapt --eval``, ``metapose train``'s validation and the
experiment all call it. An :class:`EvalSet` holds a test split's crops (ground-truth boxes, no
augmentation) cut once and kept in memory, so the many evaluations of an experiment (every model,
K and seed) cost only the forward passes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metapose.config import PCK_ALPHA, ConfigError
from metapose.data.batches import collate
from metapose.data.boxes import Detection
from metapose.data.coco import CocoDataset
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Sample, TopDownDataset, instances_from_coco
from metapose.data.detections import detection_instances, load_detections
from metapose.data.images import read_rgb
from metapose.data.keypoint_results import make_result, results_to_json
from metapose.data.oks import oks
from metapose.evaluation.coco import EvalResult, evaluate_oks, keypoint_indices
from metapose.evaluation.pck import pck, torso_diameter
from metapose.inference.crop_runner import predict_batches
from metapose.inference.detector import PersonDetector
from metapose.inference.estimators import PoseEstimator
from metapose.inference.pose_runner import flip_test
from metapose.inference.postprocess import PosePrediction, keep_poses, result_entry
from metapose.inference.predict import PredictOptions, predict_instances
from metapose.progress import Progress
from metapose.skeleton import COCO17


@dataclass(frozen=True)
class EvalSet:
    """A target's test split, cropped once (GT boxes) and kept in memory for every evaluation."""

    gt: CocoDataset
    codec: HeatmapCodec
    batches: tuple[Sample, ...]
    keypoints: tuple[str, ...] | None  # score these keypoints only (None: all)
    pck_alpha: float

    @property
    def size(self) -> int:
        return sum(int(b.image.shape[0]) for b in self.batches)


def make_eval_set(
    gt: CocoDataset,
    codec: HeatmapCodec,
    *,
    keypoints: tuple[str, ...] | None = None,
    pck_alpha: float = PCK_ALPHA,
    batch_size: int = 64,
) -> EvalSet:
    """Crop every labelled person of ``gt`` once (ground-truth boxes)."""
    dataset = TopDownDataset(instances_from_coco(gt), codec, targets=False)
    batches = tuple(
        collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        for start in range(0, len(dataset), batch_size)
    )
    return EvalSet(gt, codec, batches, keypoints, pck_alpha)


def evaluate(
    estimator: PoseEstimator,
    data: CocoDataset | EvalSet,
    *,
    boxes: str | Path | Mapping[int, Sequence[Detection]] | None = None,
    keypoints: Sequence[str] | None = None,
    pck_alpha: float = PCK_ALPHA,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
    results_path: str | Path | None = None,
) -> EvalResult:
    """OKS AP/AR of ``estimator`` on ``data`` and, with ground-truth boxes, PCK@``pck_alpha``.

    ``data`` is a COCO-format dataset (its crops cut as they are run) or an :class:`EvalSet`
    (crops cut once; its own keypoints and PCK alpha apply). With ground-truth boxes (the
    default) every labelled, non-crowd person is one crop; with ``boxes`` (a COCO detections
    JSON, its entries matched by ``file_name`` where they name one, or detections by image id,
    see :func:`detect_people`) every kept person box, the poses then rescored and OKS-NMS'd per
    image as SimpleBaseline does (PCK, which needs the person a pose belongs to, is then not
    computed). ``keypoints``: score only this subset (see
    :func:`metapose.evaluation.coco.evaluate_oks`).
    ``results_path``: also write the scored poses as a COCO keypoint results JSON.
    """
    options = options or PredictOptions()
    if isinstance(data, EvalSet):
        if boxes is not None:
            raise ValueError("an EvalSet is cropped at ground-truth boxes; pass the dataset")
        if data.codec != estimator.codec:
            raise ConfigError(
                f"the test crops were cut for input {data.codec.input_size} (heatmaps "
                f"{data.codec.heatmap_size}, udp {data.codec.udp}) but {estimator.source} takes "
                f"{estimator.codec.input_size} (heatmaps {estimator.codec.heatmap_size}, udp "
                f"{estimator.codec.udp}): crop the EvalSet with the estimator's codec "
                "(make_eval_set(gt, estimator.codec)) or pass the dataset"
            )
        gt, pck_alpha = data.gt, data.pck_alpha
        keypoints = data.keypoints if keypoints is None else keypoints
        tick = progress.stage("evaluate", data.size) if progress else None
        predictions = predict_batches(
            estimator.fn,
            data.batches,
            data.codec,
            flip=flip_test(estimator, options),
            skeleton=estimator.skeleton,
            on_batch=tick,
        )
        if progress is not None:
            progress.close_stage()
    else:
        gt = data
        predictions = _predict_people(estimator, gt, boxes, options, progress)
    # The results carry the ground truth's own person category (0 in some tools' files).
    category = gt.person_category_id
    if boxes is None:
        results = [
            make_result(p.image_id, p.keypoints, p.score, category_id=category) for p in predictions
        ]
        score = _pck(predictions, gt, pck_alpha)
        people = _person_oks(predictions, gt, keypoints)
    else:
        results = [
            {**result_entry(k), "category_id": category}
            for k in keep_poses(predictions, True, options.oks_nms)
        ]
        score, people = None, None
    if results_path is not None:
        results_to_json(results_path, results)
    return dataclasses.replace(
        evaluate_oks(gt, results, keypoints=keypoints), pck=score, person_oks=people
    )


def _person_oks(
    predictions: Sequence[PosePrediction], gt: CocoDataset, keypoints: Sequence[str] | None
) -> tuple[tuple[int, float], ...]:
    """Each labelled, non-crowd person's OKS (over ``keypoints``) with the pose predicted in its
    ground-truth box, in the order of ``predictions``."""
    by_ann = {a.id: a for a in gt.annotations if a.trainable}
    index = keypoint_indices(gt.skeleton, keypoints)
    sigmas = gt.skeleton.sigmas_array()[index]
    out = []
    for p in predictions:
        ann = by_ann.get(p.annotation_id)
        if ann is not None:
            value = oks(ann.keypoints[index], p.keypoints[index], ann.area, sigmas)
            out.append((ann.id, float(value)))
    return tuple(out)


def _predict_people(
    estimator: PoseEstimator,
    gt: CocoDataset,
    boxes: str | Path | Mapping[int, Sequence[Detection]] | None,
    options: PredictOptions,
    progress: Progress | None,
) -> list[PosePrediction]:
    codec = estimator.codec
    if boxes is None:
        instances = instances_from_coco(gt)
    else:
        found = (
            boxes
            if isinstance(boxes, Mapping)
            else load_detections(
                boxes,
                score_threshold=options.box_score_threshold,
                image_ids=[i.id for i in gt.images],
                file_names={Path(i.file_name).name: i.id for i in gt.images},
            )
        )
        instances = detection_instances(gt, found, codec.input_size[0] / codec.input_size[1])
    tick = progress.stage("evaluate", len(instances)) if progress else None
    predictions = predict_instances(estimator, instances, options, on_batch=tick)
    if progress is not None:
        progress.close_stage()
    return predictions


def _pck(predictions: Sequence[PosePrediction], gt: CocoDataset, alpha: float) -> float | None:
    """PCK@``alpha`` (torso) of the poses predicted in ground-truth boxes; None without any."""
    by_ann = {a.id: a for a in gt.annotations}
    matched = [(p, by_ann[p.annotation_id]) for p in predictions if p.annotation_id in by_ann]
    if not matched:
        return None
    pred = np.stack([p.keypoints[:, :2] for p, _ in matched])
    labels = np.stack([a.keypoints for _, a in matched])
    return float(pck(pred, labels, torso_diameter(labels, COCO17), alpha).overall)


@dataclass(frozen=True)
class DetectedPeople:
    """A detector's people on every image of a dataset, and the time it took (reading and
    decoding the images included)."""

    detections: dict[int, tuple[Detection, ...]]
    images: int
    seconds: float


def detect_people(
    detector: PersonDetector, gt: CocoDataset, progress: Progress | None = None
) -> DetectedPeople:
    """Run ``detector`` on every image of ``gt``: boxes to score poses from detected people
    (COCO's protocol with a detector, ``evaluate(..., boxes=detect_people(...).detections)``)."""
    started = time.perf_counter()
    tick = progress.stage("detect", len(gt.images)) if progress else None
    found: dict[int, tuple[Detection, ...]] = {}
    for image in gt.images:
        people = detector.detect(read_rgb(gt.image_path(image.id)), image.id)
        if people:
            found[image.id] = people
        if tick is not None:
            tick(1)
    if progress is not None:
        progress.close_stage()
    return DetectedPeople(found, len(gt.images), time.perf_counter() - started)
