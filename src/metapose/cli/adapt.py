"""``metapose adapt``: the few-shot fine-tune of a checkpoint on labelled images of a new domain,
with a verdict on a held-out split (paired, per person) before anything is written."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    id_range,
    keypoint_names,
    metrics_line,
    resolve_device,
    run_config,
)
from metapose.cli.unlabelled import (
    adapt_with_unlabelled_images,
    add_unlabelled_arguments,
    semi_config,
)
from metapose.config import AdaptConfig
from metapose.config.training import LrSchedule
from metapose.evaluation.coco import EvalResult

if TYPE_CHECKING:
    from metapose.data.coco import CocoDataset
    from metapose.device import DeviceOptions
    from metapose.models import TopDownModel
    from metapose.training.adapt import AdaptResult

CHECKPOINT_NAME = "model.safetensors"  # the file written when --out is a folder
CONFIDENCE = 0.95
# The left/right check looks at this many of the shots: enough to see a file-wide swap, cheap
# beside the fine-tune when every image of a large label file is a shot.
SIDE_CHECK_IMAGES = 100


def out_path(out: str) -> Path:
    """``--out``: a folder (ends with ``/`` or exists as one) gets ``model.safetensors`` inside;
    anything else is the file, ``.safetensors`` added when it has another suffix."""
    path = Path(out)
    if out.endswith(("/", "\\")) or path.is_dir():
        return path / CHECKPOINT_NAME
    return path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")


@dataclass(frozen=True)
class Verdict:
    """The adapted model against the start on the same held-out people."""

    mean: float  # mean per-person OKS difference, after - before
    low: float
    high: float
    people: int
    ap_before: float
    ap_after: float

    @property
    def worse(self) -> bool:
        return self.mean < 0

    @property
    def clear(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def lines(self) -> list[str]:
        word = "worse" if self.worse else "better"
        if not self.clear:
            word += " (within noise: the interval includes 0)"
        ci = f"{CONFIDENCE:.0%} interval {self.low:+.4f} to {self.high:+.4f}"
        return [
            f"change: AP {self.ap_after - self.ap_before:+.3f}; per-person OKS "
            f"{self.mean:+.4f} ({ci}; paired t over the {self.people} people of the held-out "
            "split, each posed in its ground-truth box by both models)",
            f"verdict: {word}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "oks_change": self.mean,
            "oks_change_interval": [self.low, self.high],
            "confidence": CONFIDENCE,
            "people": self.people,
            "ap_before": self.ap_before,
            "ap_after": self.ap_after,
            "method": "paired t-interval of per-person OKS differences (GT boxes)",
        }


def loss_line(result: AdaptResult, most: int = 20) -> str:
    """The training loss as one line: the mean of each epoch, or of each run of steps when there
    would be more than ``most`` epochs (distillation sees each unlabelled person once, so its
    "epoch" is a step)."""
    from metapose.training.adapt import run_means

    period = max(1, result.steps_per_epoch)
    steps = len(result.losses)
    label = "loss per epoch"
    if steps > most * period:
        period = -(-steps // most)
        label = f"loss per {period} steps"
    return f"{label}: " + " ".join(f"{v:.2e}" for v in run_means(result.losses, period))


def paired_verdict(before: EvalResult, after: EvalResult) -> Verdict:
    from metapose.experiment.statistics import mean_ci

    assert before.person_oks is not None and after.person_oks is not None
    start = dict(before.person_oks)
    diffs = [oks - start[ann] for ann, oks in after.person_oks if ann in start]
    estimate = mean_ci(diffs, CONFIDENCE)
    half = estimate.half_width if math.isfinite(estimate.half_width) else math.inf
    return Verdict(
        estimate.mean, estimate.mean - half, estimate.mean + half, estimate.n, before.ap, after.ap
    )


def _adapt_config(args: argparse.Namespace) -> AdaptConfig:
    from metapose.config import replace

    config = run_config(args.config, AdaptConfig)
    return replace(
        config,
        optimizer=replace(
            config.optimizer,
            **{k: v for k, v in (("name", args.optimizer), ("lr", args.lr)) if v is not None},
        ),
        **{
            k: v
            for k, v in (
                ("epochs", args.epochs),
                ("batch_size", args.batch_size),
                ("lr_schedule", args.lr_schedule),
                ("l2sp", args.l2sp),
            )
            if v is not None
        },
        head_only=args.head_only or config.head_only,
    )


def cmd_adapt(args: argparse.Namespace) -> int:
    from metapose.config import to_dict
    from metapose.data.coco import load_coco
    from metapose.data.codec import HeatmapCodec
    from metapose.data.keypoint_names import load_keypoint_map
    from metapose.device import DeviceOptions
    from metapose.evaluation.coco import keypoint_indices
    from metapose.evaluation.evaluate import make_eval_set
    from metapose.evaluation.few_shot import adapt_and_score, split_by_ids
    from metapose.models.checkpoint import load_checkpoint, save_checkpoint
    from metapose.skeleton import COCO17
    from metapose.training.few_shot import choose_shots

    say = (lambda *a: None) if args.quiet else print
    progress = TqdmProgress(enabled=not args.quiet)
    device = resolve_device(args.device)
    options = DeviceOptions(device)
    # The fine-tune's numbers depend on the weights' memory layout, which an evaluation sets
    # (channels_last): set it first, so that training is bit-identical with or without --eval.
    model = load_checkpoint(args.checkpoint, device).model
    options.prepare(model)
    codec = HeatmapCodec.for_model(model.config)
    keypoint_map = load_keypoint_map(args.keypoint_map) if args.keypoint_map else None
    if args.data is None and args.unlabelled is None:
        raise SystemExit("error: give --data (labelled shots), --unlabelled (images), or both")
    if args.data is None and (args.eval_ids or args.pool_ids or args.shots is not None):
        raise SystemExit("error: --eval-ids, --pool-ids and --shots choose images of --data")
    data = (
        None
        if args.data is None
        else load_coco(args.data, args.images, check_images="decode", keypoint_map=keypoint_map)
    )
    config = _adapt_config(args)
    if args.eval and args.eval_ids:
        raise SystemExit("error: give --eval (another file) or --eval-ids (of --data), not both")
    keypoints = keypoint_names(args.keypoints)
    if keypoints is not None:
        keypoint_indices(
            COCO17 if data is None else data.skeleton, keypoints
        )  # unknown names: one line, before training
        if not (args.eval or args.eval_ids):
            raise SystemExit("error: --keypoints chooses what is scored: give --eval or --eval-ids")
    held_out = id_range(args.eval_ids)
    pool_ids: list[int] | None = None
    eval_ids: list[int] = []
    shots: list[int] = []  # K = 0 without --data: unlabelled images only
    if data is not None:
        pool_ids, eval_ids = split_by_ids(data, id_range(args.pool_ids), held_out)
        if held_out is not None and not eval_ids:
            raise SystemExit(f"error: --eval-ids {args.eval_ids}: no image of --data in this range")
        shots = choose_shots(data, args.shots, args.seed, pool=pool_ids)  # None: every image
    overlap = sorted(set(shots) & set(eval_ids))
    if overlap:
        raise SystemExit(
            f"error: --eval-ids {args.eval_ids} overlaps the shots (image ids {overlap[:5]}): "
            "choose disjoint --pool-ids and --eval-ids"
        )
    target = out_path(args.out)
    data_name = "no labels" if data is None else str(data.annotation_file)
    say(f"adapting {args.checkpoint} on {len(shots)} labelled images of {data_name}")
    semi = None if args.unlabelled is None else semi_config(args)
    if semi is not None:
        say(f"with unlabelled images of {args.unlabelled} ({semi.method})")
    if data is not None:
        _warn_if_swapped(model, options, data, shots)
    test = None
    if args.eval or held_out is not None:
        held_set = (
            load_coco(args.eval, args.eval_images, check_images="decode", keypoint_map=keypoint_map)
            if args.eval or data is None
            else data.subset(eval_ids)
        )
        test = make_eval_set(held_set, codec, keypoints=keypoints)
    semi_extra: dict[str, Any] = {}
    tune = None
    if semi is not None:

        def tune(m: TopDownModel) -> AdaptResult | None:
            assert semi is not None
            adapted, extra = adapt_with_unlabelled_images(
                args, semi, m, data, shots, config, options, codec, progress
            )
            semi_extra.update(extra)
            return adapted

    job = adapt_and_score(
        model,
        data,
        shots,
        config,
        options,
        test,
        seed=args.seed,
        score_before=True,
        progress=progress,
        tune=tune,
    )
    if job.adapt is not None and job.adapt.losses:
        say(loss_line(job.adapt))
    verdict = None
    if job.before is not None and job.after is not None:
        say(f"before: {metrics_line(job.before.as_dict())}")
        say(f"after:  {metrics_line(job.after.as_dict())}")
        verdict = paired_verdict(job.before, job.after)
        for line in verdict.lines():
            print(line)
    else:
        print("no held-out split (--eval or --eval-ids): the adapted model is not checked")
    if verdict is not None and verdict.worse and not args.keep_worse:
        kept = f"; {target} is left as it was" if target.exists() else ""
        print(
            f"not written: the adapted model is worse than {args.checkpoint} on the held-out "
            f"split (--keep-worse writes it anyway{kept})"
        )
        return 1
    path = save_checkpoint(
        target,
        model,
        metrics={} if job.after is None else job.after.as_dict(),
        extra={
            "adapted_from": str(args.checkpoint),
            "data": data_name,
            "shot_image_ids": list(shots),
            "adapt": to_dict(config),
            "seed": args.seed,
            "epoch_losses": list(job.epoch_losses),
            "scored_keypoints": None if keypoints is None else list(keypoints),
            "metrics_before": {} if job.before is None else job.before.as_dict(),
            "verdict": None if verdict is None else verdict.as_dict(),
            **semi_extra,
        },
    )
    print(f"adapted model written to {path}")
    return 0


def _warn_if_swapped(
    model: TopDownModel, options: DeviceOptions, data: CocoDataset, shots: list[int]
) -> None:
    """Warn when most labelled people of (at most ``SIDE_CHECK_IMAGES``) shots fit the model's
    poses better with left and right exchanged: a keypoint naming mix-up in the label file."""
    from metapose.evaluation.few_shot import isolated_rng
    from metapose.evaluation.label_check import check_sides
    from metapose.inference.estimators import torch_estimator

    with isolated_rng(options.device):
        sides = check_sides(torch_estimator(model, options), data.subset(shots[:SIDE_CHECK_IMAGES]))
    if sides.mostly_swapped:
        print(
            f"warning: {sides.swapped} of {sides.people} labelled people in the shots fit the "
            "model's poses better with left and right exchanged: check the keypoint names of "
            f"{data.annotation_file} (image ids {list(sides.swapped_image_ids[:5])})",
            file=sys.stderr,
        )


def register(sub: Commands) -> None:
    """Add ``adapt`` to the ``metapose`` parser."""
    defaults = AdaptConfig()
    p = sub.add_parser(
        "adapt",
        help="fine-tune a checkpoint on labelled images of a new domain",
        description="Fine-tune --checkpoint on the labelled images of --data (all of them, or "
        "--shots K drawn by --seed). With a held-out split (--eval or --eval-ids) both models "
        "are scored on it and compared person by person; a worse model is reported and not "
        "written (exit status 1) unless --keep-worse.",
    )
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument(
        "--data",
        help="labels of the shot pool: COCO keypoints JSON, CVAT's COCO Keypoints export or "
        "Label Studio's JSON/COCO export (may be left out with --unlabelled: K = 0)",
    )
    p.add_argument("--images", help="image folder of --data")
    p.add_argument(
        "--keypoint-map",
        help="JSON object mapping the label file's keypoint names to COCO names "
        '(e.g. {"LSho": "left_shoulder", "tail": null}) where the built-in synonyms do not',
    )
    p.add_argument(
        "--shots", type=int, help="K: draw K images from the pool (default: every labelled image)"
    )
    p.add_argument("--seed", type=int, default=0, help="which K images are drawn; batch order")
    p.add_argument("--pool-ids", help="draw shots only from this image id range, e.g. 1-4000")
    p.add_argument(
        "--config",
        help="AdaptConfig YAML (optimizer, epochs, batch_size, head_only); "
        "the options below override it",
    )
    p.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    p.add_argument("--lr", type=float, help=f"default {defaults.optimizer.lr:g}")
    p.add_argument(
        "--optimizer", choices=("adam", "sgd"), help=f"default {defaults.optimizer.name}"
    )
    p.add_argument(
        "--lr-schedule",
        choices=get_args(LrSchedule),
        help=f"constant, or cosine: falling to 0 over the steps (default {defaults.lr_schedule})",
    )
    p.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    p.add_argument(
        "--l2sp",
        type=float,
        metavar="STRENGTH",
        help="pull the weights towards the start (L2-SP), so the model forgets less of ordinary "
        "photos at a small cost on the domain; on LSPet with --unlabelled, 1e-3 kept about 4 "
        f"more COCO AP for about 1 less LSPet AP (default {defaults.l2sp:g})",
    )
    p.add_argument("--head-only", action="store_true", help="freeze the backbone")
    p.add_argument("--eval", help="labels to score before and after adaptation")
    p.add_argument("--eval-images", help="image folder of --eval")
    p.add_argument(
        "--eval-ids",
        help="or: score on this image id range of --data (e.g. 4001-5000); "
        "it must not overlap the shots",
    )
    p.add_argument(
        "--keypoints",
        help="comma-separated subset of keypoint names to score with --eval or --eval-ids "
        "(as an experiment target's keypoints; default: all)",
    )
    p.add_argument(
        "--keep-worse",
        action="store_true",
        help="write the adapted model even when it scores worse than the start",
    )
    p.add_argument(
        "--out",
        required=True,
        help=f"the adapted checkpoint: a .safetensors file, or a folder (ending in / or "
        f"existing) to hold {CHECKPOINT_NAME}",
    )
    add_unlabelled_arguments(p)
    p.add_argument("--quiet", action="store_true", help="only the verdict and the path written")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_adapt)
