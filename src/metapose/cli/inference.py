"""``metapose predict`` and ``export``: poses on images, and the ONNX export."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    resolve_device,
)
from metapose.config import check_seed
from metapose.data.viz import DRAW_THRESHOLD
from metapose.inference.detector import BUNDLED_DETECTOR, DetectorOptions, PersonDetector
from metapose.inference.export import DEFAULT_OPSET
from metapose.inference.pose_runner import OVERLAY_FORMATS, PredictOptions


def add_pose_options(p: argparse.ArgumentParser) -> None:
    """How poses are run (:class:`~metapose.inference.pose_runner.PredictOptions`):
    ``--box-threshold``, ``--batch-size`` and ``--no-flip``."""
    p.add_argument(
        "--box-threshold",
        type=float,
        default=PredictOptions().box_score_threshold,
        help="minimum score of a --boxes detection",
    )
    p.add_argument("--batch-size", type=int, default=PredictOptions().batch_size)
    p.add_argument(
        "--no-flip",
        action="store_true",
        help="no flip test (default: as the checkpoint's codec.flip_test says)",
    )


def add_detector_options(
    p: argparse.ArgumentParser, score_threshold: float = DetectorOptions().score_threshold
) -> None:
    """The person detector's file and options (also used by ``evaluate --detect``)."""
    defaults = DetectorOptions()
    p.add_argument(
        "--detector",
        default=str(BUNDLED_DETECTOR),
        help="a YOLOX-layout ONNX person detector (default: the bundled YOLOX-Nano)",
    )
    p.add_argument(
        "--det-threshold",
        type=float,
        default=score_threshold,
        help="minimum detector score of a person",
    )
    p.add_argument(
        "--nms-iou", type=float, default=defaults.nms_iou, help="detector NMS IoU threshold"
    )
    p.add_argument(
        "--max-people", type=int, default=defaults.max_people, help="most people an image"
    )
    p.add_argument(
        "--min-box-size",
        type=float,
        default=defaults.min_box_size,
        help="people narrower or lower than this many pixels are dropped",
    )


def detector_options(args: argparse.Namespace) -> DetectorOptions:
    try:
        return DetectorOptions(
            score_threshold=args.det_threshold,
            nms_iou=args.nms_iou,
            max_people=args.max_people,
            min_box_size=args.min_box_size,
        )
    except ValueError as bad:
        raise SystemExit(f"error: {bad}") from None


def open_detector(args: argparse.Namespace) -> PersonDetector:
    from metapose.inference.detector import PersonDetector

    return PersonDetector(args.detector, detector_options(args), threads=args.threads)


def cmd_predict(args: argparse.Namespace) -> int:
    from metapose.device import DeviceOptions
    from metapose.inference.estimators import estimator_from_checkpoint, estimator_from_onnx
    from metapose.inference.predict import plan_prediction, predict_folder
    from metapose.inference.video import is_video, predict_video

    if (args.checkpoint is None) == (args.onnx is None):
        raise SystemExit("error: give exactly one of --checkpoint or --onnx")
    if args.boxes is not None and args.whole_image:
        raise SystemExit("error: give at most one of --boxes JSON or --whole-image")
    videos = [i for i in args.inputs if is_video(i)]
    if videos and (len(args.inputs) > 1 or args.boxes is not None):
        raise SystemExit("error: give one video alone, without --boxes (people are detected)")
    if args.frame_stride < 1:
        raise SystemExit(f"error: --frame-stride must be >= 1, got {args.frame_stride}")
    try:
        options = PredictOptions(
            batch_size=args.batch_size,
            flip=False if args.no_flip else None,
            box_score_threshold=args.box_threshold,
            draw_threshold=args.threshold,
            oks_nms=not args.no_nms,
            strict=args.strict,
            overlay_format=args.overlay_format,
            overlay_max_side=args.overlay_size or None,
        )
    except ValueError as bad:
        raise SystemExit(f"error: {bad}") from None
    plan = None
    if not videos:  # every image and box file is checked before a model is loaded
        plan = plan_prediction(
            args.inputs,
            boxes=args.boxes,
            whole_image=args.whole_image,
            box_score_threshold=args.box_threshold,
            recursive=args.recursive,
        )
    detector = None
    if not args.whole_image and args.boxes is None:
        detector = open_detector(args)
    if args.onnx:
        estimator = estimator_from_onnx(args.onnx, threads=args.threads)
    else:
        estimator = estimator_from_checkpoint(
            args.checkpoint, DeviceOptions(resolve_device(args.device))
        )
    out = Path(args.out)
    progress = TqdmProgress(not args.quiet)
    if plan is None:
        # FFmpeg's own warnings on a damaged frame would bury the one error line that names it.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        video = predict_video(
            videos[0],
            estimator,
            out,
            detector=detector,
            frame_stride=args.frame_stride,
            overlay=not args.no_overlays,
            options=options,
            progress=progress,
        )
        per_frame = 1000 * video.seconds / max(video.frames_run, 1)
        print(
            f"{video.people} people on {video.frames_run} of {video.frames} frames in "
            f"{video.seconds:.1f} s ({per_frame:.0f} ms/frame) -> {video.results_path}"
            + (f"; overlay video: {video.overlay_path}" if video.overlay_path else "")
        )
        return 0
    summary = predict_folder(
        plan,
        estimator,
        out,
        overlays=not args.no_overlays,
        options=options,
        progress=progress,
        detector=detector,
    )
    for skipped in summary.skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image(s) (--strict makes this an error)")
    per_image = 1000 * summary.seconds / max(summary.images, 1)
    overlays = ""
    if summary.overlays:
        size = f", longer side <= {options.overlay_max_side} px" if options.overlay_max_side else ""
        overlays = f"; overlays: {out / 'overlays'} ({options.overlay_format.upper()}{size})"
    print(
        f"{summary.people} people on {summary.images} images in {summary.seconds:.1f} s "
        f"({per_image:.0f} ms/image) -> {summary.results_path}{overlays}"
    )
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from metapose.inference.predict import detect_images, plan_prediction

    plan = plan_prediction(args.inputs, whole_image=True, recursive=args.recursive)
    summary = detect_images(
        plan,
        open_detector(args),
        args.out,
        strict=args.strict,
        progress=TqdmProgress(not args.quiet),
    )
    for err in summary.skipped:
        print(f"skipped: {err}", file=sys.stderr)
    per_image = 1000 * summary.seconds / max(summary.images, 1)
    print(
        f"{summary.people} people on {summary.images} images in {summary.seconds:.1f} s "
        f"({per_image:.0f} ms/image) -> {summary.path}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from metapose.data.coco import load_coco
    from metapose.data.codec import HeatmapCodec
    from metapose.inference.export import coco_crops, export_checked
    from metapose.models.checkpoint import load_checkpoint

    check_seed("", "--seed", args.seed)
    model = load_checkpoint(args.checkpoint).model
    progress = TqdmProgress(not args.quiet)
    crops = None
    if args.check_data:
        codec = HeatmapCodec.for_model(model.config)
        data = load_coco(args.check_data, args.check_images)
        crops = coco_crops(data, codec, limit=16, progress=progress)
    report = export_checked(
        model,
        args.out,
        np.random.default_rng(args.seed),
        opset=args.opset,
        real_crops=crops,
        progress=progress,
    )
    print(f"wrote {report.path} (opset {report.opset}); onnx.checker passed")
    print(
        f"max |heatmap difference| vs PyTorch: random crops {report.max_abs_diff_random:.2e}"
        + (
            f", real crops {report.max_abs_diff_real:.2e}"
            if report.max_abs_diff_real is not None
            else ""
        )
    )
    return 0


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    p = sub.add_parser(
        "predict", help="poses on your photos or a video: COCO results JSON and overlays"
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders, or one video file")
    p.add_argument("--checkpoint", help=f"metapose checkpoint ({CHECKPOINT_HELP})")
    p.add_argument("--onnx", help="or: an exported ONNX model (runs on onnxruntime)")
    p.add_argument(
        "--boxes",
        help="person boxes from a COCO detections JSON or annotations JSON instead of the detector",
    )
    p.add_argument(
        "--whole-image", action="store_true", help="one person box = the whole image (no detector)"
    )
    add_pose_options(p)
    add_detector_options(p)
    p.add_argument(
        "--threshold", type=float, default=DRAW_THRESHOLD, help="keypoint score drawn at least"
    )
    p.add_argument("--out", required=True, help="folder for results.json and overlays")
    p.add_argument("--recursive", action="store_true", help="also images in sub-folders")
    p.add_argument("--frame-stride", type=int, default=1, help="video: run every n-th frame")
    p.add_argument("--no-nms", action="store_true", help="keep duplicate detections")
    p.add_argument("--no-overlays", action="store_true", help="results JSON only")
    p.add_argument(
        "--overlay-format", choices=OVERLAY_FORMATS, default=PredictOptions().overlay_format
    )
    p.add_argument(
        "--overlay-size",
        type=int,
        default=PredictOptions().overlay_max_side,
        help="overlays' longer side at most this many pixels (0: the image's own size)",
    )
    p.add_argument(
        "--strict", action="store_true", help="stop at an unreadable image instead of skipping it"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("detect", help="people in your photos: a COCO detection-results JSON")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--out", required=True, help="detections JSON to write")
    add_detector_options(p)
    p.add_argument("--recursive", action="store_true", help="also images in sub-folders")
    p.add_argument(
        "--strict", action="store_true", help="stop at an unreadable image instead of skipping it"
    )
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, checked against PyTorch")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--check-data", help="also compare on real crops of this COCO JSON")
    p.add_argument("--check-images", help="image folder of --check-data")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parity inputs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)
