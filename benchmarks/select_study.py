"""Which images to label: ``metapose select``'s choice against random shots on LSPet, seed-paired.

From the bundled COCO-trained PP-TinyPose 128x96 and the default few-shot recipe
(``AdaptConfig()``), for every K and seed the model is fine-tuned on K LSPet photos chosen from a
pool (the first ``--pool`` images of ids 1-4000) by each method, and scored on the test split of
configs/lspet_cpu.yaml's LSPet target (ids 4001-5000, the first ``--test-limit``; 12 body
keypoints; OKS AP and PCK@0.2). ``random`` draws the shots as ``metapose experiment`` does
(``choose_shots`` with ``derived_seed(0, "shots", "lspet", K, seed)``); a selection method
chooses them from the model's features of the pool's whole images (no labels used); every
method's support set has the same augmentation seed and batch order for a seed, so differences
are paired by seed. ``kcenter`` is deterministic: its seeds differ only in the fine-tune's
augmentation and batch order, where ``random`` also draws other shots.

    OMP_NUM_THREADS=1 python benchmarks/select_study.py --out runs/select_lspet \\
        --pool 1000 --shots 16 32 --seeds 0 1 2 3 4 --test-limit 400 --methods kcenter random

``--out`` keeps the converted data, ``select.json`` (rewritten after every run; a rerun skips
the runs it holds) and ``select.md``. Measured with the command above (2-core CPU, one thread,
about 28 minutes): k-center - random AP +0.008 ± 0.020 at K=16 and +0.008 ± 0.017 at K=32
(PCK@0.2 +0.001 ± 0.014, +0.005 ± 0.011): within noise (README, "Your own data").
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from metapose.cli.common import TqdmProgress
from metapose.config import AdaptConfig, ExperimentConfig, load_config, replace
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance
from metapose.device import DeviceOptions
from metapose.evaluation.evaluate import evaluate
from metapose.experiment.statistics import mean_ci
from metapose.experiment.targets import derived_seed, prepare_target
from metapose.inference.estimators import torch_estimator
from metapose.inference.selection import ImageFeatures, image_features, select_images
from metapose.models.checkpoint import load_checkpoint
from metapose.training.few_shot import choose_shots, fine_tune_on_shots

ROOT = Path(__file__).resolve().parents[1]
LSPET_CONFIG = ROOT / "configs" / "lspet_cpu.yaml"
START = "pp-tinypose-128x96"


def pool_features(model, target, pool: int, codec, options, out: Path) -> ImageFeatures:  # type: ignore[no-untyped-def]
    cache = out / f"features_{pool}.npz"
    labelled = {a.image_id for a in target.dataset.trainable()}
    ids = [i for i in target.pool_ids if i in labelled][:pool]
    if cache.exists():
        data = np.load(cache)
        if list(data["ids"]) == ids:
            return ImageFeatures(tuple(ids), data["vectors"], data["confidence"])
    instances = []
    for image_id in ids:
        img = target.dataset.image_by_id[image_id]
        instances.append(
            Instance(
                target.dataset.image_path(image_id),
                (0.0, 0.0, float(img.width), float(img.height)),
                np.zeros((17, 3), np.float32),
                image_id=image_id,
            )
        )
    progress = TqdmProgress()
    tick = progress.stage("features of the pool", len(instances))
    feats = image_features(model, instances, codec, options, on_batch=tick)
    progress.close_stage()
    np.savez(cache, ids=np.asarray(ids), vectors=feats.vectors, confidence=feats.confidence)
    return feats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--shots", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--test-limit", type=int, default=400)
    parser.add_argument("--methods", nargs="+", default=["kcenter", "random"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    experiment = load_config(LSPET_CONFIG, ExperimentConfig)
    target_config = replace(experiment.targets[0], test_limit=args.test_limit)
    options = DeviceOptions(torch.device("cpu"))
    start = load_checkpoint(START).model
    codec = HeatmapCodec.for_model(start.config)
    target = prepare_target(experiment, target_config, args.out / "data", codec, TqdmProgress())
    feats = pool_features(start, target, args.pool, codec, options, args.out)
    pool_ids = list(feats.image_ids)

    results_path = args.out / "select.json"
    rows: list[dict[str, object]] = (
        json.loads(results_path.read_text()) if results_path.exists() else []
    )
    done = {(r["method"], r["k"], r["seed"]) for r in rows}
    if ("none", 0, 0) not in done:
        base = evaluate(torch_estimator(copy.deepcopy(start), options), target.test)
        rows.append({"method": "none", "k": 0, "seed": 0, "ap": base.ap, "pck": base.pck})
        results_path.write_text(json.dumps(rows, indent=1))
    config = AdaptConfig()
    for k in args.shots:
        for seed in args.seeds:
            for method in args.methods:
                if (method, k, seed) in done:
                    continue
                t0 = time.time()
                if method == "random":
                    shots = choose_shots(
                        target.dataset,
                        k,
                        derived_seed(0, "shots", "lspet", k, seed),
                        pool=pool_ids,
                    )
                else:
                    rng = np.random.default_rng(derived_seed(0, "select", method, k, seed))
                    shots = sorted(select_images(feats, k, method, rng))  # type: ignore[arg-type]
                model = copy.deepcopy(start)
                fine_tune_on_shots(
                    model,
                    target.dataset,
                    shots,
                    config,
                    options,
                    seed=seed,
                    support_seed=derived_seed(0, "support", "lspet", k, seed),
                )
                result = evaluate(torch_estimator(model, options), target.test)
                rows.append(
                    {
                        "method": method,
                        "k": k,
                        "seed": seed,
                        "ap": result.ap,
                        "pck": result.pck,
                        "shots": shots,
                        "seconds": time.time() - t0,
                    }
                )
                results_path.write_text(json.dumps(rows, indent=1))
                print(
                    f"K={k} seed={seed} {method}: AP {result.ap:.4f} PCK {result.pck:.4f} "
                    f"({time.time() - t0:.0f} s)",
                    flush=True,
                )
    report = table(rows, args)
    (args.out / "select.md").write_text(report)
    print(report)


def table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    by = {(r["method"], r["k"], r["seed"]): r for r in rows}
    base = by[("none", 0, 0)]
    lines = [
        f"LSPet, start {START} (AP {base['ap']:.3f}, PCK@0.2 {base['pck']:.3f} unadapted), "
        f"pool: the first {args.pool} labelled images of ids 1-4000, test: the first "
        f"{args.test_limit} of ids 4001-5000, 12 body keypoints; default recipe; "
        f"mean ± 95% t-interval over seeds {args.seeds}.",
        "",
        "| K | method | AP | PCK@0.2 | AP - random (paired) | PCK - random (paired) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for k in args.shots:
        for method in args.methods:
            got = [by[(method, k, s)] for s in args.seeds if (method, k, s) in by]
            if not got:
                continue
            ap = mean_ci([float(r["ap"]) for r in got])  # type: ignore[arg-type]
            pck = mean_ci([float(r["pck"]) for r in got])  # type: ignore[arg-type]
            paired = ["", ""]
            if method != "random":
                pairs = [
                    (by[(method, k, s)], by[("random", k, s)])
                    for s in args.seeds
                    if (method, k, s) in by and ("random", k, s) in by
                ]
                if pairs:
                    paired = [
                        mean_ci([float(a[m]) - float(b[m]) for a, b in pairs]).format(3)  # type: ignore[arg-type]
                        for m in ("ap", "pck")
                    ]
            lines.append(
                f"| {k} | {method} | {ap.format(3)} | {pck.format(3)} | {paired[0]} | {paired[1]} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
