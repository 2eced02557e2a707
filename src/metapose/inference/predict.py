"""Top-down pose prediction on image files: person boxes in, COCO results and overlays out.

The library side of ``metapose predict`` and ``metapose evaluate --onnx``. A pose estimator is a
heatmap function (a PyTorch checkpoint or an ONNX model on onnxruntime) with its decode
geometry; both run through :func:`metapose.inference.topdown.predict` (SimpleBaseline crop, flip
test, quarter-offset decode), so a model and its export give the same keypoints. Person boxes come
from a COCO detections JSON (SimpleBaseline's rescoring and OKS-NMS are then applied, see
:mod:`metapose.data.detections`), from a COCO annotations JSON, or are the whole image.
Results follow the COCO keypoint results format (https://cocodataset.org/#format-results).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metapose.data.coco import CocoDataset, load_coco
from metapose.data.dataset import Instance, TopDownDataset
from metapose.data.detections import BOX_SCORE_THRESHOLD, box_instance, load_detections
from metapose.data.images import read_rgb, write_rgb
from metapose.data.keypoint_results import results_to_json
from metapose.data.viz import DRAW_THRESHOLD, draw_box, draw_pose
from metapose.errors import DataError
from metapose.files import read_json
from metapose.inference.estimators import PoseEstimator
from metapose.inference.postprocess import ScoredPose, keep_poses, result_entry
from metapose.inference.topdown import PosePrediction, predict
from metapose.progress import Progress
from metapose.skeleton import Skeleton

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OVERLAY_SUFFIX = ".png"
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PredictOptions:
    """How images are run: batching, flip test, box filtering, post-processing and drawing."""

    batch_size: int = 32
    flip: bool = True
    box_score_threshold: float = BOX_SCORE_THRESHOLD  # detections scoring below are dropped
    oks_nms: bool = True  # rescore + OKS-NMS poses found in detected boxes (SimpleBaseline)
    draw_threshold: float = DRAW_THRESHOLD
    num_workers: int = 0  # DataLoader workers reading and cropping images
    strict: bool = False  # an unreadable image stops the run instead of being skipped
    # Decoded images held at once: a batch is run early when its images pass this many bytes
    # (one 10000 x 10000 photo alone is 300 MB decoded).
    max_pending_bytes: int = 512 * 2**20

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.draw_threshold <= 1:
            raise ValueError(f"draw_threshold must be in [0, 1], got {self.draw_threshold}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


# ------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class ImageJob:
    """One image to run: its id in the results and its person boxes (None: the whole image)."""

    path: Path
    image_id: int
    boxes: tuple[Box, ...] | None
    scores: tuple[float, ...]


@dataclass(frozen=True)
class PredictionPlan:
    jobs: tuple[ImageJob, ...]
    from_detections: bool  # boxes came from a detector: rescore and OKS-NMS the poses


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files given directly, and those in given folders (not recursive, sorted by name)."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            out.append(item)
        else:
            raise DataError(item, "no such image file or folder")
    if not out:
        raise DataError(
            Path(inputs[0]) if inputs else Path("."),
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) found",
        )
    names = [p.name for p in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        # Overlays are named after the image file; two images must not share one.
        raise DataError(out[0].parent, f"image file names repeat: {repeated[:3]}")
    return out


def _numeric_ids(images: Sequence[Path]) -> list[int] | None:
    """COCO names images by their id (``000000397133.jpg``); None when some name is not a number."""
    if not all(p.stem.isdigit() for p in images):
        return None
    ids = [int(p.stem) for p in images]
    return ids if len(set(ids)) == len(ids) else None


def _plan_from_annotations(images: list[Path], gt: CocoDataset) -> list[ImageJob]:
    by_name = {Path(i.file_name).name: i.id for i in gt.images}
    jobs = []
    for path in images:
        if path.name not in by_name:
            raise DataError(gt.annotation_file, f"lists no image named {path.name}", field="images")
        image_id = by_name[path.name]
        people = [a for a in gt.annotations_by_image[image_id] if not a.iscrowd]
        jobs.append(
            ImageJob(path, image_id, tuple(a.bbox for a in people), tuple(1.0 for _ in people))
        )
    return jobs


def _plan_from_detections(
    images: list[Path], detections_file: Path, score_threshold: float
) -> list[ImageJob]:
    ids = _numeric_ids(images)
    if ids is None:
        raise DataError(
            detections_file,
            "detections name images by id, but the image file names are not (distinct) COCO ids; "
            "pass an annotations JSON whose 'images' list the files, or use the whole image",
            field="image_id",
        )
    detections = load_detections(detections_file, score_threshold=score_threshold)
    unused = set(detections) - set(ids)
    if unused:
        log.info("%s: boxes for %d images not given", detections_file, len(unused))
    jobs = []
    for path, image_id in zip(images, ids, strict=True):
        found = detections.get(image_id, ())
        jobs.append(
            ImageJob(path, image_id, tuple(d.bbox for d in found), tuple(d.score for d in found))
        )
    return jobs


def plan_prediction(
    inputs: Sequence[str | Path],
    *,
    boxes: str | Path | None = None,
    whole_image: bool = False,
    box_score_threshold: float = BOX_SCORE_THRESHOLD,
) -> PredictionPlan:
    """What to run: the images of ``inputs`` and where their people are.

    ``boxes`` is a COCO detections JSON (a list; image ids are the files' numeric names, as in
    COCO) or a COCO annotations JSON (an object; images matched by file name, non-crowd person
    boxes). With ``whole_image`` each image is one person box; its image ids are the files'
    numeric names where they all have one, else their 1-based position. Every input is checked
    here, before anything is run or written.
    """
    if (boxes is None) == (not whole_image):
        raise ValueError("give either boxes (a COCO JSON) or whole_image, not both or neither")
    images = list_images(inputs)
    if whole_image:
        ids = _numeric_ids(images) or list(range(1, len(images) + 1))
        jobs = [ImageJob(p, i, None, (1.0,)) for p, i in zip(images, ids, strict=True)]
        return PredictionPlan(tuple(jobs), from_detections=False)
    assert boxes is not None
    boxes = Path(boxes)
    if isinstance(read_json(boxes), list):
        jobs = _plan_from_detections(images, boxes, box_score_threshold)
        return PredictionPlan(tuple(jobs), from_detections=True)
    gt = load_coco(boxes, images[0].parent, check_images="none", require_trainable=False)
    return PredictionPlan(tuple(_plan_from_annotations(images, gt)), from_detections=False)


# ------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class PredictSummary:
    images: int
    people: int  # poses written to the results
    results_path: Path
    overlays: tuple[Path, ...]
    skipped: tuple[DataError, ...] = ()  # images that could not be read (without ``strict``)


def _instances(
    job: ImageJob, image: np.ndarray, aspect_ratio: float, num_keypoints: int, first_id: int
) -> list[Instance]:
    height, width = image.shape[:2]
    boxes = job.boxes if job.boxes is not None else ((0.0, 0.0, float(width), float(height)),)
    return [
        box_instance(
            image,
            box,
            score,
            image_id=job.image_id,
            annotation_id=first_id + i,
            aspect_ratio=aspect_ratio,
            num_keypoints=num_keypoints,
        )
        for i, (box, score) in enumerate(zip(boxes, job.scores, strict=True))
    ]


def predict_instances(
    estimator: PoseEstimator,
    instances: Sequence[Instance],
    options: PredictOptions,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[PosePrediction]:
    """Run ``estimator`` on the un-augmented crops of person ``instances``, batched and
    flip-tested as ``options`` say."""
    return predict(
        estimator.fn,
        TopDownDataset(instances, estimator.codec, skeleton=estimator.skeleton, targets=False),
        flip=options.flip,
        skeleton=estimator.skeleton,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        on_batch=on_batch,
    )


def predict_images(
    plan: PredictionPlan,
    estimator: PoseEstimator,
    results_path: str | Path,
    *,
    overlay_dir: str | Path | None = None,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> PredictSummary:
    """Run ``estimator`` on every image of ``plan``; write the results JSON and overlay PNGs.

    Crops of several images share a batch. The results JSON (COCO keypoint results, each entry
    also naming its ``file_name``, a field COCO tools ignore) is written atomically once all
    images are done; an overlay ``<image stem>.png`` per image, people drawn over it, as each
    image is done. An image that cannot be read is skipped and listed in the summary's
    ``skipped`` (with ``options.strict``: raises its DataError and writes nothing).
    """
    options = options or PredictOptions()
    codec = estimator.codec
    aspect_ratio = codec.input_size[0] / codec.input_size[1]
    results_path = Path(results_path)
    final_overlays = None if overlay_dir is None else Path(overlay_dir)
    for folder in {results_path.parent, *([final_overlays] if final_overlays else [])}:
        for parent in (folder, *folder.parents):
            if parent.exists() and not parent.is_dir():
                raise DataError(parent, "exists and is not a folder: give a folder for --out")
    overlays_to = None
    if final_overlays is not None:
        # Overlays are staged outside the output and moved into place only when every image
        # has been run, so a failure part-way leaves nothing half-written.
        overlays_to = Path(tempfile.mkdtemp(prefix="metapose-overlays-"))
    overlay_names = _overlay_names([job.path for job in plan.jobs])
    skipped: list[DataError] = []
    tick = progress.stage("predict", len(plan.jobs)) if progress else None
    results: list[dict[str, Any]] = []
    overlays: list[Path] = []
    pending: list[tuple[ImageJob, np.ndarray, list[Instance]]] = []

    def flush() -> None:
        instances = [inst for _, _, group in pending for inst in group]
        predictions: list[PosePrediction] = []
        if instances:
            predictions = predict_instances(estimator, instances, options)
        start = 0
        for job, image, group in pending:
            mine = predictions[start : start + len(group)]
            start += len(group)
            kept = keep_poses(mine, plan.from_detections, options.oks_nms)
            results.extend({**result_entry(k), "file_name": job.path.name} for k in kept)
            if overlays_to is not None:
                boxes = {inst.annotation_id: inst.box for inst in group}
                canvas = draw_people(image, kept, boxes, estimator.skeleton, options)
                overlays.append(overlays_to / overlay_names[job.path])
                write_rgb(overlays[-1], canvas)
            if tick is not None:
                tick(1)
        pending.clear()

    next_id = 1
    try:
        for job in plan.jobs:
            try:
                image = read_rgb(job.path)
            except DataError as err:
                if options.strict:
                    raise
                log.warning("skipped: %s", err)
                skipped.append(err)
                if tick is not None:
                    tick(1)
                continue
            group = _instances(job, image, aspect_ratio, estimator.skeleton.num_keypoints, next_id)
            next_id += len(group)
            pending.append((job, image, group))
            held = sum(im.nbytes for _, im, _ in pending)
            if (
                sum(len(g) for _, _, g in pending) >= options.batch_size
                or held >= options.max_pending_bytes
            ):
                flush()
        flush()
        if len(skipped) == len(plan.jobs):
            raise DataError(
                skipped[0].path,
                f"none of the {len(plan.jobs)} images could be read (this one: {skipped[0]})",
            )
        if overlays_to is not None and final_overlays is not None:
            final_overlays.mkdir(parents=True, exist_ok=True)
            moved = []
            for staged in overlays:
                shutil.move(staged, final_overlays / staged.name)
                moved.append(final_overlays / staged.name)
            overlays = moved
    finally:
        if overlays_to is not None:
            shutil.rmtree(overlays_to, ignore_errors=True)
    if progress is not None:
        progress.close_stage()
    results_to_json(results_path, results)
    log.info("%d poses on %d images -> %s", len(results), len(plan.jobs), results_path)
    return PredictSummary(
        len(plan.jobs) - len(skipped), len(results), results_path, tuple(overlays), tuple(skipped)
    )


def _overlay_names(paths: Sequence[Path]) -> dict[Path, str]:
    """``<stem>.png`` per input; inputs sharing a stem (a.png, a.tiff) get ``<stem>-2.png``..."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        name, n = f"{path.stem}{OVERLAY_SUFFIX}", 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}{OVERLAY_SUFFIX}"
        taken.add(name)
        names[path] = name
    return names


def draw_people(
    image: np.ndarray,
    kept: Sequence[ScoredPose],
    boxes: dict[int, Box],
    skeleton: Skeleton,
    options: PredictOptions,
) -> np.ndarray:
    """The image with each kept pose and its person box (labelled with the pose's score)."""
    canvas = image
    height, width = image.shape[:2]
    whole_image = (0.0, 0.0, float(width), float(height))
    for k in kept:
        box = boxes[k.prediction.annotation_id]
        if box != whole_image:  # a frame around the whole picture says nothing
            canvas = draw_box(canvas, box, label=f"{k.score:.2f}")
        canvas = draw_pose(
            canvas,
            k.prediction.keypoints,
            skeleton,
            threshold=options.draw_threshold,
            kind="scores",
        )
    return canvas if kept else image.copy()
