"""Few-shot fine-tuning recipes for a COCO-trained model, compared seed-paired on one target.

For every K and seed the shots are drawn as ``metapose experiment`` draws them (``choose_shots``
with ``derived_seed(0, "shots", target, K, seed)``), the support set's augmentation seed is
``derived_seed(0, "support", target, K, seed)`` and the batch order is the seed: every recipe sees
the very same crops, so recipe differences are paired by seed. Each adapted model is scored on the
target's test split (OKS AP, AP50, AR over the target's keypoints, PCK@0.2); the unadapted model
is the K=0 row. The table gives mean ± 95 % CI over seeds and the seed-paired differences against
``paper`` and against the unadapted model.

Exact shortcuts (fine-tuning is the cost): recipes that differ only in ``epochs`` share one run,
scored from snapshots taken after each one's epoch count (Adam at a constant rate: the first E
epochs of a longer run are an E-epoch run; ``tests/training/test_adapt.py`` checks it), and a
``select_epochs`` recipe is ``choose_epochs`` on its held-out shots plus the snapshot of its base
run at the chosen count: what ``fine_tune`` with ``select_epochs`` returns (checked there too).

Targets: ``lspet`` (configs/lspet_cpu.yaml's block: LSPet pool ids 1-4000, test ids 4001-5000,
12 body keypoints), ``thermal`` and ``unique`` (synthetic domains rendered like the experiment's
targets: 200 pool and 200 test scenes of 640x480, fixed seeds; all 17 keypoints).

    python benchmarks/recipes.py --target lspet --shots 16 32 --seeds 0 1 2 --test-limit 400 \\
        --out runs/recipes_lspet

``--out`` keeps the converted data and ``recipes.json`` / ``recipes.md``, rewritten after every
recipe; a second run into the same folder skips the rows it already holds (and only rewrites the
report when it holds them all). On a 2-core machine shared with other jobs, ``--threads 1`` trained
PP-TinyPose 4x faster than 2 threads (17 against 4.4 images/s, bf16): two OpenMP threads wait on
each other whenever one is descheduled.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from metapose.cli.common import TqdmProgress
from metapose.config import (
    AdaptConfig,
    ExperimentConfig,
    OptimizerConfig,
    TargetConfig,
    load_config,
    replace,
)
from metapose.data.batches import EpochBatches
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import TopDownDataset
from metapose.device import DeviceOptions
from metapose.evaluation.evaluate import evaluate
from metapose.experiment.statistics import mean_ci
from metapose.experiment.targets import Target, prepare_target, shot_seeds
from metapose.inference.estimators import torch_estimator
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint
from metapose.training.adapt import EpochChoice, choose_epochs, fine_tune
from metapose.training.few_shot import choose_shots, support_set

ROOT = Path(__file__).resolve().parents[1]
LSPET_CONFIG = ROOT / "configs" / "lspet_cpu.yaml"
BASE_SEED = 0  # the experiment configs' seed: the same shots as `metapose experiment` draws
SYNTH_POOL = SYNTH_TEST = 200
SYNTH_SCENE = (640, 480)
UNADAPTED = "unadapted"
PAPER = "paper"
METRICS = ("ap", "ap50", "ar", "pck")
# L2-SP strength. The data gradient per weight is about 1e-5 (RMS over the weights of
# PP-TinyPose on an LSPet batch, frozen BatchNorm), and L2-SP's pull l2sp * (w - w0) balances it
# at a drift of about 1e-5 / l2sp: 0.01 caps a weight's drift near 1e-3 (ten Adam steps at 1e-4)
# while lr 1e-3 still makes the early moves; 1 would pin the weights (1e-5), 1e-3 hardly binds
# within 20 epochs at 1e-3 (Adam moves a weight at most 0.02).
L2SP_STRENGTH = 0.01


def adam(lr: float) -> OptimizerConfig:
    return OptimizerConfig(name="adam", lr=lr)


PAPER_CONFIG = AdaptConfig(optimizer=adam(1e-3), epochs=20, batch_size=32, batchnorm="train")
# The bundled PP-TinyPose is imported with its BatchNorms folded into the convolutions (identity
# statistics), so every recipe below `lr1e-4-bnreest` keeps the statistics frozen.
BEST_BASE = replace(PAPER_CONFIG, optimizer=adam(1e-4), batchnorm="frozen")


@dataclass(frozen=True)
class Recipe:
    name: str
    config: AdaptConfig
    what: str


RECIPES = (
    Recipe(PAPER, PAPER_CONFIG, "the paper: Adam 1e-3, 20 epochs, all weights, BatchNorm in train"),
    Recipe("lr1e-4", replace(PAPER_CONFIG, optimizer=adam(1e-4)), "paper at lr 1e-4"),
    Recipe("lr1e-4-bnfrozen", BEST_BASE, "lr 1e-4, BatchNorm statistics frozen"),
    Recipe(
        "lr1e-4-bnreest",
        replace(BEST_BASE, batchnorm="reestimate"),
        "lr 1e-4, BatchNorm statistics re-measured on the shots, then frozen (AdaBN)",
    ),
    Recipe(
        "bnfrozen",
        replace(PAPER_CONFIG, batchnorm="frozen"),
        "paper with BatchNorm frozen: the one change that isolates BatchNorm",
    ),
    Recipe(
        "head-only",
        replace(PAPER_CONFIG, head_only=True, batchnorm="frozen"),
        "lr 1e-3 on the final 1x1 convolution only (backbone and its BatchNorm frozen)",
    ),
    Recipe(
        "backbone0.1",
        replace(PAPER_CONFIG, backbone_lr_scale=0.1, batchnorm="frozen"),
        "head lr 1e-3, backbone 1e-4, BatchNorm frozen",
    ),
    Recipe(
        "l2sp",
        replace(PAPER_CONFIG, batchnorm="frozen", l2sp=L2SP_STRENGTH),
        f"lr 1e-3, BatchNorm frozen, L2-SP {L2SP_STRENGTH} towards the COCO weights",
    ),
    Recipe("epochs10", replace(BEST_BASE, epochs=10), "lr1e-4-bnfrozen, 10 epochs"),
    Recipe("epochs40", replace(BEST_BASE, epochs=40), "lr1e-4-bnfrozen, 40 epochs"),
    Recipe(
        "lr3e-5-e40",
        replace(BEST_BASE, optimizer=adam(3e-5), epochs=40),
        "lr 3e-5, 40 epochs, BatchNorm frozen: smaller steps for longer (added after seed 0, "
        "where every lr-1e-4 variant lost AP at K=16 and fewer epochs lost less)",
    ),
    Recipe(
        "holdout",
        replace(BEST_BASE, epochs=40, select_epochs=True),
        "lr1e-4-bnfrozen, 0-40 epochs chosen on a held-out quarter of the shots",
    ),
)
BY_NAME = {r.name: r for r in RECIPES}
NO_CHOICE = EpochChoice(0, (), ())  # a recipe whose epoch count is fixed


# ------------------------------------------------------------------------------ targets


def lspet_target(test_limit: int | None) -> TargetConfig:
    """configs/lspet_cpu.yaml's LSPet block (load_config resolves its paths against the file)."""
    target = load_config(LSPET_CONFIG, ExperimentConfig).targets[0]
    return replace(target, test_limit=test_limit if test_limit is not None else target.test_limit)


def synthetic_target(domain: str, test_limit: int | None) -> TargetConfig:
    return TargetConfig(
        name=domain,
        domain=domain,
        pool_size=SYNTH_POOL,
        test_size=SYNTH_TEST,
        scene_size=SYNTH_SCENE,
        test_limit=test_limit,
    )


# ------------------------------------------------------------------------------ rows


@dataclass(frozen=True)
class Row:
    recipe: str
    shots: int
    seed: int
    metrics: dict[str, float]
    epochs: int  # epochs taken on all the shots (holdout: the chosen count)
    train_seconds: float  # what this recipe's fine-tune (and epoch choice) cost on its own
    eval_seconds: float
    shot_image_ids: tuple[int, ...] = ()
    epoch_losses: tuple[float, ...] = ()
    held_out_losses: tuple[float, ...] = ()
    config: dict[str, object] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.recipe, self.shots, self.seed)


def load_rows(path: Path, meta: dict[str, object]) -> tuple[list[Row], float]:
    """The rows a folder holds and the wall seconds of the runs that wrote them."""
    if not path.exists():
        return [], 0.0
    saved = json.loads(path.read_text())
    if saved["meta"] != meta:
        raise SystemExit(
            f"error: {path} holds another comparison ({saved['meta']}); choose another --out"
        )
    rows = [
        Row(
            **{
                **r,
                "shot_image_ids": tuple(r["shot_image_ids"]),
                "epoch_losses": tuple(r["epoch_losses"]),
                "held_out_losses": tuple(r["held_out_losses"]),
            }
        )
        for r in saved["rows"]
    ]
    return rows, float(saved.get("wall_seconds", 0.0))


# ------------------------------------------------------------------------------ running


def shots_of(target: Target, codec: HeatmapCodec, k: int, seed: int) -> TopDownDataset:
    """The K shots of ``seed`` as the experiment draws them, augmented as it augments them."""
    shot_seed, support_seed = shot_seeds(BASE_SEED, target.config.name, k, seed)
    shots = choose_shots(target.dataset, k, shot_seed, pool=target.pool_ids)
    return support_set(target.dataset, shots, codec, seed=support_seed)


@dataclass(frozen=True)
class Trajectory:
    """One fine-tune, scored at several epoch counts (0: the start itself)."""

    models: dict[int, TopDownModel]
    seconds: dict[int, float]  # wall time of the fine-tune up to each epoch count
    epoch_losses: tuple[float, ...]


def trajectory(
    start: TopDownModel,
    support: TopDownDataset,
    base: AdaptConfig,
    epochs: set[int],
    options: DeviceOptions,
    seed: int,
) -> Trajectory:
    """Fine-tune a copy of ``start`` by ``base`` for ``max(epochs)``, kept at each of ``epochs``."""
    model = copy.deepcopy(start)
    models, seconds = {0: start}, {0: 0.0}
    steps_per_epoch = EpochBatches(support, base.batch_size).batches_per_epoch
    longest = max(epochs)
    t0 = time.perf_counter()

    def keep(step: int, loss: float) -> None:
        epoch, end = divmod(step + 1, steps_per_epoch)
        if end == 0 and epoch in epochs and epoch < longest:
            seconds[epoch] = time.perf_counter() - t0
            models[epoch] = copy.deepcopy(model)

    if longest == 0:
        return Trajectory(models, seconds, ())
    result = fine_tune(
        model, support, replace(base, epochs=longest), options, seed=seed, on_step=keep
    )
    models[longest], seconds[longest] = model, time.perf_counter() - t0
    return Trajectory(models, seconds, result.epoch_losses)


def run_recipes(
    start: TopDownModel,
    support: TopDownDataset,
    recipes: Sequence[Recipe],
    k: int,
    seed: int,
    score: Callable[[TopDownModel], dict[str, float]],
    options: DeviceOptions,
    emit: Callable[[Row], None],
) -> None:
    """Fine-tune ``start`` by every recipe on ``support`` (epoch variants share one run)."""
    shot_ids = tuple(sorted({inst.image_id for inst in support.instances}))
    choices: dict[str, tuple[EpochChoice, float]] = {}
    for recipe in recipes:
        if recipe.config.select_epochs:
            t0 = time.perf_counter()
            choice = choose_epochs(start, support, recipe.config, options, seed=seed)
            choices[recipe.name] = (choice, time.perf_counter() - t0)
    groups: dict[AdaptConfig, list[tuple[Recipe, int]]] = {}
    for recipe in recipes:
        epochs = choices[recipe.name][0].epochs if recipe.name in choices else recipe.config.epochs
        base = replace(recipe.config, epochs=1, select_epochs=False)
        groups.setdefault(base, []).append((recipe, epochs))
    for base, members in groups.items():
        run = trajectory(start, support, base, {e for _, e in members}, options, seed)
        for recipe, epochs in members:
            t1 = time.perf_counter()
            metrics = score(run.models[epochs])
            choice, choice_seconds = choices.get(recipe.name, (NO_CHOICE, 0.0))
            emit(
                Row(
                    recipe.name,
                    k,
                    seed,
                    metrics,
                    epochs,
                    run.seconds[epochs] + choice_seconds,
                    time.perf_counter() - t1,
                    shot_ids,
                    run.epoch_losses[:epochs],
                    choice.held_out_losses,
                    asdict(recipe.config),
                )
            )


# ------------------------------------------------------------------------------ the report


def _estimate(values: Sequence[float]) -> str:
    return mean_ci([100 * v for v in values]).format(1)


def _paired(rows: dict[int, Row], other: dict[int, Row], metric: str) -> str:
    seeds = sorted(set(rows) & set(other))
    if not seeds or rows is other:
        return "-"
    diffs = [100 * (rows[s].metrics[metric] - other[s].metrics[metric]) for s in seeds]
    estimate = mean_ci(diffs)
    sign = "+" if estimate.mean >= 0 else ""
    return sign + estimate.format(1)


def report(rows: Sequence[Row], meta: dict[str, object], seconds: float) -> str:
    """``recipes.md``: one table per K; values in points (AP x 100), mean ± 95 % CI over seeds."""
    lines = [
        f"# Few-shot recipes: {meta['init']} on {meta['target']}",
        "",
        f"Test: {meta['test_people']} people of the first {meta['test_limit']} test images; "
        f"keypoints: {meta['keypoints']}. Values x100, mean ± 95 % CI over seeds (t); "
        "Δ are seed-paired differences. Train s: one recipe's fine-tune alone (mean).",
        "",
    ]
    base = [r for r in rows if r.recipe == UNADAPTED]
    if base:
        m = base[0].metrics
        lines.append(
            "Unadapted (K=0): "
            + ", ".join(f"{name.upper()} {100 * m[name]:.1f}" for name in METRICS)
            + f"; scored in {base[0].eval_seconds:.0f} s"
        )
        lines.append("")
    unadapted = {0: base[0]} if base else {}
    for k in sorted({r.shots for r in rows if r.shots > 0}):
        at_k = [r for r in rows if r.shots == k]
        paper = {r.seed: r for r in at_k if r.recipe == PAPER}
        lines += [
            f"## K = {k}",
            "",
            "| recipe | n | AP | AP50 | AR | PCK | ΔAP vs paper | ΔPCK vs paper "
            "| ΔAP vs unadapted | ΔPCK vs unadapted | epochs | train s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        names = [r.name for r in RECIPES if any(x.recipe == r.name for x in at_k)]
        for name in names:
            mine = paper if name == PAPER else {r.seed: r for r in at_k if r.recipe == name}
            ordered = [mine[s] for s in sorted(mine)]
            flat = {s: unadapted[0] for s in mine} if unadapted else {}
            epochs = sorted({r.epochs for r in ordered})
            lines.append(
                f"| {name} | {len(ordered)} | "
                + " | ".join(_estimate([r.metrics[m] for r in ordered]) for m in METRICS)
                + f" | {_paired(mine, paper, 'ap')} | {_paired(mine, paper, 'pck')}"
                + f" | {_paired(mine, flat, 'ap')} | {_paired(mine, flat, 'pck')}"
                + f" | {'/'.join(map(str, epochs)) if name == 'holdout' else epochs[0]}"
                + f" | {np.mean([r.train_seconds for r in ordered]):.0f} |"
            )
        lines.append("")
    lines += [
        "Recipes: " + "; ".join(f"`{r.name}`: {r.what}" for r in RECIPES) + ".",
        "",
        f"Wall time of the runs that wrote this folder: {seconds / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="pp-tinypose-128x96", help="zoo name or checkpoint")
    parser.add_argument("--target", choices=("lspet", "thermal", "unique"), default="lspet")
    parser.add_argument("--shots", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-limit", type=int, default=400, help="first N test images")
    parser.add_argument("--recipes", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast where the CPU has it (off: float32, which trains PP-TinyPose faster "
        "on a 2-core AVX512-BF16 machine: 25 against 17 images/s, one thread)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    t_start = time.perf_counter()

    device = torch.device("cpu")
    options = DeviceOptions(device, amp=args.amp)
    start = load_checkpoint(args.init, device).model
    codec = HeatmapCodec.for_model(start.config)
    target_config = (
        lspet_target(args.test_limit)
        if args.target == "lspet"
        else synthetic_target(args.target, args.test_limit)
    )
    experiment = ExperimentConfig(
        name="recipes", seed=BASE_SEED, init=args.init, arms=("as-is",), targets=(target_config,)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = prepare_target(experiment, target_config, args.out / "data", codec, TqdmProgress())
    meta: dict[str, object] = {
        "init": args.init,
        "target": args.target,
        "test_limit": args.test_limit,
        "test_people": target.test.size,
        "keypoints": "all 17" if target_config.keypoints is None else "12 body (LSP)",
    }
    json_path, md_path = args.out / "recipes.json", args.out / "recipes.md"
    rows, earlier_seconds = load_rows(json_path, meta)

    def wall_seconds() -> float:
        return earlier_seconds + time.perf_counter() - t_start

    def save() -> None:
        saved = {"meta": meta, "wall_seconds": wall_seconds(), "rows": [asdict(r) for r in rows]}
        json_path.write_text(json.dumps(saved))
        md_path.write_text(report(rows, meta, wall_seconds()))

    done = {r.key for r in rows}

    def score(model: TopDownModel) -> dict[str, float]:
        return evaluate(torch_estimator(model, options), target.test).as_dict()

    recipes = [BY_NAME[n] for n in args.recipes]
    total = 1 + len(recipes) * len(args.shots) * len(args.seeds)
    bar = tqdm(total=total, desc=f"recipes on {args.target}", dynamic_ncols=True)

    def emit(row: Row) -> None:
        rows.append(row)
        done.add(row.key)
        save()
        bar.update(1)
        bar.set_postfix_str(f"{row.recipe} K={row.shots} s{row.seed} AP {row.metrics['ap']:.3f}")

    if (UNADAPTED, 0, 0) in done:
        bar.update(1)
    else:
        t0 = time.perf_counter()
        emit(Row(UNADAPTED, 0, 0, score(start), 0, 0.0, time.perf_counter() - t0))
    for k in args.shots:
        for seed in args.seeds:
            todo = [r for r in recipes if (r.name, k, seed) not in done]
            bar.update(len(recipes) - len(todo))
            if todo:
                support = shots_of(target, codec, k, seed)
                run_recipes(start, support, todo, k, seed, score, options, emit)
    bar.close()
    save()
    print(md_path.read_text())
    seconds = time.perf_counter() - t_start
    print(f"wall time {seconds / 60:.1f} min ({args.threads} threads, amp {args.amp})")


if __name__ == "__main__":
    main()
