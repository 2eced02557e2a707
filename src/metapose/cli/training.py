"""``metapose train`` and ``meta``: supervised training and Reptile (``adapt``: :mod:`.adapt`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    check_resume_of,
    initial_model,
    metrics_line,
    resolve_device,
    run_config,
    run_kept,
    step_bar,
)
from metapose.config import (
    CocoFolderConfig,
    MetaRunConfig,
    SourceConfig,
    TrainRunConfig,
    replace,
    save_config,
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

        def validate(m: TopDownModel) -> dict[str, float]:
            return evaluate(torch_estimator(m, options), val_set).as_dict()

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


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
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
