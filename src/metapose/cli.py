"""The ``metapose`` command line: the only place that parses argv, prints and draws progress."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from tqdm import tqdm

from metapose.config import CODEC_MODES, CodecConfig, ConfigError, ModelConfig, to_dict
from metapose.errors import CheckFailed, DataError
from metapose.models import TopDownModel
from metapose.models.weights import IMPORT_FORMATS
from metapose.train import StepLog

T = TypeVar("T")

log = logging.getLogger("metapose")


class TqdmProgress:
    """Progress bars for the library's long stages."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        self.close_stage()
        self._bar = tqdm(
            total=total, desc=name, disable=not self.enabled, dynamic_ncols=True, leave=True
        )
        bar = self._bar

        def advance(n: int) -> None:
            bar.update(n)

        return advance

    def close_stage(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the local CUDA device (under torchrun: ``LOCAL_RANK``'s), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but no CUDA device is available")
    return device


# ------------------------------------------------------------------------------ commands


def cmd_synth(args: argparse.Namespace) -> int:
    from metapose.synth.domains import DOMAINS, get_domain
    from metapose.synth.preview import write_previews
    from metapose.synth.writer import write_synth_dataset

    out = Path(args.out)
    if args.preview:
        names = [args.domain] if args.domain else list(DOMAINS)
        for path in write_previews(names, out, seed=args.seed):
            print(f"wrote {path}")
        return 0
    if not args.domain:
        raise SystemExit("error: --domain is required (or use --preview)")
    bar = tqdm(total=args.images, desc=f"synth {args.domain}", dynamic_ncols=True)
    path = write_synth_dataset(
        get_domain(args.domain),
        args.images,
        args.seed,
        out,
        width=args.width,
        height=args.height,
        split=args.split,
        workers=args.workers,
        progress=bar,
    )
    bar.close()
    print(f"wrote {args.images} images and {path}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from metapose.config import ExperimentConfig, load_config
    from metapose.experiment import run_experiment

    cfg = load_config(args.config, ExperimentConfig)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    outcome = run_experiment(cfg, args.out, device, progress=TqdmProgress(not args.quiet))
    minutes = (time.perf_counter() - t0) / 60
    print()
    print(outcome.table)
    for line in outcome.verdicts:
        print(f"  {line}")
    print(f"\nreport: {outcome.report_dir / 'index.html'}   ({minutes:.1f} min on {device})")
    return 0


def _run_config(path: str | None, cls: type[T]) -> T:
    from metapose.config import load_config

    return load_config(path, cls) if path else cls()


def _initial_model(
    model_cfg: ModelConfig, init: str | None, seed: int, device: torch.device
) -> TopDownModel:
    """Weights from ``--init`` (whose own model config wins) or random ones drawn from ``seed``."""
    from metapose.checkpoint import load_checkpoint
    from metapose.models import TopDownModel

    if init:
        loaded = load_checkpoint(init, device)
        if loaded.model.config != model_cfg:
            log.warning("using the model config of %s, not the run config's", init)
        return loaded.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TopDownModel(model_cfg)


def _advance(bar: tqdm) -> None:
    bar.update(1)


def _metrics_line(metrics: dict[str, float]) -> str:
    names = (("ap", "AP"), ("ap50", "AP50"), ("ar", "AR"), ("pck", "PCK@0.2"))
    return "  ".join(f"{title} {metrics[key]:.3f}" for key, title in names if key in metrics)


def _step_bar(total: int, desc: str, done: int = 0) -> tuple[tqdm, Callable[[StepLog], None]]:
    bar = tqdm(total=total, initial=done, desc=desc, dynamic_ncols=True)

    def on_step(entry: StepLog) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{entry.loss:.2e}", images=entry.images)

    return bar, on_step


def _check_resume(out: Path, cfg: object, args: argparse.Namespace) -> None:
    """Refuse a different configuration before config.yaml is overwritten."""
    from metapose.run_folder import check_resume, run_identity

    if not args.no_resume:
        check_resume(out, run_identity(cfg, args.init))


def cmd_train(args: argparse.Namespace) -> int:
    from metapose.codec import HeatmapCodec
    from metapose.config import DataConfig, TrainRunConfig, replace, save_config
    from metapose.data.coco import load_coco
    from metapose.optim import DeviceOptions
    from metapose.scoring import evaluate_model, make_eval_set
    from metapose.sources import batches_for
    from metapose.train import train

    cfg = _run_config(args.config, TrainRunConfig)
    if args.data:
        cfg = replace(cfg, data=DataConfig(annotations=args.data, image_dir=args.images))
    if args.steps:
        cfg = replace(cfg, train=replace(cfg.train, steps=args.steps))
    device = resolve_device(args.device)
    model = _initial_model(cfg.model, args.init, cfg.seed, device)
    codec = HeatmapCodec.for_model(model.config)
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
        assert cfg.val.annotations is not None
        val_set = make_eval_set(
            load_coco(cfg.val.annotations, cfg.val.image_dir, check_images="decode"), codec
        )
        options = DeviceOptions(device)

        def validate(m: TopDownModel) -> dict[str, float]:
            return evaluate_model(m, val_set, options, flip=model.config.codec.flip_test)

    out = Path(args.out)
    _check_resume(out, cfg, args)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    bar, on_step = _step_bar(cfg.train.steps, "train")
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
        print(f"validation at step {metrics['step']:.0f}: {_metrics_line(metrics)}")
    print(f"checkpoint: {out / 'model.safetensors'}")
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    from metapose.codec import HeatmapCodec
    from metapose.config import DataConfig, MetaRunConfig, replace, save_config
    from metapose.meta import meta_train
    from metapose.sources import batches_for

    cfg = _run_config(args.config, MetaRunConfig)
    if args.data:
        cfg = replace(cfg, data=DataConfig(annotations=args.data, image_dir=args.images))
    if args.steps:
        cfg = replace(cfg, meta=replace(cfg.meta, meta_steps=args.steps))
    device = resolve_device(args.device)
    model = _initial_model(cfg.model, args.init, cfg.seed, device)
    codec = HeatmapCodec.for_model(model.config)
    tasks = batches_for(
        cfg.data,
        codec,
        augment=cfg.augment,
        task_augment=cfg.task_augment,
        sampler=cfg.task_sampler,
        batch_size=cfg.meta.batch_size,
        seed=cfg.seed,
        workers=cfg.workers,
    )
    out = Path(args.out)
    _check_resume(out, cfg, args)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    bar, on_step = _step_bar(cfg.meta.meta_steps, "Reptile")
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


def _id_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise SystemExit(f"error: expected an image id range like 1-4000, got {text!r}") from None
    if first > last:
        raise SystemExit(f"error: image id range {text!r} is empty: write it low-high, e.g. 1-4000")
    return first, last


def cmd_adapt(args: argparse.Namespace) -> int:
    from metapose.adapt import choose_shots, fine_tune
    from metapose.checkpoint import load_checkpoint, save_checkpoint
    from metapose.codec import HeatmapCodec
    from metapose.config import AdaptConfig, TopDownAugmentConfig, replace
    from metapose.data.batches import EpochBatches
    from metapose.data.coco import load_coco
    from metapose.data.dataset import TopDownDataset, instances_from_coco
    from metapose.evaluate import keypoint_indices
    from metapose.optim import DeviceOptions
    from metapose.run_folder import check_finite_weights
    from metapose.scoring import evaluate_model, make_eval_set

    device = resolve_device(args.device)
    options = DeviceOptions(device)
    model = load_checkpoint(args.checkpoint, device).model
    codec = HeatmapCodec.for_model(model.config)
    data = load_coco(args.data, args.images, check_images="decode")
    config = _run_config(args.config, AdaptConfig)
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
    keypoints = _keypoint_names(args.keypoints)
    if keypoints is not None:
        keypoint_indices(data.skeleton, keypoints)  # unknown names: one line, before training
        if not (args.eval or args.eval_ids):
            raise SystemExit("error: --keypoints chooses what is scored: give --eval or --eval-ids")
    pool = _id_range(args.pool_ids)
    pool_ids = None if pool is None else [i.id for i in data.images if pool[0] <= i.id <= pool[1]]
    held_out = _id_range(args.eval_ids)
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
        before = evaluate_model(model, test, options)
        print(f"before: {_metrics_line(before)}")
    support = TopDownDataset(
        instances_from_coco(data, image_ids=shots),
        codec,
        augment=TopDownAugmentConfig(),
        seed=args.seed,
        cache_images=True,
    )
    support.preload(TqdmProgress())
    steps = config.epochs * EpochBatches(support, config.batch_size).batches_per_epoch
    with tqdm(total=steps, desc=f"adapt on {len(shots)} images", dynamic_ncols=True) as bar:
        result = fine_tune(
            model,
            support,
            config,
            options,
            seed=args.seed,
            on_step=lambda step, loss: _advance(bar),
        )
    check_finite_weights(model, len(result.losses))
    print("loss per epoch: " + " ".join(f"{v:.2e}" for v in result.epoch_losses))
    metrics = {}
    if test is not None:
        metrics = evaluate_model(model, test, options)
        print(f"after:  {_metrics_line(metrics)}")
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


def cmd_import_lsp(args: argparse.Namespace) -> int:
    from metapose.data.lsp import import_lsp

    out = import_lsp(args.joints, args.images, args.out, progress=TqdmProgress(not args.quiet))
    print(f"wrote {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from metapose.optim import DeviceOptions
    from metapose.predict import (
        PredictOptions,
        estimator_from_checkpoint,
        estimator_from_onnx,
        plan_prediction,
        predict_images,
    )

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

    from metapose.checkpoint import load_checkpoint
    from metapose.codec import HeatmapCodec
    from metapose.data.coco import load_coco
    from metapose.export import coco_crops, export_checked

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


def cmd_import_weights(args: argparse.Namespace) -> int:
    from metapose.config import CodecConfig
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
    from metapose.codec import HeatmapCodec
    from metapose.config import CocoFolderConfig
    from metapose.sources import calibration_batches

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


def _codec_override(args: argparse.Namespace) -> CodecConfig | None:
    """The checkpoint's codec with ``--encoding``/``--dark`` applied, or None if neither given."""
    if args.crop is None and args.encoding is None and args.dark is None:
        return None
    from metapose.checkpoint import read_metadata
    from metapose.config import from_dict, replace
    from metapose.models.zoo import resolve_model

    own = from_dict(ModelConfig, read_metadata(resolve_model(args.checkpoint))["model"]).codec
    changes: dict[str, object] = {}
    if args.crop is not None:
        changes["crop"] = args.crop
    if args.encoding is not None:
        changes["encoding"] = args.encoding
    if args.dark is not None:
        changes["dark"] = args.dark == "on"
    return replace(own, **changes)


def _keypoint_names(text: str | None) -> tuple[str, ...] | None:
    """``--keypoints nose,left_eye``: the names (checked against the skeleton where used)."""
    return tuple(name.strip() for name in text.split(",")) if text else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metapose.evaluate import evaluate_oks, format_table

    keypoints = _keypoint_names(args.keypoints)
    given = [x for x in (args.results, args.onnx, args.checkpoint) if x is not None]
    if len(given) != 1:
        raise SystemExit("error: give exactly one of --results JSON, --onnx model or --checkpoint")
    if args.results:
        # Scoring results needs the annotations only, never the images.
        result = evaluate_oks(args.gt, args.results, keypoints=keypoints)
    else:
        from metapose.data.coco import load_coco
        from metapose.evaluate import results_to_json
        from metapose.optim import DeviceOptions
        from metapose.predict import (
            PredictOptions,
            estimator_from_checkpoint,
            estimator_from_onnx,
            evaluate_on_coco,
        )

        # Decoded once here so that an image whose size disagrees with the file is named.
        gt = load_coco(args.gt, args.images, require_trainable=False, check_images="decode")
        if args.onnx:
            estimator = estimator_from_onnx(args.onnx, threads=args.threads)
        else:
            options = DeviceOptions(resolve_device(args.device))
            estimator = estimator_from_checkpoint(
                args.checkpoint, options, codec=_codec_override(args)
            )
        score = evaluate_on_coco(
            estimator,
            gt,
            detections=args.detections,
            keypoints=keypoints,
            options=PredictOptions(flip=not args.no_flip, batch_size=args.batch_size),
            progress=TqdmProgress(not args.quiet),
        )
        result = score.result
        if args.save_results:
            results_to_json(args.save_results, score.results)
    print(format_table(result))
    if args.json:
        from metapose.data.coco import write_json_atomic

        write_json_atomic(args.json, result.as_dict(), indent=2)
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


# ------------------------------------------------------------------------------ parser


CHECKPOINT_HELP = "a .safetensors file, or a bundled model's name: see `metapose zoo`"

# Help for options that recur across commands (set where a command leaves its help empty).
COMMON_HELP = {
    "out": "where to write (see the command's description)",
    "device": "auto (CUDA when available, else CPU), cpu, cuda or cuda:N",
    "quiet": "no progress bars",
    "no_resume": "start over even if --out holds a resumable run",
    "config": "a YAML file overriding the defaults of the command's config",
    "images": "image folder of the annotations (default: found beside them)",
    "seed": "random seed",
    "workers": "worker processes",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "split": "split name in the file names (person_keypoints_<split>.json)",
    "epochs": "passes over the shots",
    "lr": "learning rate",
    "optimizer": "optimiser of the fine-tune",
    "batch_size": "images (adapt) or person crops (predict, evaluate) per batch",
    "opset": "ONNX opset to write",
    "no_overlays": "write results.json only",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults appended to the help, except where there is none or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every command's help shows each option's default."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def _document(parser: argparse.ArgumentParser) -> None:
    """Give every option without help text the common one (so its default is shown too)."""
    for action in parser._actions:
        if action.help is None and action.dest in COMMON_HELP:
            action.help = COMMON_HELP[action.dest]
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _document(child)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import metapose

    try:
        return version("metapose")
    except PackageNotFoundError:
        return metapose.__version__


def build_parser() -> argparse.ArgumentParser:
    from metapose.config import AdaptConfig
    from metapose.data.detections import BOX_SCORE_THRESHOLD
    from metapose.predict import DRAW_THRESHOLD

    adapt_defaults = AdaptConfig()
    parser = _Parser(
        prog="metapose",
        description="Few-shot adaptation of top-down pose estimators by meta-learned init.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a synthetic COCO-format dataset, or preview grids")
    p.add_argument("--domain", help="built-in domain (rgb, thermal, unique, ...)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--split", default="train")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--preview", action="store_true", help="write one labelled grid PNG per domain")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "experiment", help="run the paper's experiment from a config and write the report"
    )
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)

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
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_meta)

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

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser(
        "import-lsp", help="LSP / LSPet joints.mat -> COCO person_keypoints JSON"
    )
    q.add_argument("--joints", required=True, help="joints.mat (14x3xN LSPet or 3x14xN LSP)")
    q.add_argument("--images", required=True, help="folder of im*.jpg")
    q.add_argument("--out", required=True, help="JSON to write")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_import_lsp)

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
    p.add_argument("--batch-size", type=int, default=32)
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
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--check-data", help="also compare on real crops of this COCO JSON")
    p.add_argument("--check-images", help="image folder of --check-data")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parity inputs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)

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
    p.add_argument(
        "--compact", action="store_true", help="store float16-exact tensors as float16"
    )
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
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument(
        "--save-results", help="write the predictions as COCO results JSON (with --onnx)"
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--keypoints", help="comma-separated subset of keypoint names to score")
    p.add_argument("--json", help="also write the numbers to this file")
    p.set_defaults(func=cmd_evaluate)
    _document(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from metapose.distributed import init_from_env

    if not init_from_env().is_main:
        # Under torchrun only rank 0 talks: no progress bars or tables from the other ranks.
        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (DataError, ConfigError, CheckFailed, FileExistsError) as err:
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()  # an open progress bar would swallow the line
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
