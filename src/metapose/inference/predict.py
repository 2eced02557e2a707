"""Top-down pose prediction on image files: people found, COCO results and overlays out.

The library side of ``metapose predict`` and ``metapose detect``. People come from the bundled
person detector (:mod:`metapose.inference.detector`, the default), from a COCO detections JSON
(SimpleBaseline's rescoring and OKS-NMS are then applied, see :mod:`metapose.data.detections`),
from a COCO annotations JSON, or are the whole image. Every picture runs through
:class:`~metapose.inference.pose_runner.PoseRunner`. Results follow the COCO keypoint results
format (https://cocodataset.org/#format-results), each entry also naming its ``file_name`` (a
field COCO tools ignore) so that they can be matched to labels whatever the image ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metapose.data.boxes import Detection
from metapose.data.coco import CocoDataset, load_coco
from metapose.data.detections import BOX_SCORE_THRESHOLD, load_detections
from metapose.data.images import IMAGE_SUFFIXES, read_rgb
from metapose.errors import DataError
from metapose.files import read_json, write_json_atomic
from metapose.inference.detector import PersonDetector, detection_entries
from metapose.inference.estimators import PoseEstimator
from metapose.inference.pose_runner import (
    Box,
    Picture,
    PictureResult,
    PoseRunner,
    PredictOptions,
    ResultsStream,
    draw_people,
    predict_instances,
    result_entries,
    staged_folder,
    write_overlay,
)
from metapose.progress import Progress

__all__ = ["PredictOptions", "predict_instances", "plan_prediction", "predict_images"]

log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
OVERLAYS_NAME = "overlays"


# ------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class ImageJob:
    """One image to run: its id and name in the results and its person boxes.

    ``boxes`` None: the plan's detector finds them (or the whole image is one box).
    ``file_name`` is the path below the folder given (the file's name when given directly).
    """

    path: Path
    image_id: int
    boxes: tuple[Box, ...] | None
    scores: tuple[float, ...]
    file_name: str


@dataclass(frozen=True)
class PredictionPlan:
    jobs: tuple[ImageJob, ...]
    from_detections: bool  # boxes came from a detector: rescore and OKS-NMS the poses
    detect: bool = False  # find the people with a detector


def list_images(inputs: Sequence[str | Path], *, recursive: bool = False) -> list[tuple[Path, str]]:
    """Image files given directly, and those in given folders (sorted; sub-folders with
    ``recursive``), each with its name in the results (its path below the folder given)."""
    out: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = item.rglob("*") if recursive else item.iterdir()
            files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            out += [(p, p.relative_to(item).as_posix()) for p in files]
        elif item.is_file():
            out.append((item, item.name))
        else:
            raise DataError(item, "no such image file or folder")
    if not out:
        raise DataError(
            Path(inputs[0]) if inputs else Path("."),
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) found"
            + ("" if recursive else " (--recursive looks in sub-folders)"),
        )
    names = [name for _, name in out]
    if len(set(names)) != len(names):
        # Results and overlays are named after the file; two images must not share one.
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise DataError(out[0][0].parent, f"image file names repeat: {repeated[:3]}")
    return out


def image_ids(names: Sequence[str]) -> list[int]:
    """COCO names images by their id (``000000397133.jpg``): those ids where every file has a
    distinct one, else the files' 1-based positions."""
    stems = [Path(n).stem for n in names]
    if all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(names) + 1))


def _plan_from_annotations(images: list[tuple[Path, str]], gt: CocoDataset) -> list[ImageJob]:
    by_name = {Path(i.file_name).name: i.id for i in gt.images}
    jobs = []
    for path, name in images:
        if path.name not in by_name:
            raise DataError(gt.annotation_file, f"lists no image named {path.name}", field="images")
        image_id = by_name[path.name]
        people = [a for a in gt.annotations_by_image[image_id] if not a.iscrowd]
        boxes = tuple(a.bbox for a in people)
        jobs.append(ImageJob(path, image_id, boxes, tuple(1.0 for _ in people), name))
    return jobs


def _plan_from_detections(
    images: list[tuple[Path, str]], detections_file: Path, score_threshold: float
) -> list[ImageJob]:
    """Boxes matched by file name where the entries name their image, else by COCO id."""
    names = [name for _, name in images]
    ids = image_ids(names)
    entries = read_json(detections_file)
    by_name = any(isinstance(e, dict) and isinstance(e.get("file_name"), str) for e in entries)
    basenames = {Path(n).name: i for n, i in zip(names, ids, strict=True)}
    if by_name and len(basenames) != len(names):
        raise DataError(
            detections_file, "image file names repeat in sub-folders", field="file_name"
        )
    if not by_name and not all(Path(n).stem.isdigit() for n in names):
        raise DataError(
            detections_file,
            "detections name images by id, but the image file names are not (distinct) COCO ids "
            "and the entries carry no 'file_name'; pass an annotations JSON whose 'images' list "
            "the files, or let the bundled detector find the people",
            field="image_id",
        )
    detections = load_detections(
        detections_file, score_threshold=score_threshold, file_names=basenames if by_name else None
    )
    unused = set(detections) - set(ids)
    if unused:
        log.info("%s: boxes for %d images not given", detections_file, len(unused))
    log.info("%s: boxes matched to images by %s", detections_file, "file name" if by_name else "id")
    jobs = []
    for (path, name), image_id in zip(images, ids, strict=True):
        found: tuple[Detection, ...] = detections.get(image_id, ())
        boxes = tuple(d.bbox for d in found)
        jobs.append(ImageJob(path, image_id, boxes, tuple(d.score for d in found), name))
    return jobs


def plan_prediction(
    inputs: Sequence[str | Path],
    *,
    boxes: str | Path | None = None,
    whole_image: bool = False,
    box_score_threshold: float = BOX_SCORE_THRESHOLD,
    recursive: bool = False,
) -> PredictionPlan:
    """What to run: the images of ``inputs`` and where their people are.

    ``boxes`` is a COCO detections JSON (a list; images matched by the entries' ``file_name``
    where they carry one, else by id = the files' numeric names, as in COCO) or a COCO
    annotations JSON (an object; images matched by file name, non-crowd person boxes). With
    ``whole_image`` each image is one person box. With neither, a detector finds the people
    (``plan.detect``). Image ids are the files' numeric names where they all have one, else
    their 1-based position. Every input is checked here, before anything is run or written.
    """
    if boxes is not None and whole_image:
        raise ValueError("give either boxes (a COCO JSON) or whole_image, not both")
    images = list_images(inputs, recursive=recursive)
    if boxes is None:
        ids = image_ids([name for _, name in images])
        jobs = [ImageJob(p, i, None, (), n) for (p, n), i in zip(images, ids, strict=True)]
        return PredictionPlan(tuple(jobs), from_detections=False, detect=not whole_image)
    boxes = Path(boxes)
    if isinstance(read_json(boxes), list):
        jobs = _plan_from_detections(images, boxes, box_score_threshold)
        return PredictionPlan(tuple(jobs), from_detections=True)
    gt = load_coco(boxes, images[0][0].parent, check_images="none", require_trainable=False)
    return PredictionPlan(tuple(_plan_from_annotations(images, gt)), from_detections=False)


# ------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class PredictSummary:
    images: int
    people: int  # poses written to the results
    results_path: Path
    overlays: tuple[Path, ...]
    skipped: tuple[DataError, ...] = ()  # images that could not be read (without ``strict``)
    seconds: float = 0.0  # reading, detecting, estimating and writing


def predict_images(
    plan: PredictionPlan,
    estimator: PoseEstimator,
    results_path: str | Path,
    *,
    overlay_dir: str | Path | None = None,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
    detector: PersonDetector | None = None,
) -> PredictSummary:
    """Run ``estimator`` on every image of ``plan``; write the results JSON and overlays.

    A plan that detects needs the ``detector``. Crops of several images share a batch; results
    are streamed to a hidden file beside ``results_path`` that takes its name at the end, so
    memory stays bounded on thousands of images. An overlay per image (named after its file,
    format and size as ``options`` say) goes to ``overlay_dir`` as each image is done: write
    into a :func:`predict_folder` to have the whole output appear at once. An image that cannot
    be read is skipped and listed in the summary's ``skipped`` (with ``options.strict``: raises
    its DataError).
    """
    options = options or PredictOptions()
    if plan.detect and detector is None:
        raise ValueError("this plan finds people with a detector; pass one")
    started = time.perf_counter()
    overlay_root = None if overlay_dir is None else Path(overlay_dir)
    overlay_names = _overlay_names([job.file_name for job in plan.jobs])
    skipped: list[DataError] = []
    overlays: list[Path] = []
    tick = progress.stage("predict", len(plan.jobs)) if progress else None
    with ResultsStream(results_path) as stream:

        def done(result: PictureResult) -> None:
            stream.write(result_entries(result))
            if overlay_root is not None:
                canvas = draw_people(
                    result.picture.image,
                    result.kept,
                    result.boxes,
                    estimator.skeleton,
                    options.draw_threshold,
                )
                name = overlay_names[result.picture.file_name]
                overlays.append(write_overlay(overlay_root / name, canvas, options))
            if tick is not None:
                tick(1)

        runner = PoseRunner(
            estimator,
            options,
            done,
            detector=detector if plan.detect else None,
            from_detections=plan.from_detections,
        )
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
            runner.add(Picture(job.image_id, job.file_name, image, job.boxes, job.scores))
        runner.flush()
        if skipped and len(skipped) == len(plan.jobs):
            raise DataError(
                skipped[0].path,
                f"none of the {len(plan.jobs)} images could be read (this one: {skipped[0]})",
            )
    if progress is not None:
        progress.close_stage()
    log.info("%d poses on %d images -> %s", stream.count, len(plan.jobs), results_path)
    return PredictSummary(
        len(plan.jobs) - len(skipped),
        stream.count,
        Path(results_path),
        tuple(overlays),
        tuple(skipped),
        time.perf_counter() - started,
    )


def predict_folder(
    plan: PredictionPlan,
    estimator: PoseEstimator,
    out: str | Path,
    *,
    overlays: bool = True,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
    detector: PersonDetector | None = None,
) -> PredictSummary:
    """:func:`predict_images` into ``out/results.json`` and ``out/overlays/``, all or nothing.

    The output is built in a hidden folder beside ``out`` and swapped in whole at the end (see
    :func:`~metapose.inference.pose_runner.staged_folder`): an earlier run's files are never
    mixed with the new ones, and an interrupted run leaves ``out`` as it was.
    """
    out = Path(out)
    with staged_folder(out) as staged:
        summary = predict_images(
            plan,
            estimator,
            staged / RESULTS_NAME,
            overlay_dir=staged / OVERLAYS_NAME if overlays else None,
            options=options,
            progress=progress,
            detector=detector,
        )
    return PredictSummary(
        summary.images,
        summary.people,
        out / RESULTS_NAME,
        tuple(out / p.relative_to(staged) for p in summary.overlays),
        summary.skipped,
        summary.seconds,
    )


def _overlay_names(file_names: Sequence[str]) -> dict[str, str]:
    """``<path without suffix>`` per input; inputs sharing a stem (a.png, a.tiff) get ``a-2``..."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for file_name in file_names:
        stem = Path(file_name).with_suffix("").as_posix()
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        names[file_name] = name
    return names


# ------------------------------------------------------------------------------ detecting only


@dataclass(frozen=True)
class DetectSummary:
    images: int
    people: int
    path: Path
    skipped: tuple[DataError, ...]
    seconds: float


def detect_images(
    plan: PredictionPlan,
    detector: PersonDetector,
    path: str | Path,
    *,
    strict: bool = False,
    progress: Progress | None = None,
) -> DetectSummary:
    """The people the detector finds in every image of ``plan``, as a COCO detection-results
    JSON (each entry naming its ``file_name``), written atomically at the end."""
    started = time.perf_counter()
    entries: list[dict[str, Any]] = []
    skipped: list[DataError] = []
    tick = progress.stage("detect", len(plan.jobs)) if progress else None
    for job in plan.jobs:
        try:
            image = read_rgb(job.path)
        except DataError as err:
            if strict:
                raise
            skipped.append(err)
        else:
            entries += detection_entries(detector.detect(image, job.image_id), job.file_name)
        if tick is not None:
            tick(1)
    if progress is not None:
        progress.close_stage()
    if skipped and len(skipped) == len(plan.jobs):
        raise DataError(skipped[0].path, f"none of the {len(plan.jobs)} images could be read")
    write_json_atomic(path, entries)
    seconds = time.perf_counter() - started
    return DetectSummary(
        len(plan.jobs) - len(skipped), len(entries), Path(path), tuple(skipped), seconds
    )
