"""``metapose inspect`` (what a checkpoint is and where it came from, without Python) and
``metapose select`` (which images to label next, with the model's poses to correct)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metapose.cli.common import (
    CHECKPOINT_HELP,
    Commands,
    TqdmProgress,
    metrics_line,
    resolve_device,
)


def _fields(config: dict[str, Any], skip: tuple[str, ...] = ("kind",)) -> str:
    return ", ".join(f"{k} {_value(v)}" for k, v in config.items() if k not in skip)


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "/".join(str(x) for x in v) or "none"
    if isinstance(v, bool):
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(meta: dict[str, Any], path: str) -> list[str]:
    """The lines ``metapose inspect`` prints for a checkpoint's metadata."""
    from metapose.config import ModelConfig, from_dict
    from metapose.models import TopDownModel
    from metapose.skeleton import COCO17

    model = meta["model"]
    norm = model["normalization"]
    config = from_dict(ModelConfig, model)
    parameters = sum(p.numel() for p in TopDownModel(config).parameters())
    w, h = config.input_size
    head = (
        f"{len(config.deconv_channels)} deconvolutions ({_value(list(config.deconv_channels))})"
        if config.deconv_channels
        else "1x1 convolution on the backbone's stride-4 features"
    )
    lines = [
        f"checkpoint:    {path} ({meta.get('format', '?')})",
        f"architecture:  {model['backbone'].get('kind', '?')} "
        f"({_fields(model['backbone'])}); head: {head}; {parameters:,} parameters",
        f"input:         {w}x{h} pixels (width x height), normalised by mean "
        f"{_value(norm['mean'])} std {_value(norm['std'])}",
        f"codec:         {_fields(model['codec'], skip=())}",
        f"skeleton:      {COCO17.name}, {config.num_keypoints} keypoints "
        f"({', '.join(COCO17.keypoints[: config.num_keypoints])})",
    ]
    origin = meta.get("provenance") or {}
    if "source" in origin:
        lines.append(f"source:        {origin['source']} (licence {origin.get('licence', '?')})")
    else:
        lines.append(
            "made by:       "
            + ", ".join(
                f"{k} {origin[k]}"
                for k in ("metapose", "torch", "git_commit", "created")
                if k in origin
            )
        )
    if meta.get("adapted_from"):
        shots = meta.get("shot_image_ids") or []
        lines.append(f"adapted from:  {meta['adapted_from']}")
        lines.append(
            f"shots:         {len(shots)} images of {meta.get('data', 'the --data file')} "
            f"(ids {', '.join(map(str, shots[:8]))}{' ...' if len(shots) > 8 else ''}), seed "
            f"{meta.get('seed', '?')}"
        )
        recipe = dict(meta.get("adapt") or {})
        optimizer = recipe.pop("optimizer", {})
        lines.append(f"recipe:        {_fields(optimizer, skip=())}; {_fields(recipe, skip=())}")
        losses = meta.get("epoch_losses") or []
        if losses:
            lines.append(f"loss:          {losses[0]:.2e} (first epoch) -> {losses[-1]:.2e} (last)")
    run = meta.get("run_config")
    if run:
        lines.append(
            f"trained with:  seed {run.get('seed', '?')}; "
            + ", ".join(k for k in run if k not in ("seed", "model"))
            + " (see --json)"
        )
    before = meta.get("metrics_before") or {}
    metrics = meta.get("metrics") or {}
    if metrics:
        lines.append(
            f"metrics:       {metrics_line(metrics)}"
            + (f" (before adapting: {metrics_line(before)})" if before else "")
        )
    verdict = meta.get("verdict")
    if verdict:
        low, high = verdict["oks_change_interval"]
        lines.append(
            f"verdict:       per-person OKS {verdict['oks_change']:+.4f} "
            f"({verdict['confidence']:.0%} interval {low:+.4f} to {high:+.4f}, "
            f"{verdict['people']} people)"
        )
    published = origin.get("coco_val2017_ap_published")
    if published is not None:
        lines.append(f"published:     COCO val2017 AP {published}")
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    from metapose.models.checkpoint import read_metadata
    from metapose.models.zoo import resolve_model

    path = resolve_model(args.checkpoint)
    meta = read_metadata(path)
    if args.json:
        print(json.dumps(meta, indent=1))
        return 0
    for line in describe(meta, str(path)):
        print(line)
    return 0


LABEL_STUDIO_CONFIG = (
    '<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image">'
    "{labels}</KeyPointLabels></View>"
)


def _pre_annotations(
    chosen: list[Any], predictions: dict[int, Any], names: dict[int, str], model: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The model's poses on the chosen images: a COCO keypoints file (CVAT imports it as "COCO
    Keypoints 1.0") and Label Studio tasks with the poses as predictions."""
    from metapose.data.coco import coco_category
    from metapose.data.label_formats import derive_box
    from metapose.skeleton import COCO17

    images, annotations, tasks = [], [], []
    for n, (image_id, width, height) in enumerate(chosen, start=1):
        pose = predictions[image_id]
        name = names[image_id]
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        flat = [
            v for x, y, _ in pose.keypoints for v in (round(float(x), 2), round(float(y), 2), 2)
        ]
        entry = {
            "id": n,
            "image_id": image_id,
            "category_id": 1,
            "keypoints": flat,
            "num_keypoints": len(COCO17.keypoints),
            "iscrowd": 0,
            "score": round(float(pose.score), 4),
        }
        box = derive_box(entry) or [0.0, 0.0, float(width), float(height)]
        entry.update(bbox=[round(v, 2) for v in box], area=round(box[2] * box[3], 2))
        annotations.append(entry)
        result = [
            {
                "id": f"{image_id}-{j}",
                "type": "keypointlabels",
                "from_name": "kp",
                "to_name": "image",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "x": 100 * float(x) / width,
                    "y": 100 * float(y) / height,
                    "width": 0.5,
                    "keypointlabels": [COCO17.keypoints[j]],
                },
            }
            for j, (x, y, _) in enumerate(pose.keypoints)
        ]
        tasks.append(
            {
                "id": image_id,
                "data": {"image": name},
                "predictions": [
                    {"model_version": model, "score": float(pose.score), "result": result}
                ],
            }
        )
    coco = {"images": images, "annotations": annotations, "categories": [coco_category()]}
    return coco, tasks


def cmd_select(args: argparse.Namespace) -> int:
    import numpy as np

    from metapose.data.dataset import Instance
    from metapose.data.images import read_rgb
    from metapose.device import DeviceOptions
    from metapose.files import write_json_atomic
    from metapose.inference.estimators import torch_estimator
    from metapose.inference.predict import PredictOptions, plan_prediction, predict_instances
    from metapose.inference.selection import image_features, select_images
    from metapose.models.checkpoint import load_checkpoint
    from metapose.skeleton import COCO17

    progress = TqdmProgress(enabled=not args.quiet)
    plan = plan_prediction(args.images, whole_image=True)
    if not 1 <= args.k <= len(plan.jobs):
        raise SystemExit(f"error: --k {args.k}: choose between 1 and {len(plan.jobs)} images")
    out = Path(args.out)
    if out.suffix != ".json":
        raise SystemExit(f"error: --out {args.out}: give a .json file (the pre-annotations)")
    device = resolve_device(args.device)
    options = DeviceOptions(device)
    model = load_checkpoint(args.checkpoint, device).model
    estimator = torch_estimator(model, options)
    sizes, instances = {}, []
    tick = progress.stage("read images", len(plan.jobs))
    for job in plan.jobs:
        height, width = read_rgb(job.path).shape[:2]
        sizes[job.image_id] = (int(width), int(height))
        instances.append(
            Instance(
                job.path,
                (0.0, 0.0, float(width), float(height)),
                np.zeros((COCO17.num_keypoints, 3), np.float32),
                image_id=job.image_id,
            )
        )
        tick(1)
    tick = progress.stage("features", len(instances))
    features = image_features(model, instances, estimator.codec, options, on_batch=tick)
    progress.close_stage()
    chosen = select_images(features, args.k, args.method, np.random.default_rng(args.seed))
    by_id = {i.image_id: i for i in instances}
    poses = predict_instances(estimator, [by_id[i] for i in chosen], PredictOptions())
    predictions = {p.image_id: p for p in poses}
    base = Path(args.images[0]) if Path(args.images[0]).is_dir() else None
    names = {
        job.image_id: str(
            job.path.relative_to(base) if base and job.path.parent == base else job.path.name
        )
        for job in plan.jobs
    }
    coco, tasks = _pre_annotations(
        [(i, *sizes[i]) for i in chosen], predictions, names, str(args.checkpoint)
    )
    studio = out.with_name(out.stem + ".label_studio.json")
    write_json_atomic(out, coco, indent=1)
    write_json_atomic(studio, tasks, indent=1)
    confidence = dict(zip(features.image_ids, features.confidence, strict=True))
    print(f"{args.k} of {len(instances)} images to label ({args.method}), in the order chosen:")
    for image_id in chosen:
        print(f"  {names[image_id]}  (model confidence {confidence[image_id]:.2f})")
    print(
        f"pre-annotations (the model's poses, to correct): {out} (CVAT: import as COCO "
        f"Keypoints 1.0; metapose adapt reads it back)"
    )
    labels = "".join(f'<Label value="{n}"/>' for n in COCO17.keypoints)
    print(
        f"Label Studio tasks with the poses as predictions: {studio} (labelling config: "
        f"{LABEL_STUDIO_CONFIG.format(labels=labels[:60] + '...')})"
    )
    return 0


def register(sub: Commands) -> None:
    """Add ``inspect`` to the ``metapose`` parser."""
    p = sub.add_parser(
        "inspect",
        help="a checkpoint's architecture, codec, skeleton and provenance",
        description="Print what a checkpoint holds: its architecture, codec and skeleton, and "
        "where it came from (the model it was adapted from, the shots, the recipe, metrics).",
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--json", action="store_true", help="print the whole metadata as JSON")
    p.set_defaults(func=cmd_inspect)

    from metapose.inference.selection import SELECT_METHODS

    p = sub.add_parser(
        "select",
        help="which images to label next, with the model's poses to correct",
        description="Choose --k images of IMAGES to label: by the diversity of the model's "
        "features (kcenter, kmeans), its uncertainty, or at random; write the model's poses on "
        "them as a COCO keypoints file (CVAT imports it) and as Label Studio tasks with "
        "predictions, so that labelling is correcting.",
    )
    p.add_argument("images", nargs="+", help="image files or folders (not recursive)")
    p.add_argument("--k", type=int, required=True, help="how many images to choose")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--method", choices=SELECT_METHODS, default="kcenter")
    p.add_argument("--seed", type=int, default=0, help="for kmeans and random")
    p.add_argument(
        "--out",
        required=True,
        help="pre-annotations JSON (COCO keypoints); Label Studio tasks are written beside it "
        "as NAME.label_studio.json",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_select)
