"""``metapose train``, ``meta`` and ``adapt``: supervised training, Reptile and the few-shot
fine-tune."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    check_resume_of,
    id_range,
    initial_model,
    keypoint_names,
    metrics_line,
    resolve_device,
    run_config,
    run_kept,
    step_bar,
)
from metapose.config import (
    AdaptConfig,
    CocoFolderConfig,
    MetaRunConfig,
    SourceConfig,
    TrainRunConfig,
    replace,
    save_config,
    to_dict,
)
from metapose.data.codec import HeatmapCodec
from metapose.models import TopDownModel

RunConfig = TypeVar("RunConfig", TrainRunConfig, MetaRunConfig)


def _start_run(
    args: argparse.Namespace,
    cls: type[RunConfig],
    with_steps: Callable[[RunConfig, int], RunConfig],
) -> tuple[RunConfig, torch.device, TopDownModel, HeatmapCodec]:
    """``metapose train`` / ``meta``: the run config with ``--data`` and ``--steps`` applied,
    the device, the initial model and its codec."""
    cfg = run_config(args.config, cls)
    if args.data:
        folder = CocoFolderConfig(annotations=args.data, image_dir=args.images)
        cfg = replace(cfg, data=SourceConfig(domains=(), coco=(folder,)))
    if args.steps:
        cfg = with_steps(cfg, args.steps)
    device = resolve_device(args.device)
    model = initial_model(cfg.model, args.init, cfg.seed, device)
    return cfg, device, model, HeatmapCodec.for_model(model.config)


def _run_folder(args: argparse.Namespace, cfg: TrainRunConfig | MetaRunConfig) -> Path:
    """``--out``, checked for a resumable run of another config, with the config saved in it."""
    out = Path(args.out)
    check_resume_of(out, cfg, args)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from metapose.config import replace
    from metapose.data.coco import load_coco
    from metapose.device import DeviceOptions
    from metapose.evaluation.evaluate import evaluate, make_eval_set
    from metapose.inference.estimators import torch_estimator
    from metapose.inference.predict import PredictOptions
    from metapose.training.sources import batches_for
    from metapose.training.train import train

    cfg, device, model, codec = _start_run(
        args, TrainRunConfig, lambda c, n: replace(c, train=replace(c.train, steps=n))
    )
    stream = batches_for(
        cfg.data,
        codec,
        augment=cfg.augment,
        batch_size=cfg.train.batch_size,
        seed=cfg.seed,
        workers=cfg.workers,
    )
    validate = None
    if cfg.val is not None:
        val_set = make_eval_set(
            load_coco(cfg.val.annotations, cfg.val.image_dir, check_images="decode"), codec
        )
        options = DeviceOptions(device)

        flip = PredictOptions(flip=model.config.codec.flip_test)

        def validate(m: TopDownModel) -> dict[str, float]:
            return evaluate(torch_estimator(m, options), val_set, options=flip).as_dict()

    out = _run_folder(args, cfg)
    bar, on_step = step_bar(cfg.train.steps, "train")
    history = train(
        model,
        stream,
        cfg.train,
        device,
        out_dir=out,
        resume=not args.no_resume,
        run_config=cfg,
        on_step=on_step,
        validate=validate,
        validate_every=cfg.validate_every,
        init=args.init,
    )
    bar.close()
    print(f"trained {history.images_seen} images; final loss {history.steps[-1].loss:.3e}")
    for metrics in history.evals[-1:]:
        print(f"validation at step {metrics['step']:.0f}: {metrics_line(metrics)}")
    print(f"checkpoint: {out / 'model.safetensors'}")
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    from metapose.config import replace
    from metapose.training.meta import meta_train
    from metapose.training.sources import batches_for

    cfg, device, model, codec = _start_run(
        args, MetaRunConfig, lambda c, n: replace(c, meta=replace(c.meta, meta_steps=n))
    )
    tasks = batches_for(
        cfg.data,
        codec,
        augment=cfg.augment,
        task_augment=cfg.task_augment,
        batch_size=cfg.meta.batch_size,
        seed=cfg.seed,
        workers=cfg.workers,
    )
    out = _run_folder(args, cfg)
    bar, on_step = step_bar(cfg.meta.meta_steps, "Reptile")
    history = meta_train(
        model,
        tasks,
        cfg.meta,
        device,
        out_dir=out,
        resume=not args.no_resume,
        run_config=cfg,
        on_step=on_step,
        init=args.init,
    )
    bar.close()
    print(f"meta-trained on {history.images_seen} images ({cfg.meta.meta_steps} meta steps)")
    print(f"checkpoint: {out / 'model.safetensors'}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from metapose.config import AdaptConfig, replace
    from metapose.data.coco import load_coco
    from metapose.data.codec import HeatmapCodec
    from metapose.device import DeviceOptions
    from metapose.evaluation.coco import keypoint_indices
    from metapose.evaluation.evaluate import evaluate, make_eval_set
    from metapose.inference.estimators import torch_estimator
    from metapose.models.checkpoint import load_checkpoint, save_checkpoint
    from metapose.training.few_shot import choose_shots, fine_tune_on_shots
    from metapose.training.run_folder import check_finite_weights

    device = resolve_device(args.device)
    options = DeviceOptions(device)
    model = load_checkpoint(args.checkpoint, device).model
    codec = HeatmapCodec.for_model(model.config)
    data = load_coco(args.data, args.images, check_images="decode")
    config = run_config(args.config, AdaptConfig)
    config = replace(
        config,
        optimizer=replace(
            config.optimizer,
            **{k: v for k, v in (("name", args.optimizer), ("lr", args.lr)) if v is not None},
        ),
        **{
            k: v
            for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size))
            if v is not None
        },
        head_only=args.head_only or config.head_only,
    )
    if args.eval and args.eval_ids:
        raise SystemExit("error: give --eval (another file) or --eval-ids (of --data), not both")
    keypoints = keypoint_names(args.keypoints)
    if keypoints is not None:
        keypoint_indices(data.skeleton, keypoints)  # unknown names: one line, before training
        if not (args.eval or args.eval_ids):
            raise SystemExit("error: --keypoints chooses what is scored: give --eval or --eval-ids")
    pool = id_range(args.pool_ids)
    pool_ids = None if pool is None else [i.id for i in data.images if pool[0] <= i.id <= pool[1]]
    held_out = id_range(args.eval_ids)
    eval_ids = [] if held_out is None else [
        i.id for i in data.images if held_out[0] <= i.id <= held_out[1]
    ]
    if held_out is not None and not eval_ids:
        raise SystemExit(f"error: --eval-ids {args.eval_ids}: no image of --data in this range")
    if held_out is not None and pool_ids is None:
        pool_ids = [i.id for i in data.images if i.id not in set(eval_ids)]
    shots = choose_shots(data, args.shots, args.seed, pool=pool_ids)
    overlap = sorted(set(shots) & set(eval_ids))
    if overlap:
        raise SystemExit(
            f"error: --eval-ids {args.eval_ids} overlaps the shots (image ids {overlap[:5]}): "
            "choose disjoint --pool-ids and --eval-ids"
        )
    test = None
    if args.eval or held_out is not None:
        held = (
            load_coco(args.eval, args.eval_images, check_images="decode")
            if args.eval
            else data.subset(eval_ids)
        )
        test = make_eval_set(held, codec, keypoints=keypoints)
        before = evaluate(torch_estimator(model, options), test).as_dict()
        print(f"before: {metrics_line(before)}")
    tuned = fine_tune_on_shots(
        model, data, shots, config, options, codec=codec, seed=args.seed, progress=TqdmProgress()
    )
    result = tuned.adapt
    check_finite_weights(model, len(result.losses))
    print("loss per epoch: " + " ".join(f"{v:.2e}" for v in result.epoch_losses))
    metrics = {}
    if test is not None:
        metrics = evaluate(torch_estimator(model, options), test).as_dict()
        print(f"after:  {metrics_line(metrics)}")
    path = save_checkpoint(
        args.out,
        model,
        metrics=metrics,
        extra={
            "adapted_from": str(args.checkpoint),
            "shot_image_ids": shots,
            "adapt": to_dict(config),
            "epoch_losses": list(result.epoch_losses),
            "scored_keypoints": None if keypoints is None else list(keypoints),
        },
    )
    print(f"checkpoint: {path}")
    return 0


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    adapt_defaults = AdaptConfig()
    p = sub.add_parser(
        "train", help="supervised training (the baseline) on synthetic or COCO-format data"
    )
    p.add_argument(
        "--config", help="TrainRunConfig YAML (defaults: ResNet-50 256x192 on synthetic rgb)"
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, log, config")
    p.add_argument(
        "--data", help="COCO person_keypoints JSON to train on (default: synthetic stream)"
    )
    p.add_argument("--images", help="image folder of --data")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--init", help=f"start from this checkpoint ({CHECKPOINT_HELP})")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--no-resume", action="store_true", help="ignore a training state found in --out"
    )
    p.set_defaults(func=cmd_train, interrupted=run_kept)

    p = sub.add_parser("meta", help="Reptile meta-training of initial weights")
    p.add_argument("--config", help="MetaRunConfig YAML")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--data", help="COCO person_keypoints JSON to draw tasks from (default: synthetic)"
    )
    p.add_argument("--images", help="image folder of --data")
    p.add_argument("--steps", type=int, help="override meta.meta_steps")
    p.add_argument("--init", help=f"start from this checkpoint ({CHECKPOINT_HELP})")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-resume", action="store_true")
    p.set_defaults(func=cmd_meta, interrupted=run_kept)

    adapt_defaults = AdaptConfig()
    p = sub.add_parser("adapt", help="fine-tune a checkpoint on K labelled images of a new domain")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--data", required=True, help="COCO person_keypoints JSON holding the shot pool")
    p.add_argument("--images", help="image folder of --data")
    p.add_argument("--shots", type=int, default=16, help="K: images drawn from the pool")
    p.add_argument("--seed", type=int, default=0, help="which K images are drawn")
    p.add_argument("--pool-ids", help="draw shots only from this image id range, e.g. 1-4000")
    p.add_argument(
        "--config", help="AdaptConfig YAML (optimizer, epochs, batch_size, head_only); "
        "the options below override it"
    )
    p.add_argument("--epochs", type=int, help=f"default {adapt_defaults.epochs}")
    p.add_argument("--lr", type=float, help=f"default {adapt_defaults.optimizer.lr:g}")
    p.add_argument(
        "--optimizer", choices=("adam", "sgd"), help=f"default {adapt_defaults.optimizer.name}"
    )
    p.add_argument("--batch-size", type=int, help=f"default {adapt_defaults.batch_size}")
    p.add_argument("--head-only", action="store_true", help="freeze the backbone")
    p.add_argument("--eval", help="COCO JSON to score before and after adaptation")
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
    p.add_argument("--out", required=True, help="adapted checkpoint (.safetensors)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_adapt)
