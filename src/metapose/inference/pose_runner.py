"""Running pictures (photos or video frames) through detector + pose estimator, and their outputs.

:class:`PoseRunner` takes pictures one at a time, finds their people (given boxes, the whole
picture, or a :class:`~metapose.inference.detector.PersonDetector`), runs the crops of several
pictures in one batch, post-processes the poses (SimpleBaseline's rescoring and OKS-NMS for
detected boxes) and hands each picture's kept poses back in order. :class:`ResultsStream`
writes COCO keypoint results as they come, so that thousands of images never sit in memory;
:func:`staged_folder` builds an output folder beside its final place and swaps it in whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from metapose.data.dataset import Instance, TopDownDataset
from metapose.data.detections import BOX_SCORE_THRESHOLD, box_instance
from metapose.data.viz import DRAW_THRESHOLD, draw_box, draw_pose
from metapose.errors import DataError
from metapose.files import (
    forget_temporary,
    remove_temporary,
    replace_folder,
    temporary_folder,
    temporary_path,
    write_error,
)
from metapose.inference.crop_runner import predict
from metapose.inference.detector import PersonDetector
from metapose.inference.estimators import PoseEstimator
from metapose.inference.postprocess import PosePrediction, ScoredPose, keep_poses, result_entry
from metapose.skeleton import Skeleton

Box = tuple[float, float, float, float]


OVERLAY_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class PredictOptions:
    """How pictures are run and drawn: batching, flip test, box filtering, post-processing and
    overlays.

    Overlays default to JPEG (quality 85) with the longer side at most 1280 pixels, so that a
    folder of thousands of photos does not write gigabytes of PNG.
    """

    batch_size: int = 32
    flip: bool | None = None  # flip test; None: the estimator's (a checkpoint's codec.flip_test)
    box_score_threshold: float = BOX_SCORE_THRESHOLD  # given detections scoring below: dropped
    oks_nms: bool = True  # rescore + OKS-NMS poses found in detected boxes (SimpleBaseline)
    draw_threshold: float = DRAW_THRESHOLD
    num_workers: int = 0  # DataLoader workers reading and cropping images
    strict: bool = False  # an unreadable image stops the run instead of being skipped
    # Decoded pictures held at once: a batch is run early when they pass this many bytes
    # (one 10000 x 10000 photo alone is 300 MB decoded).
    max_pending_bytes: int = 512 * 2**20
    overlay_format: str = "jpg"
    overlay_max_side: int | None = 1280  # None: the image's own size
    overlay_quality: int = 85  # JPEG quality

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.draw_threshold <= 1:
            raise ValueError(f"draw_threshold must be in [0, 1], got {self.draw_threshold}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.overlay_format not in OVERLAY_FORMATS:
            raise ValueError(
                f"overlay_format must be one of {OVERLAY_FORMATS}, got {self.overlay_format!r}"
            )
        if self.overlay_max_side is not None and self.overlay_max_side < 16:
            raise ValueError(f"overlay_max_side must be >= 16, got {self.overlay_max_side}")
        if not 1 <= self.overlay_quality <= 100:
            raise ValueError(f"overlay_quality must be in [1, 100], got {self.overlay_quality}")


@dataclass(frozen=True)
class Picture:
    """A photo or video frame to run: its id and name in the results, and its person boxes.

    ``boxes`` None: detect the people (with a detector) or take the whole picture as one.
    """

    image_id: int
    file_name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: tuple[Box, ...] | None = None
    scores: tuple[float, ...] = ()
    extra: Mapping[str, Any] | None = None  # added to each result entry (a video's frame index)


def flip_test(estimator: PoseEstimator, options: PredictOptions) -> bool:
    """Whether ``estimator``'s poses are flip-tested: as ``options`` say, else as it says."""
    return estimator.flip if options.flip is None else options.flip


@dataclass(frozen=True)
class PictureResult:
    picture: Picture
    kept: list[ScoredPose]
    boxes: dict[int, Box]  # annotation id of each pose's instance -> its person box


def predict_instances(
    estimator: PoseEstimator,
    instances: Sequence[Instance],
    options: PredictOptions,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[PosePrediction]:
    """Run ``estimator`` on the un-augmented crops of person ``instances``, batched and
    flip-tested as ``options`` say (by default as the estimator says)."""
    return predict(
        estimator.fn,
        TopDownDataset(instances, estimator.codec, skeleton=estimator.skeleton, targets=False),
        flip=flip_test(estimator, options),
        skeleton=estimator.skeleton,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        on_batch=on_batch,
    )


class PoseRunner:
    """Batches pictures through people-finding and the estimator; ``on_done`` gets each in order.

    With a ``detector``, pictures without boxes are searched for people and their poses are
    post-processed as detections; without one, such a picture is one whole-picture box.
    ``from_detections`` says the given boxes came from a detector.
    """

    def __init__(
        self,
        estimator: PoseEstimator,
        options: PredictOptions,
        on_done: Callable[[PictureResult], None],
        *,
        detector: PersonDetector | None = None,
        from_detections: bool = False,
    ) -> None:
        self.estimator = estimator
        self.options = options
        self.on_done = on_done
        self.detector = detector
        self.from_detections = from_detections or detector is not None
        codec = estimator.codec
        self.aspect_ratio = codec.input_size[0] / codec.input_size[1]
        self.pending: list[tuple[Picture, list[Instance]]] = []
        self.next_id = 1
        self.people_found = 0

    def add(self, picture: Picture) -> None:
        boxes, scores = picture.boxes, picture.scores
        if boxes is None and self.detector is not None:
            found = self.detector.detect(picture.image, picture.image_id)
            boxes, scores = tuple(d.bbox for d in found), tuple(d.score for d in found)
        elif boxes is None:
            height, width = picture.image.shape[:2]
            boxes, scores = ((0.0, 0.0, float(width), float(height)),), (1.0,)
        group = [
            box_instance(
                picture.image,
                box,
                score,
                image_id=picture.image_id,
                annotation_id=self.next_id + i,
                aspect_ratio=self.aspect_ratio,
                num_keypoints=self.estimator.skeleton.num_keypoints,
            )
            for i, (box, score) in enumerate(zip(boxes, scores, strict=True))
        ]
        self.next_id += len(group)
        self.pending.append((picture, group))
        held = sum(p.image.nbytes for p, _ in self.pending)
        people = sum(len(g) for _, g in self.pending)
        if people >= self.options.batch_size or held >= self.options.max_pending_bytes:
            self.flush()

    def flush(self) -> None:
        instances = [inst for _, group in self.pending for inst in group]
        predictions: list[PosePrediction] = []
        if instances:
            predictions = predict_instances(self.estimator, instances, self.options)
        start = 0
        for picture, group in self.pending:
            mine = predictions[start : start + len(group)]
            start += len(group)
            kept = keep_poses(mine, self.from_detections, self.options.oks_nms)
            self.people_found += len(kept)
            self.on_done(PictureResult(picture, kept, {i.annotation_id: i.box for i in group}))
        self.pending.clear()


def result_entries(result: PictureResult) -> list[dict[str, Any]]:
    """The COCO keypoint result entries of a picture's poses, naming its file (and frame)."""
    extra = dict(result.picture.extra or {})
    return [
        {**result_entry(k), "file_name": result.picture.file_name, **extra} for k in result.kept
    ]


def draw_people(
    image: np.ndarray,
    kept: Sequence[ScoredPose],
    boxes: Mapping[int, Box],
    skeleton: Skeleton,
    draw_threshold: float = DRAW_THRESHOLD,
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
            canvas, k.prediction.keypoints, skeleton, threshold=draw_threshold, kind="scores"
        )
    return canvas if kept else image.copy()


def shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` scaled down so that its longer side is at most ``max_side`` (None: as it is)."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image
    ratio = max_side / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_overlay(path: Path, image: np.ndarray, options: PredictOptions) -> Path:
    """Write an overlay as ``options`` say; returns its path (the suffix is the format's)."""
    path = path.with_suffix(f".{options.overlay_format}")
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(shrink(image, options.overlay_max_side), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, options.overlay_quality]
    if not cv2.imwrite(str(path), bgr, params if options.overlay_format == "jpg" else []):
        raise OSError(f"{path}: could not write image")
    return path


class ResultsStream:
    """COCO keypoint results written entry by entry as a JSON list (memory stays bounded).

    The file appears under its name only on :meth:`close`; until then it is a hidden partial
    file beside it, removed if the run fails.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = temporary_path(self.path)  # the mode ``open`` gives, a name of its own
        self.file = self.partial.open("w", encoding="utf-8")
        self.file.write("[")
        self.count = 0

    def write(self, entries: Sequence[Mapping[str, Any]]) -> None:
        for entry in entries:
            self.file.write(("\n" if self.count == 0 else ",\n") + json.dumps(entry))
            self.count += 1

    def close(self) -> None:
        self.file.write("\n]\n" if self.count else "]\n")
        self.file.close()
        os.replace(self.partial, self.path)
        forget_temporary(self.partial)

    def abort(self) -> None:
        self.file.close()
        remove_temporary(self.partial)

    def __enter__(self) -> ResultsStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


# Files a predict output folder holds; an existing folder with anything else is not replaced.
OUTPUT_NAMES = frozenset({"results.json", "overlays", "overlay.mp4"})


@contextmanager
def staged_folder(out: str | Path, known: frozenset[str] = OUTPUT_NAMES) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` to write into; swapped in whole for ``out`` at the end.

    An earlier output in ``out`` (only ``known`` names in it) is replaced whole, never mixed with
    the new files; a failed or interrupted run removes the staged folder and leaves ``out`` as it
    was. A folder holding other files is refused before anything is written.
    """
    out = Path(out).resolve()  # "." and "pred/" alike have a name and a parent to stage in
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder: give a folder for --out")
    if out.is_dir():
        strangers = sorted(p.name for p in out.iterdir() if p.name not in known)
        if strangers:
            raise DataError(
                out,
                f"holds files that are not a predict output ({', '.join(strangers[:3])}); "
                "give a new or empty folder",
            )
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise DataError(parent, "exists and is not a folder: give a folder for --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = temporary_folder(out, "partial")
    try:
        yield staged
        replace_folder(staged, out)
        forget_temporary(staged)
    except OSError as err:
        # A full or read-only disk names the output the user asked for, not the staged folder.
        raise write_error(out, err) from None
    finally:
        remove_temporary(staged)
