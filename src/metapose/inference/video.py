"""Poses on every frame of a video: one COCO results JSON (entries carry their frame index) and
an overlay video, read and written with OpenCV (``cv2.VideoCapture``, ``VideoWriter`` mp4v)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from metapose.errors import DataError
from metapose.inference.detector import PersonDetector
from metapose.inference.estimators import PoseEstimator
from metapose.inference.pose_runner import (
    Picture,
    PictureResult,
    PoseRunner,
    PredictOptions,
    ResultsStream,
    draw_people,
    result_entries,
    shrink,
    staged_folder,
)
from metapose.progress import Progress

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
OVERLAY_VIDEO = "overlay.mp4"
RESULTS_NAME = "results.json"
FOURCC = "mp4v"
FALLBACK_FPS = 25.0  # where the container states no frame rate


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoSummary:
    frames: int  # frames in the video
    frames_run: int  # frames run (every ``frame_stride``-th)
    people: int  # poses written to the results
    results_path: Path
    overlay_path: Path | None
    seconds: float


def open_video(path: Path) -> tuple[cv2.VideoCapture, int, float]:
    """The capture, its frame count (0 where unknown) and frame rate; one clear error for a file
    that is not a video OpenCV can decode."""
    if not path.is_file():
        raise DataError(path, "video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(path, "cannot open as a video (not a video file, or a codec OpenCV lacks)")
    frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or FALLBACK_FPS
    return capture, frames, fps


def predict_video(
    path: str | Path,
    estimator: PoseEstimator,
    out: str | Path,
    *,
    detector: PersonDetector | None,
    frame_stride: int = 1,
    overlay: bool = True,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> VideoSummary:
    """Poses on every ``frame_stride``-th frame of the video at ``path``, into ``out``.

    ``out/results.json``: COCO keypoint results, image id = frame index + 1, each entry also
    carrying ``frame`` (0-based) and the video's ``file_name``; ``out/overlay.mp4``: the frames
    run, people drawn, at the video's frame rate / ``frame_stride`` (longer side capped as
    ``options.overlay_max_side`` says). People are found by ``detector`` (None: the whole frame
    is one person). The folder appears whole at the end (a frame that cannot be decoded stops
    the run and leaves ``out`` as it was).
    """
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    path, out = Path(path), Path(out)
    options = options or PredictOptions()
    started = time.perf_counter()
    capture, total, fps = open_video(path)
    writer: cv2.VideoWriter | None = None
    tick = progress.stage("video frames", total) if progress else None
    frames_run = index = 0
    try:
        with staged_folder(out) as staged, ResultsStream(staged / RESULTS_NAME) as stream:

            def done(result: PictureResult) -> None:
                nonlocal writer
                stream.write(result_entries(result))
                if overlay:
                    canvas = draw_people(
                        result.picture.image,
                        result.kept,
                        result.boxes,
                        estimator.skeleton,
                        options.draw_threshold,
                    )
                    frame = cv2.cvtColor(
                        shrink(canvas, options.overlay_max_side), cv2.COLOR_RGB2BGR
                    )
                    if writer is None:
                        writer = _writer(staged / OVERLAY_VIDEO, frame, fps / frame_stride, out)
                    writer.write(frame)

            runner = PoseRunner(estimator, options, done, detector=detector)
            while True:
                wanted = index % frame_stride == 0
                ok, frame = capture.read() if wanted else (capture.grab(), None)
                if not ok:
                    if index < total:
                        raise DataError(
                            path,
                            f"frame {index} of {total} cannot be decoded (truncated or corrupt "
                            "video)",
                        )
                    break
                if wanted:
                    rgb = cv2.cvtColor(np.asarray(frame), cv2.COLOR_BGR2RGB)
                    runner.add(Picture(index + 1, path.name, rgb, extra={"frame": index}))
                    frames_run += 1
                index += 1
                if tick is not None:
                    tick(1)
            if frames_run == 0:
                raise DataError(path, "no frame could be decoded (not a video OpenCV can read)")
            runner.flush()
            if writer is not None:
                writer.release()
                writer = None
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if progress is not None:
        progress.close_stage()
    log.info("%s: %d of %d frames run, %d poses -> %s", path, frames_run, index, stream.count, out)
    return VideoSummary(
        index,
        frames_run,
        stream.count,
        out / RESULTS_NAME,
        out / OVERLAY_VIDEO if overlay else None,
        time.perf_counter() - started,
    )


def _writer(path: Path, first: np.ndarray, fps: float, out: Path) -> cv2.VideoWriter:
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise DataError(out, f"OpenCV cannot write an {FOURCC} video here")
    return writer
