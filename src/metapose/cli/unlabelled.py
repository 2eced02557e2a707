"""``metapose adapt --unlabelled``: the method's settings from the flags, the people in the
unlabelled images (a COCO JSON's boxes, the bundled detector's or whole images) and the
adaptation on them plus the shots (:func:`metapose.inference.semi_adapt.adapt_with_unlabelled`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from metapose.cli.common import TqdmProgress
from metapose.config import AdaptConfig
from metapose.config.training import FEW_SHOTS_FOR_TEACHER, LrSchedule, SemiConfig, SemiMethod
from metapose.errors import DataError

if TYPE_CHECKING:
    from metapose.training.adapt import AdaptResult


def add_unlabelled_arguments(p: argparse.ArgumentParser) -> None:
    """``--unlabelled`` and the semi-supervised method's flags."""
    semi = SemiConfig()
    p.add_argument(
        "--unlabelled",
        help="unlabelled images of the domain, learnt from without labels: a folder, a list "
        "file (one path a line) or a COCO JSON of person boxes",
    )
    p.add_argument("--unlabelled-images", help="image folder of a --unlabelled COCO JSON")
    p.add_argument(
        "--unlabelled-boxes",
        choices=("detect", "whole"),
        default="detect",
        help="people in --unlabelled images without a COCO JSON: the bundled person detector's "
        "boxes (default) or one whole-image box per image (photos cropped around one person)",
    )
    p.add_argument(
        "--semi",
        choices=get_args(SemiMethod),
        help=f"method with --unlabelled (default {semi.method})",
    )
    p.add_argument(
        "--teacher",
        help=f"distill's teacher: a zoo name or checkpoint file (default {semi.teacher})",
    )
    p.add_argument(
        "--teacher-as-is",
        action="store_true",
        help="distill: label with the teacher as it is, without first fine-tuning it on the "
        f"shots (steadier with fewer than {FEW_SHOTS_FOR_TEACHER} shots)",
    )
    p.add_argument(
        "--teacher-scales",
        type=float,
        nargs="+",
        metavar="FACTOR",
        help="distill's multi-scale teacher: box scale factors whose predictions are averaged "
        f"(default {' '.join(map(str, semi.teacher_scales))}; e.g. 0.85 1 1.15)",
    )
    p.add_argument(
        "--semi-steps",
        type=int,
        help=f"mean-teacher or distillation steps (default {semi.steps})",
    )
    p.add_argument(
        "--semi-lr",
        type=float,
        help="learning rate of those steps (default: --lr, the shots' fine-tune's)",
    )
    p.add_argument(
        "--semi-schedule",
        choices=get_args(LrSchedule),
        help="learning-rate schedule of those steps (default: --lr-schedule, the shots' "
        "fine-tune's)",
    )
    p.add_argument(
        "--semi-weight",
        type=float,
        help=f"mean teacher: weight of the unlabelled loss (default {semi.weight})",
    )
    p.add_argument(
        "--ema-decay", type=float, help=f"mean teacher's EMA decay (default {semi.ema_decay})"
    )
    p.add_argument(
        "--confidence",
        type=float,
        help=f"teacher peak below which a joint is not learnt (default {semi.threshold})",
    )


def semi_config(args: argparse.Namespace) -> SemiConfig:
    options: tuple[tuple[str, Any], ...] = (
        ("method", args.semi),
        ("steps", args.semi_steps),
        ("lr", args.semi_lr),
        ("lr_schedule", args.semi_schedule),
        ("weight", args.semi_weight),
        ("ema_decay", args.ema_decay),
        ("threshold", args.confidence),
        ("teacher", args.teacher),
        ("teacher_scales", None if args.teacher_scales is None else tuple(args.teacher_scales)),
        ("teacher_adapt", False if args.teacher_as_is else None),
    )
    semi = SemiConfig(**{k: v for k, v in options if v is not None})
    for flag, given in (
        ("--teacher-scales", args.teacher_scales is not None),
        ("--teacher-as-is", args.teacher_as_is),
    ):
        if given and semi.method != "distill":
            print(f"warning: {flag} is distill's; --semi {semi.method} ignores it", file=sys.stderr)
    for flag, value in (("--semi-lr", args.semi_lr), ("--semi-schedule", args.semi_schedule)):
        if value is not None and semi.method == "adabn":
            print(
                f"warning: {flag} sets the steps on unlabelled people; adabn takes none and "
                "ignores it",
                file=sys.stderr,
            )
    return semi


_DETECT_ORDER_STREAM = 4  # the order the detector reads unlabelled images in, beside the seed


def unlabelled_people(
    args: argparse.Namespace, semi: SemiConfig, progress: TqdmProgress
) -> list[Any]:
    """``--unlabelled``'s people: a COCO JSON's boxes, else the bundled detector's
    (``--unlabelled-boxes detect``, the default) or one whole-image box a photo (``whole``).

    The detector reads the images in an order drawn by ``--seed`` and stops once as many of them
    as the method sees crops (``semi.crops_seen``) have somebody in them: the people drawn from
    them then come from about as many photos as when every image is read, and a folder of 100,000
    video frames costs no more detector time than one of a few thousand."""
    import numpy as np

    from metapose.data.unlabelled import is_coco_file, unlabelled_files, unlabelled_instances
    from metapose.inference.detector import PersonDetector, people_in_files

    boxes = None
    if args.unlabelled_boxes == "detect" and not is_coco_file(args.unlabelled):
        files = unlabelled_files(args.unlabelled)
        order = np.random.default_rng((args.seed, _DETECT_ORDER_STREAM)).permutation(len(files))
        advance = progress.stage(
            f"find people in up to {len(files)} unlabelled images "
            f"(until {semi.crops_seen} have somebody)",
            len(files),
        )
        boxes = people_in_files(
            PersonDetector(),
            [files[int(i)] for i in order],
            on_image=advance,
            enough=semi.crops_seen,
        )
        progress.close_stage()
        if len(boxes) < len(files) and not args.quiet:
            print(
                f"the detector read {len(boxes)} of {len(files)} unlabelled images (drawn by "
                f"--seed), {semi.crops_seen} of them with somebody, as many as {semi.method} "
                f"sees crops: {sum(len(found) for found in boxes.values())} people"
            )
        nobody = sum(1 for found in boxes.values() if not found)
        if nobody:
            print(
                f"warning: the detector found nobody in {nobody} of {len(boxes)} unlabelled "
                "images it read; they are not used",
                file=sys.stderr,
            )
    people = unlabelled_instances(args.unlabelled, image_dir=args.unlabelled_images, boxes=boxes)
    if not people:
        raise DataError(
            Path(args.unlabelled),
            "the detector found no person in any unlabelled image "
            "(--unlabelled-boxes whole: one person per image)",
        )
    return people


def adapt_with_unlabelled_images(
    args: argparse.Namespace,
    semi: SemiConfig,
    model: Any,
    data: Any,
    shots: list[int],
    config: AdaptConfig,
    options: Any,
    codec: Any,
    progress: TqdmProgress,
) -> tuple[AdaptResult | None, dict[str, Any]]:
    """``--unlabelled``: the shots (possibly none) plus unlabelled people by ``semi`` (the
    flags' :func:`semi_config`; :func:`metapose.inference.semi_adapt.adapt_with_unlabelled`);
    the fine-tune on the shots (None without shots) and what to save beside the checkpoint."""
    from metapose.config import to_dict
    from metapose.inference.semi_adapt import adapt_with_unlabelled
    from metapose.training.few_shot import support_set

    people = unlabelled_people(args, semi, progress)
    support = None
    if shots:
        support = support_set(data, shots, codec, seed=args.seed)
    result = adapt_with_unlabelled(
        model, support, people, config, semi, options, seed=args.seed, progress=progress
    )
    return result.shots, {
        "unlabelled": str(args.unlabelled),
        "unlabelled_people": len(people),
        "semi": to_dict(semi),
        "semi_losses": list(result.losses),
    }
