"""``metapose inspect``: what a checkpoint is and where it came from, without Python."""

from __future__ import annotations

import argparse
import json
from typing import Any

from metapose.cli.common import CHECKPOINT_HELP, Commands, metrics_line


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
