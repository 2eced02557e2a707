"""Semi-supervised few-shot adaptation on LSPet: shots only, AdaBN and a mean teacher, seed-paired.

The LSPet block of configs/lspet_cpu.yaml (pool ids 1-4000, test ids 4001-5000, 12 body
keypoints; the first ``--test-limit`` test photos). For each K and seed the shots are drawn as
``metapose experiment`` and ``benchmarks/recipes.py`` draw them (``choose_shots`` with
``derived_seed(0, "shots", "lspet", K, seed)``, augmented with ``derived_seed(0, "support", ...)``)
and fine-tuned on with the default :class:`AdaptConfig`. The unlabelled set is ``--unlabelled``
photos drawn once from the pool (``derived_seed(0, "unlabelled", "lspet")``), less that seed's
shots, their labels never read; the people in them are the bundled detector's boxes
(``--boxes detect``, as ``metapose adapt --unlabelled`` finds them) or one whole-image box a photo
(``--boxes whole``). Methods, all from the same start on the same shots and the same unlabelled
people:

- ``shots``: the default fine-tune on the K shots (K = 0: the unadapted model);
- ``adabn``: BatchNorm statistics re-measured on unlabelled crops, then the same fine-tune;
- ``mean_teacher``: the fine-tune, then ``--steps`` mean-teacher steps (SemiConfig defaults
  otherwise);
- ``distill``: the ``--teacher`` (default the 256x192 zoo model) fine-tuned on the same shots
  labels the unlabelled people; the model takes ``--steps`` steps on them and the shots.
- ``oracle`` (a diagnostic, ``--boxes gt`` only): distill's student training with the unlabelled
  people's own annotated keypoints in place of the teacher's labels. It bounds what any teacher
  could give through the same steps: distill far below it means the labels are the limit, close
  to it means the steps are.
- ``teacher_adapted`` (a diagnostic): distill's teacher after its fine-tune on the shots, scored
  on its own crops of the test people: how good the labels' source was. Its "vs unadapted"
  column is against the teacher as it was (the teacher's row); at K = 0 it is that row.

``--no-teacher-adapt``: distill labels with the teacher as it is (``SemiConfig.teacher_adapt``
off; ``metapose adapt --teacher-as-is``), so ``teacher_adapted`` has nothing to score with it.

The teacher's own score (unadapted, its own crops of the same test people) is reported beside,
and every model is also scored on the source domain (``--source``, default the COCO mini val
split in ``../shared/data``; ``none`` skips it): what adapting cost on the photos the model was
trained for.

Every model is scored on the test photos (OKS AP over the 12 keypoints, flip test); the report
gives mean +- 95 % t-interval over seeds and the seed-paired differences against ``shots`` and
against the unadapted model, and the mean teacher's time per 1,000 unlabelled crops seen.

    OMP_NUM_THREADS=1 python benchmarks/semi_study.py --shots 0 32 --seeds 0 1 2 \\
        --out runs/semi_lspet

Rows are saved after each run; a second run into the same folder skips the rows it holds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from metapose.cli.common import TqdmProgress
from metapose.config import (
    AdaptConfig,
    ConfigError,
    ExperimentConfig,
    load_config,
    replace,
)
from metapose.config.training import LrSchedule, SemiConfig
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, TopDownDataset, instances_from_coco
from metapose.data.unlabelled import whole_image_box
from metapose.device import DeviceOptions
from metapose.evaluation.coco import EvalResult
from metapose.evaluation.evaluate import EvalSet, evaluate, make_eval_set
from metapose.experiment.statistics import mean_ci
from metapose.experiment.targets import Target, derived_seed, prepare_target
from metapose.inference.detector import PersonDetector, people_in_files
from metapose.inference.distill import adapt_teacher, people_to_label
from metapose.inference.estimators import torch_estimator
from metapose.inference.predict import PredictOptions
from metapose.inference.semi_adapt import adapt_with_unlabelled
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint
from metapose.training.adapt import fine_tune
from metapose.training.few_shot import choose_shots
from metapose.training.few_shot import support_set as few_shot_support
from metapose.training.semi import fine_tune_on_pseudo_labels

ROOT = Path(__file__).resolve().parents[1]
LSPET_CONFIG = ROOT / "configs" / "lspet_cpu.yaml"
COCO_SOURCE = ROOT.parent / "shared/data/coco/mini/annotations/person_keypoints_val2017.json"
BASE_SEED = 0
METHODS = ("shots", "adabn", "mean_teacher", "distill", "oracle", "teacher_adapted")
UNADAPTED = "unadapted"
TEACHER = "teacher"
LABELLING = ("mean_teacher", "distill")  # the methods that pseudo-label, with a confident share


@dataclass(frozen=True)
class Row:
    method: str
    shots: int
    seed: int
    ap: float
    metrics: dict[str, float]
    train_seconds: float
    unlabelled_seen: int  # unlabelled crops the method passed through the model
    confident: float  # mean teacher, distill: mean share of joints above the threshold
    source_ap: float | None = None  # on --source (COCO), what adapting cost the source domain


def support_set(target: Target, codec: HeatmapCodec, k: int, seed: int) -> TopDownDataset | None:
    if k == 0:
        return None
    name = target.config.name
    shots = choose_shots(
        target.dataset, k, derived_seed(BASE_SEED, "shots", name, k, seed), pool=target.pool_ids
    )
    return few_shot_support(
        target.dataset, shots, codec, seed=derived_seed(BASE_SEED, "support", name, k, seed)
    )


def unlabelled_people(
    target: Target, count: int, skeleton_size: int, boxes: str = "whole"
) -> list[Instance]:
    """``count`` pool images (all when fewer), drawn once, as unlabelled people: whole-image
    boxes, the bundled detector's (``boxes="detect"``; an image where it finds nobody has no
    people) or the annotations' person boxes (``boxes="gt"``, as a COCO JSON of boxes gives them;
    their keypoints are not read)."""
    rng = np.random.default_rng(derived_seed(BASE_SEED, "unlabelled", target.config.name))
    count = min(count, len(target.pool_ids))
    ids = sorted(int(i) for i in rng.choice(target.pool_ids, size=count, replace=False))
    unknown = np.zeros((skeleton_size, 3), np.float32)
    paths = {image_id: target.dataset.image_path(image_id) for image_id in ids}
    found = people_in_files(PersonDetector(), list(paths.values())) if boxes == "detect" else None
    annotated: dict[int, list[tuple[float, float, float, float]]] = {}
    for a in target.dataset.annotations:
        if a.trainable:
            annotated.setdefault(a.image_id, []).append(tuple(a.bbox))  # type: ignore[arg-type]
    out: list[Instance] = []
    for image_id, path in paths.items():
        people: Sequence[tuple[float, float, float, float]]
        if boxes == "gt":
            people = annotated.get(image_id, [])
        else:
            people = [whole_image_box(path)] if found is None else found[path]
        out += [Instance(path, box, unknown, image_id, -(len(out) + 1)) for box in people]
    return out


# Settings added after the first studies were saved: recorded only when they are not the default,
# so that those studies' folders still resume.
ADDED_LATER = ("teacher_scales", "lr_schedule", "lr")


def recorded(config: AdaptConfig | SemiConfig) -> dict[str, object]:
    """``config`` as the study's meta records it (see ``ADDED_LATER``)."""
    default = asdict(type(config)())
    return {k: v for k, v in asdict(config).items() if k not in ADDED_LATER or v != default[k]}


def config_or_exit(parser: argparse.ArgumentParser, **settings: object) -> SemiConfig:
    try:
        return SemiConfig(**settings)  # type: ignore[arg-type]
    except ConfigError as err:
        parser.error(str(err))


def paired(rows: dict[int, Row], other: dict[int, Row]) -> str:
    seeds = sorted(set(rows) & set(other))
    if not seeds or rows is other:
        return "-"
    return mean_ci([100 * (rows[s].ap - other[s].ap) for s in seeds]).format(1)


def report(rows: list[Row], meta: dict[str, object], seconds: float) -> str:
    unadapted = next(r for r in rows if r.method == UNADAPTED)
    teacher = [r for r in rows if r.method == TEACHER]
    teacher_line = (
        f" Teacher ({meta['teacher']}, unadapted, its own crops): {100 * teacher[0].ap:.1f}."
        if teacher
        else ""
    )
    source_line = (
        ""
        if unadapted.source_ap is None
        else f" Source AP ({meta.get('source', COCO_SOURCE.name)}, ground-truth boxes, all 17 "
        f"keypoints, the face's too, which the target may not label), unadapted: "
        f"{100 * unadapted.source_ap:.1f}."
    )
    lines = [
        f"# Semi-supervised adaptation on {meta['target']} ({meta['init']})",
        "",
        f"Test: {meta['test_people']} people ({meta['test']}), "
        f"OKS AP x 100. Unlabelled: {meta['unlabelled']} pool images, "
        f"{meta['unlabelled_people']} people ({meta['boxes']} boxes); mean teacher and distill "
        f"{meta['steps']} steps. Unadapted: {100 * unadapted.ap:.1f}.{teacher_line}{source_line}",
        "",
        "| K | method | AP (mean +- 95 % CI) | vs shots only (paired) | vs unadapted (paired) "
        "| train s/seed | unlabelled crops seen | confident joints | source AP |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    shots_k = sorted({r.shots for r in rows if r.method != UNADAPTED})
    for k in shots_k:
        by_method = {
            m: {r.seed: r for r in rows if r.method == m and r.shots == k} for m in METHODS
        }
        base = {s: unadapted for s in by_method["shots"]} or {
            s: unadapted for m in METHODS for s in by_method[m]
        }
        for m in METHODS:
            got = by_method[m]
            if not got:
                continue
            aps = [100 * r.ap for r in got.values()]
            train = np.mean([r.train_seconds for r in got.values()])
            seen = int(np.mean([r.unlabelled_seen for r in got.values()]))
            conf = np.mean([r.confident for r in got.values()])
            sources = [100 * r.source_ap for r in got.values() if r.source_ap is not None]
            against_shots, against_start = by_method["shots"], base
            if m == "teacher_adapted":  # the teacher against itself as it was
                against_shots, against_start = {}, {s: r for s in got for r in teacher}
            lines.append(
                f"| {k} | {m} | {mean_ci(aps).format(1)} | {paired(got, against_shots)} "
                f"| {paired(got, against_start)} | {train:.0f} | {seen} | "
                f"{f'{conf:.2f}' if m in LABELLING else '-'} | "
                f"{f'{mean_ci(sources).format(1)} (n={len(sources)})' if sources else '-'} |"
            )
    lines += ["", f"Wall time of the runs that wrote this folder: {seconds / 60:.1f} min."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="pp-tinypose-128x96")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument(
        "--test-ids",
        type=int,
        nargs=2,
        default=None,
        help="score on these LSPet photo ids (default: the config's 4001-5000); the methods' "
        "settings were chosen on 4001-4200, so 4201-5000 is held out from that choice",
    )
    parser.add_argument(
        "--pool-ids",
        type=int,
        nargs=2,
        default=None,
        help="draw shots and unlabelled photos from these LSPet ids (default: the config's "
        "1-4000); with 1 3000 and --test-ids 3001 3800, a tuning split of 800 photos that "
        "leaves 4001-5000 untouched",
    )
    parser.add_argument("--unlabelled", type=int, default=500, help="pool photos used unlabelled")
    parser.add_argument("--config", type=Path, default=LSPET_CONFIG, help="an experiment config")
    parser.add_argument("--target", help="its target (default: the first)")
    parser.add_argument("--pool-size", type=int, help="a synthetic target's pool (renders)")
    parser.add_argument("--boxes", choices=("detect", "whole", "gt"), default="detect")
    parser.add_argument("--teacher", default=SemiConfig().teacher, help="distill's teacher")
    parser.add_argument(
        "--steps", type=int, default=SemiConfig().steps, help="mean-teacher and distill steps"
    )
    parser.add_argument("--threshold", type=float, default=SemiConfig().threshold)
    parser.add_argument(
        "--min-relative-height",
        type=float,
        default=SemiConfig().min_relative_height,
        help="distill: leave out people shorter than this share of their image's tallest",
    )
    parser.add_argument(
        "--distill-lr", type=float, help="distill: the learning rate of teacher and student"
    )
    parser.add_argument(
        "--distill-l2sp", type=float, help="distill: L2-SP strength of teacher and student"
    )
    parser.add_argument(
        "--student-lr",
        type=float,
        help="the learning rate of the steps on unlabelled people (distill's student, oracle, "
        "the mean teacher's student; default: the adapt config's)",
    )
    parser.add_argument(
        "--student-schedule",
        choices=get_args(LrSchedule),
        help="the learning-rate schedule of those steps (default: the adapt config's)",
    )
    parser.add_argument(
        "--distill-schedule",
        choices=get_args(LrSchedule),
        help="distill: the learning-rate schedule of the teacher's fine-tune on the shots, and "
        "of the student's steps unless --student-schedule",
    )
    parser.add_argument(
        "--distill-batchnorm",
        choices=("frozen", "train"),
        help="distill: BatchNorm of teacher and student (default: the adapt config's)",
    )
    parser.add_argument(
        "--teacher-scales",
        type=float,
        nargs="+",
        default=list(SemiConfig().teacher_scales),
        help="distill's multi-scale teacher (box scale factors)",
    )
    parser.add_argument(
        "--no-teacher-adapt",
        action="store_true",
        help="distill: label with the teacher as it is, not fine-tuned on the shots first",
    )
    parser.add_argument("--ema-decay", type=float, default=SemiConfig().ema_decay)
    parser.add_argument(
        "--source",
        type=Path,
        default=COCO_SOURCE,
        help="a COCO keypoints JSON of the source domain, its images beside in <split>2017/: "
        "every model is also scored there (ground-truth boxes, all 17 keypoints), so the table "
        "shows what adapting cost on the photos the model was trained for; 'none' to skip",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if "teacher_adapted" in args.methods and args.no_teacher_adapt:
        parser.error(
            "--methods teacher_adapted scores the teacher's fine-tune, which "
            "--no-teacher-adapt leaves out"
        )
    if "oracle" in args.methods and args.boxes != "gt":
        parser.error("--methods oracle needs --boxes gt (the annotated people's own keypoints)")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    t_start = time.perf_counter()
    device = torch.device("cpu")
    options = DeviceOptions(device, amp=False)
    start = load_checkpoint(args.init, device).model
    options.prepare(start)
    codec = HeatmapCodec.for_model(start.config)
    flip = start.config.codec.flip_test
    targets = load_config(args.config, ExperimentConfig).targets
    chosen = [t for t in targets if args.target in (None, t.name)]
    if not chosen:
        raise SystemExit(f"error: {args.config} has no target {args.target!r}")
    ranges = {
        k: tuple(v) for k, v in (("test_ids", args.test_ids), ("pool_ids", args.pool_ids)) if v
    }
    try:  # TargetConfig refuses overlapping pool and test ids
        target_config = replace(chosen[0], test_limit=args.test_limit, **ranges)
    except ConfigError as err:
        parser.error(str(err))
    if args.pool_size is not None:
        target_config = replace(target_config, pool_size=args.pool_size)
    experiment = ExperimentConfig(
        name="semi",
        seed=BASE_SEED,
        init=args.init,
        arms=("as-is",),
        targets=(target_config,),
        shots=tuple(k for k in args.shots if k > 0) or (1,),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = prepare_target(experiment, target_config, args.out / "data", codec, TqdmProgress())
    unlabelled = unlabelled_people(
        target, args.unlabelled, start.config.num_keypoints, boxes=args.boxes
    )
    teacher_start = load_checkpoint(args.teacher, device).model
    options.prepare(teacher_start)
    adapt_config = AdaptConfig()
    distill_adapt = adapt_config
    if args.distill_lr is not None:
        distill_adapt = replace(
            distill_adapt, optimizer=replace(distill_adapt.optimizer, lr=args.distill_lr)
        )
    if args.distill_l2sp is not None:
        distill_adapt = replace(distill_adapt, l2sp=args.distill_l2sp)
    if args.distill_batchnorm is not None:
        distill_adapt = replace(distill_adapt, batchnorm=args.distill_batchnorm)
    if args.distill_schedule is not None:
        distill_adapt = replace(distill_adapt, lr_schedule=args.distill_schedule)
    semi = config_or_exit(
        parser,
        steps=args.steps,
        ema_decay=args.ema_decay,
        teacher=args.teacher,
        threshold=args.threshold,
        min_relative_height=args.min_relative_height,
        teacher_scales=tuple(args.teacher_scales),
        teacher_adapt=not args.no_teacher_adapt,
        lr=args.student_lr,
        lr_schedule=args.student_schedule,
    )
    meta: dict[str, object] = {
        "init": args.init,
        "teacher": args.teacher,
        "boxes": args.boxes,
        "unlabelled_people": len(unlabelled),
        "test_limit": args.test_limit,
        "target": target_config.name,
        "test": (
            f"first {args.test_limit} of {target_config.test_size} rendered scenes"
            if target_config.synthetic
            else f"first {args.test_limit} photos of ids {target_config.test_ids}"
        )
        + (f", keypoints {', '.join(target_config.keypoints)}" if target_config.keypoints else ""),
        "test_people": target.test.size,
        "unlabelled": args.unlabelled,
        "steps": args.steps,
        "adapt": recorded(adapt_config),
        "semi": recorded(semi),
    }
    if distill_adapt != adapt_config:
        meta["distill_adapt"] = recorded(distill_adapt)
    if args.pool_ids is not None:
        meta["pool_ids"] = list(args.pool_ids)
    if args.source != COCO_SOURCE:
        meta["source"] = str(args.source)
    source = None
    if str(args.source) != "none":
        if not args.source.exists():
            if args.source != COCO_SOURCE:
                parser.error(f"--source {args.source}: no such file")
            print(f"note: {COCO_SOURCE} is absent; the source domain is not scored")
        else:
            source = make_eval_set(load_coco(args.source), codec)
    json_path, md_path = args.out / "semi.json", args.out / "semi.md"
    rows: list[Row] = []
    earlier = 0.0
    if json_path.exists():
        saved = json.loads(json_path.read_text())
        if saved["meta"] != json.loads(json.dumps(meta)):
            raise SystemExit(f"error: {json_path} holds another study; choose another --out")
        rows, earlier = [Row(**r) for r in saved["rows"]], float(saved["wall_seconds"])
    done = {(r.method, r.shots, r.seed) for r in rows}

    def save() -> None:
        wall = earlier + time.perf_counter() - t_start
        json_path.write_text(
            json.dumps({"meta": meta, "wall_seconds": wall, "rows": [asdict(r) for r in rows]})
        )
        md_path.write_text(report(rows, meta, wall))

    def scored(model: TopDownModel, data: EvalSet) -> EvalResult:
        return evaluate(torch_estimator(model, options), data, options=PredictOptions(flip=flip))

    def score(model: TopDownModel) -> dict[str, float]:
        return scored(model, target.test).as_dict()

    def source_ap(model: TopDownModel) -> float | None:
        return None if source is None else scored(model, source).ap

    if (UNADAPTED, 0, 0) not in done:
        metrics = score(start)
        rows.append(Row(UNADAPTED, 0, 0, metrics["ap"], metrics, 0.0, 0, 0.0, source_ap(start)))
        save()
    elif source is not None:  # a folder written before the source was scored
        i = next(i for i, r in enumerate(rows) if r.method == UNADAPTED)
        if rows[i].source_ap is None:
            rows[i] = dataclasses.replace(rows[i], source_ap=source_ap(start))
            save()
    own_test: EvalSet | None = None  # the test people cropped by the teacher's codec

    def teacher_score(teacher: TopDownModel) -> dict[str, float]:
        nonlocal own_test
        if own_test is None:
            own_codec = HeatmapCodec.for_model(teacher_start.config)
            own_test = prepare_target(
                experiment, target_config, args.out / "data", own_codec, TqdmProgress()
            ).test
        return evaluate(torch_estimator(teacher, options), own_test).as_dict()

    teacher_used = {"distill", "teacher_adapted"} & set(args.methods)
    if teacher_used and (TEACHER, 0, 0) not in done:
        metrics = teacher_score(teacher_start)
        rows.append(Row(TEACHER, 0, 0, metrics["ap"], metrics, 0.0, 0, 0.0))
        save()
    for k in args.shots:
        for seed in args.seeds:
            support = support_set(target, codec, k, seed)
            shot_ids = set() if support is None else {i.image_id for i in support.instances}
            people = [p for p in unlabelled if p.image_id not in shot_ids]
            for method in args.methods:
                if (method, k, seed) in done or (method in ("shots", "teacher_adapted") and k == 0):
                    continue
                teaching = method == "teacher_adapted"  # the teacher itself, on its own crops
                model = copy.deepcopy(teacher_start if teaching else start)
                t0 = time.perf_counter()
                seen, confident = 0, 0.0
                if teaching:
                    assert support is not None
                    adapt_teacher(model, support, distill_adapt, options, seed=seed)
                elif method == "shots":
                    assert support is not None
                    fine_tune(model, support, adapt_config, options, seed=seed)
                elif method == "oracle":  # distill's people, labelled by their annotations
                    ids = sorted({p.image_id for p in people})
                    labelled = people_to_label(
                        instances_from_coco(target.dataset, image_ids=ids), semi, seed
                    )
                    fine_tune_on_pseudo_labels(
                        model,
                        support,
                        labelled,
                        distill_adapt,
                        semi,
                        options,
                        codec=codec,
                        seed=seed,
                    )
                    seen = semi.crops_seen
                else:
                    config = replace(semi, method=method)
                    adapted = adapt_with_unlabelled(
                        model,
                        support,
                        people,
                        distill_adapt if method == "distill" else adapt_config,
                        config,
                        options,
                        seed=seed,
                        flip=flip,
                    )
                    if method == "adabn":
                        seen = min(len(people), config.crops_seen)
                    else:
                        seen = config.crops_seen
                        confident = float(np.mean(adapted.confident))
                seconds = time.perf_counter() - t0
                metrics = teacher_score(model) if teaching else score(model)
                rows.append(
                    Row(
                        method,
                        k,
                        seed,
                        metrics["ap"],
                        metrics,
                        seconds,
                        seen,
                        confident,
                        source_ap=None if teaching else source_ap(model),
                    )
                )
                save()
                print(f"K={k} seed={seed} {method}: AP {metrics['ap']:.3f} ({seconds:.0f} s)")
    save()
    print(md_path.read_text())


if __name__ == "__main__":
    main()
