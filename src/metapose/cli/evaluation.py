"""``metapose evaluate``: OKS AP/AR (and PCK) of results or of a model against ground truth."""

from __future__ import annotations

import argparse

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    codec_override,
    keypoint_names,
    resolve_device,
)
from metapose.config import CODEC_MODES
from metapose.inference.predict import PredictOptions


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metapose.evaluation.coco import evaluate_oks, format_eval_result

    keypoints = keypoint_names(args.keypoints)
    given = [x for x in (args.results, args.onnx, args.checkpoint) if x is not None]
    if len(given) != 1:
        raise SystemExit("error: give exactly one of --results JSON, --onnx model or --checkpoint")
    if args.results:
        # Scoring results needs the annotations only, never the images.
        result = evaluate_oks(args.gt, args.results, keypoints=keypoints)
    else:
        from metapose.data.coco import load_coco
        from metapose.device import DeviceOptions
        from metapose.evaluation.evaluate import evaluate
        from metapose.inference.estimators import estimator_from_checkpoint, estimator_from_onnx
        from metapose.inference.predict import PredictOptions

        # Decoded once here so that an image whose size disagrees with the file is named.
        gt = load_coco(args.gt, args.images, require_trainable=False, check_images="decode")
        if args.onnx:
            estimator = estimator_from_onnx(args.onnx, threads=args.threads)
        else:
            options = DeviceOptions(resolve_device(args.device))
            estimator = estimator_from_checkpoint(
                args.checkpoint, options, codec=codec_override(args)
            )
        result = evaluate(
            estimator,
            gt,
            boxes=args.detections,
            keypoints=keypoints,
            options=PredictOptions(flip=not args.no_flip, batch_size=args.batch_size),
            progress=TqdmProgress(not args.quiet),
            results_path=args.save_results,
        )
    print(format_eval_result(result))
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
    p.add_argument("--detections", help="person boxes from a COCO detections JSON (default: GT)")
    p.add_argument("--no-flip", action="store_true", help="no flip test")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=PredictOptions().batch_size)
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument(
        "--save-results", help="write the predictions as COCO results JSON (with --onnx)"
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--keypoints", help="comma-separated subset of keypoint names to score")
    p.add_argument("--json", help="also write the numbers to this file")
    p.set_defaults(func=cmd_evaluate)
