"""``metapose predict`` and ``export``: poses on images, and the ONNX export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    resolve_device,
)
from metapose.config import check_seed
from metapose.data.detections import BOX_SCORE_THRESHOLD
from metapose.data.viz import DRAW_THRESHOLD
from metapose.inference.export import DEFAULT_OPSET
from metapose.inference.predict import PredictOptions


def cmd_predict(args: argparse.Namespace) -> int:
    from metapose.device import DeviceOptions
    from metapose.inference.estimators import estimator_from_checkpoint, estimator_from_onnx
    from metapose.inference.predict import PredictOptions, plan_prediction, predict_images

    if (args.checkpoint is None) == (args.onnx is None):
        raise SystemExit("error: give exactly one of --checkpoint or --onnx")
    if (args.boxes is None) == (not args.whole_image):
        raise SystemExit("error: give exactly one of --boxes JSON or --whole-image")
    plan = plan_prediction(
        args.inputs,
        boxes=args.boxes,
        whole_image=args.whole_image,
        box_score_threshold=args.box_threshold,
    )
    if args.onnx:
        estimator = estimator_from_onnx(args.onnx, threads=args.threads)
    else:
        estimator = estimator_from_checkpoint(
            args.checkpoint, DeviceOptions(resolve_device(args.device))
        )
    out = Path(args.out)
    summary = predict_images(
        plan,
        estimator,
        out / "results.json",
        overlay_dir=None if args.no_overlays else out / "overlays",
        options=PredictOptions(
            batch_size=args.batch_size,
            flip=not args.no_flip,
            draw_threshold=args.threshold,
            oks_nms=not args.no_nms,
            strict=args.strict,
        ),
        progress=TqdmProgress(not args.quiet),
    )
    for err in summary.skipped:
        print(f"skipped: {err}", file=sys.stderr)
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image(s) (--strict makes this an error)")
    print(f"{summary.people} people on {summary.images} images -> {summary.results_path}")
    if summary.overlays:
        print(f"overlays: {out / 'overlays'}")
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
    p = sub.add_parser("predict", help="poses on your images: COCO results JSON and overlay PNGs")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", help=f"metapose checkpoint ({CHECKPOINT_HELP})")
    p.add_argument("--onnx", help="or: an exported ONNX model (runs on onnxruntime)")
    p.add_argument("--boxes", help="person boxes: COCO detections JSON or annotations JSON")
    p.add_argument("--whole-image", action="store_true", help="one person box = the whole image")
    p.add_argument(
        "--box-threshold", type=float, default=BOX_SCORE_THRESHOLD, help="minimum detection score"
    )
    p.add_argument(
        "--threshold", type=float, default=DRAW_THRESHOLD, help="keypoint score drawn at least"
    )
    p.add_argument("--out", required=True, help="folder for results.json and overlays/")
    p.add_argument("--batch-size", type=int, default=PredictOptions().batch_size)
    p.add_argument("--no-flip", action="store_true", help="no flip test")
    p.add_argument("--no-nms", action="store_true", help="keep duplicate detections")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument(
        "--strict", action="store_true", help="stop at an unreadable image instead of skipping it"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, checked against PyTorch")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--check-data", help="also compare on real crops of this COCO JSON")
    p.add_argument("--check-images", help="image folder of --check-data")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parity inputs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)
