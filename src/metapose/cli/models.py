"""``metapose import-weights`` and ``zoo``: weights from other frameworks, bundled models."""

from __future__ import annotations

import argparse

from metapose.cli.common import (
    Commands,
)
from metapose.config import CODEC_MODES, CodecConfig
from metapose.models.weights import IMPORT_FORMATS


def cmd_import_weights(args: argparse.Namespace) -> int:
    from metapose.models.weights import import_checkpoint

    input_size = None
    if args.input_size:
        w, _, h = args.input_size.partition("x")
        input_size = (int(w), int(h))
    codec = None
    if args.crop is not None or args.encoding is not None or args.dark:
        codec = CodecConfig(
            crop=args.crop or "simplebaseline",
            encoding=args.encoding or "simplebaseline",
            dark=args.dark,
        )
    from metapose.config import CocoFolderConfig
    from metapose.data.codec import HeatmapCodec
    from metapose.training.sources import calibration_batches

    coco = [CocoFolderConfig(args.calibrate, args.calibrate_images)] if args.calibrate else []
    path, report, unfolded = import_checkpoint(
        args.src,
        args.format,
        args.out,
        input_size=input_size,
        codec=codec,
        strict=not args.allow_partial,
        init_seed=args.seed,
        compact=args.compact,
        calibration=lambda config: calibration_batches(HeatmapCodec.for_model(config), coco),
    )
    print(report.summary())
    if unfolded:
        where = args.calibrate or "synthetic rgb people (give --calibrate for real ones)"
        print(f"folded BatchNorm: {unfolded} layers given the statistics of crops of {where}")
    print(f"checkpoint: {path}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from metapose.models.zoo import ZOO

    rows = [("name", "architecture", "COCO AP (published)", "AP measured here", "licence")]
    for m in ZOO.values():
        measured = "-" if m.measured_ap is None else f"{m.measured_ap:.3f}"
        rows.append((m.name, m.architecture, f"{m.published_ap:.3f}", measured, m.licence))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        "\nPublished AP: COCO val2017, GT boxes, no flip (the publisher's). Measured: "
        "metapose's pipeline (UDP + DARK, flip test) on 79 COCO val2017 images "
        "(data/coco/mini). Every --checkpoint option takes these names."
    )
    if args.verbose_sources:
        for m in ZOO.values():
            print(f"{m.name}: {m.source}; {m.path}")
    return 0


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    p = sub.add_parser(
        "import-weights",
        help="torchvision / SimpleBaseline / MMPose / ONNX / ncnn weights -> checkpoint",
    )
    p.add_argument(
        "src",
        help=".pth (loaded with weights_only=True), .safetensors, .onnx, or an ncnn .param "
        "(its .bin beside it)",
    )
    p.add_argument(
        "--format",
        choices=IMPORT_FORMATS,
        help="how the file names its tensors (default: from the suffix for .onnx and .param)",
    )
    p.add_argument("--out", required=True, help="metapose checkpoint (.safetensors)")
    p.add_argument(
        "--crop",
        choices=CODEC_MODES,
        help="the crop affine the weights were trained with (default: simplebaseline)",
    )
    p.add_argument(
        "--encoding",
        choices=CODEC_MODES,
        help="the heatmap encoding the weights were trained with (default: simplebaseline)",
    )
    p.add_argument("--dark", action="store_true", help="the weights were meant for DARK decoding")
    p.add_argument("--compact", action="store_true", help="store float16-exact tensors as float16")
    p.add_argument(
        "--calibrate",
        help="COCO JSON whose people give BatchNorm layers folded by the file their statistics "
        "back, so the model trains like the original (default: synthetic people)",
    )
    p.add_argument("--calibrate-images", help="image folder of --calibrate")
    p.add_argument(
        "--input-size", help="WxH, e.g. 192x256 (default: from the file name, else 192x256)"
    )
    p.add_argument("--allow-partial", action="store_true", help="accept missing/mismatched keys")
    p.add_argument("--seed", type=int, default=0, help="initialises what the file does not hold")
    p.set_defaults(func=cmd_import_weights)

    p = sub.add_parser("zoo", help="list the bundled COCO-trained models")
    p.add_argument("--sources", dest="verbose_sources", action="store_true", help="origin, file")
    p.set_defaults(func=cmd_zoo)
