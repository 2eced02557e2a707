"""``metapose evaluate``: OKS AP/AR (and PCK) of results or of a model against ground truth."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    codec_override,
    keypoint_names,
    resolve_device,
)
from metapose.cli.inference import add_detector_options, add_pose_options, open_detector
from metapose.config import CODEC_MODES
from metapose.inference.detector import EVALUATION_SCORE_THRESHOLD
from metapose.inference.pose_runner import PredictOptions

if TYPE_CHECKING:
    from metapose.evaluation.coco import EvalResult


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metapose.evaluation.coco import evaluate_oks, format_eval_result, format_eval_results

    keypoints = keypoint_names(args.keypoints)
    given = [x for x in (args.results, args.onnx, args.checkpoint) if x is not None]
    if len(given) != 1:
        raise SystemExit("error: give exactly one of --results JSON, --onnx model or --checkpoint")
    if args.detect and args.boxes:
        raise SystemExit("error: give at most one of --detect or --boxes JSON")
    if args.results:
        from metapose.evaluation.coco import how_results_match

        # Scoring results needs the annotations only, never the images.
        print(f"predictions matched to labels by {how_results_match(args.gt, args.results)}")
        result = evaluate_oks(args.gt, args.results, keypoints=keypoints)
        print(format_eval_result(result))
        return _write_json(args, result)
    from metapose.data.coco import load_coco
    from metapose.device import DeviceOptions
    from metapose.evaluation.evaluate import detect_people, evaluate
    from metapose.inference.estimators import estimator_from_checkpoint, estimator_from_onnx

    # Decoded once here so that an image whose size disagrees with the file is named.
    gt = load_coco(args.gt, args.images, require_trainable=False, check_images="decode")
    detector = open_detector(args) if args.detect else None
    if args.onnx:
        estimator = estimator_from_onnx(args.onnx, threads=args.threads)
    else:
        options = DeviceOptions(resolve_device(args.device))
        estimator = estimator_from_checkpoint(args.checkpoint, options, codec=codec_override(args))
    progress = TqdmProgress(not args.quiet)
    predict_options = PredictOptions(
        flip=False if args.no_flip else None,
        batch_size=args.batch_size,
        box_score_threshold=args.box_threshold,
    )
    boxes = args.boxes
    if detector is not None:
        people = detect_people(detector, gt, progress)
        boxes = people.detections
    started = time.perf_counter()
    result = evaluate(
        estimator,
        gt,
        boxes=boxes,
        keypoints=keypoints,
        options=predict_options,
        progress=progress,
        results_path=args.save_results,
    )
    pose_seconds = time.perf_counter() - started
    if boxes is None:
        print(format_eval_result(result))
        return _write_json(args, result)
    with_gt = evaluate(
        estimator, gt, keypoints=keypoints, options=predict_options, progress=progress
    )
    source = f"detector {Path(args.detector).name}" if detector is not None else args.boxes
    print(f"pose AP from {source} boxes beside ground-truth boxes ({len(gt.images)} images):")
    print(format_eval_results({"detected boxes": result, "ground-truth boxes": with_gt}))
    images = max(len(gt.images), 1)
    if detector is not None:
        print(
            f"time per image: detector {1000 * people.seconds / images:.0f} ms (with reading), "
            f"pose estimation {1000 * pose_seconds / images:.0f} ms"
        )
    return _write_json(args, result)


def _write_json(args: argparse.Namespace, result: EvalResult) -> int:
    if args.json:
        from metapose.files import write_json_atomic

        write_json_atomic(args.json, result.as_dict(), indent=2)
    return 0


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    p = sub.add_parser("evaluate", help="OKS AP/AR of a COCO results JSON against ground truth")
    p.add_argument("--gt", required=True, help="person_keypoints JSON")
    p.add_argument("--results", help="COCO keypoint results JSON to score")
    p.add_argument("--onnx", help="or: a top-down heatmap ONNX model (N x 3 x H x W RGB in) to run")
    p.add_argument("--checkpoint", help=f"or: a metapose checkpoint to run ({CHECKPOINT_HELP})")
    p.add_argument(
        "--crop",
        choices=CODEC_MODES,
        help="cut crops with this affine instead of the checkpoint's own",
    )
    p.add_argument(
        "--encoding",
        choices=CODEC_MODES,
        help="decode with this heatmap encoding instead of the checkpoint's own",
    )
    p.add_argument(
        "--dark",
        choices=("on", "off"),
        help="DARK decoding on or off instead of the checkpoint's own choice",
    )
    p.add_argument("--images", help="image folder of --gt (to run a model)")
    p.add_argument(
        "--boxes",
        "--detections",
        dest="boxes",
        help="person boxes from a COCO detections JSON (default: GT); scored beside GT boxes",
    )
    p.add_argument(
        "--detect",
        action="store_true",
        help="find the people with the person detector; scored beside GT boxes",
    )
    add_detector_options(p, score_threshold=EVALUATION_SCORE_THRESHOLD)
    add_pose_options(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument(
        "--save-results", help="write the predictions as COCO results JSON (with --onnx)"
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--keypoints", help="comma-separated subset of keypoint names to score")
    p.add_argument("--json", help="also write the numbers to this file")
    p.set_defaults(func=cmd_evaluate)
