"""Ablation of the meta-learning stage, from a finished experiment's starting weights.

Every variant starts where the experiment's arms did (``<run>/models/pretrain/model.safetensors``
when the run pretrained, else the run's ``init``), spends the experiment's meta budget (images)
on Reptile with other settings, and is fine-tuned and scored on exactly the shots and test crops
of the experiment, so each row compares with one of the experiment's own arms (``--against``:
as-is, else supervised) row by row (seed-paired). Usage, after ``make demo``::

    python benchmarks/ablation_meta.py runs/demo [--shots 16] [--out runs/demo/ablation.md]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from metapose.config import (
    CocoFolderConfig,
    ExperimentConfig,
    ReptileConfig,
    SourceConfig,
    load_config,
)
from metapose.data.codec import HeatmapCodec
from metapose.device import DeviceOptions
from metapose.experiment.results import load_result
from metapose.experiment.run import Job, run_job, source_batches, starting_model
from metapose.experiment.statistics import mean_ci
from metapose.experiment.targets import prepare_target
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint
from metapose.progress import SilentProgress
from metapose.training.meta import meta_train

Variant = tuple[ReptileConfig, str, SourceConfig | None]


def variants(meta: ReptileConfig, budget: int, coco: Path) -> dict[str, Variant]:
    """Name -> (Reptile settings, task sampler, source or None for the run's own), each
    spending ``budget`` images. ``coco`` holds the real COCO folders (``tiny``, ``mini``) whose
    train people make the real-image sources."""

    def inner(steps: int) -> ReptileConfig:
        per_step = steps * meta.tasks_per_step * meta.batch_size
        if budget % per_step:
            raise SystemExit(f"{steps} inner steps cannot spend exactly {budget} images")
        return replace(meta, inner_steps=steps, meta_steps=budget // per_step)

    real = tuple(
        CocoFolderConfig(
            str(coco / split / "annotations/person_keypoints_train2017.json"),
            str(coco / split / "train2017"),
        )
        for split in ("tiny", "mini")
    )
    return {
        "as configured": (meta, "mixed", None),
        "paper beta 0.05": (replace(meta, meta_step=0.05, meta_step_final=None), "mixed", None),
        "beta 1 -> 0.1 (Nichol)": (
            replace(meta, meta_step=1.0, meta_step_final=0.1),
            "mixed",
            None,
        ),
        "2 inner steps": (inner(2), "mixed", None),
        "10 inner steps": (inner(10), "mixed", None),
        "inner lr 2e-4": (replace(meta, inner=replace(meta.inner, lr=2e-4)), "mixed", None),
        "inner lr 3e-5": (replace(meta, inner=replace(meta.inner, lr=3e-5)), "mixed", None),
        "inner BatchNorm in train mode": (replace(meta, batchnorm="train"), "mixed", None),
        "style tasks": (meta, "style", None),
        "source: real COCO train people": (meta, "mixed", SourceConfig(domains=(), coco=real)),
        "source: synthetic rgb + unique + real COCO": (
            meta,
            "mixed",
            SourceConfig(domains=("rgb", "unique"), coco=real),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `metapose experiment` folder")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="a subset of the run's seeds (default: all)"
    )
    parser.add_argument("--out", type=Path, help="markdown file (default: <run>/ablation.md)")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="run these variants only")
    parser.add_argument(
        "--against", help="the arm each variant is paired with (default: as-is, else supervised)"
    )
    parser.add_argument(
        "--coco",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "coco",
        help="folder with the COCO tiny/ and mini/ splits (the real-image source variants)",
    )
    args = parser.parse_args()
    cfg = load_config(args.run / "config.yaml", ExperimentConfig)
    against = args.against or ("as-is" if "as-is" in cfg.arms else "supervised")
    seeds = args.seeds or list(cfg.seeds)
    if not set(seeds) <= set(cfg.seeds):
        raise SystemExit(f"--seeds must be among the run's seeds {list(cfg.seeds)}")
    device = torch.device("cpu")
    options = DeviceOptions(device)
    pretrained = args.run / "models" / "pretrain" / "model.safetensors"

    def start() -> TopDownModel:
        if pretrained.exists():
            return load_checkpoint(pretrained, device).model
        return starting_model(cfg, device)

    codec = HeatmapCodec.for_model(start().config)
    targets = [
        prepare_target(cfg, t, args.run / "data", codec, SilentProgress()) for t in cfg.targets
    ]
    budget = cfg.meta.meta_steps * cfg.meta.images_per_meta_step
    lines = [
        f"# Meta-stage ablation: {args.run}, K={args.shots}, seeds {seeds}, "
        f"{budget} images per variant",
        "",
        f"| variant | target | AP | AP - {against} (paired) | PCK@0.2 | PCK - {against} |",
        "|---|---|---|---|---|---|",
    ]
    out = args.out or args.run / "ablation.md"
    for name, (meta, sampler, source) in variants(cfg.meta, budget, args.coco).items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        variant_cfg = replace(
            cfg,
            meta=meta,
            task_augment=replace(cfg.task_augment, sampler=sampler),  # type: ignore[arg-type]
            source=source or cfg.source,
        )
        model = start()
        meta_train(model, source_batches(variant_cfg, codec, "continue"), meta, device)
        for target in targets:
            ap, pck, d_ap, d_pck = [], [], [], []
            for seed in seeds:
                result = run_job(
                    Job(target, "meta", args.shots, seed),
                    variant_cfg,
                    {"meta": model},
                    codec,
                    options,
                )
                base = load_result(args.run / "results", Job(target, against, args.shots, seed).key)
                assert base is not None, "run the experiment first"
                ap.append(result.metrics["ap"])
                pck.append(result.metrics["pck"])
                d_ap.append(result.metrics["ap"] - base.metrics["ap"])
                d_pck.append(result.metrics["pck"] - base.metrics["pck"])
            lines.append(
                f"| {name} | {target.config.name} | {mean_ci(ap).format()} | "
                f"{mean_ci(d_ap).format()} | {mean_ci(pck).format()} | {mean_ci(d_pck).format()} |"
            )
            print(lines[-1], flush=True)
        print(f"  ({name}: {(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
        out.write_text("\n".join(lines) + "\n")  # after every variant: a long run keeps its rows
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
