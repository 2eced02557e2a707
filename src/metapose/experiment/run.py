"""The paper's experiment (§4, Table 1): does a meta-learned initial model adapt better?

Stages, each resumable from ``out_dir``:

1. targets: synthetic target domains are rendered to COCO-format folders (a shot pool and a
   disjoint test split); COCO-format targets on disk are split by image id.
2. the start: ``init`` (a bundled COCO-trained model or a checkpoint) or random weights,
   optionally pretrained on the source stream; the ``as-is`` arm is this start;
3. equal budgets: the ``supervised`` arm continues with supervised steps, the ``meta`` arm with
   Reptile, on the very same stream of augmented source batches (task ``t`` = batch ``t``);
4. for every target, K and seed: every arm (and optionally random weights) is fine-tuned on the
   same K shots and scored with OKS AP/AR (and PCK) on the test split; unadapted scores too.
   With ``semi`` each arm's twin is adapted on the same shots plus the pool's other people,
   unlabelled (at K = 0 on those alone, for every seed);
5. the report: Table 1 with 95 % CIs, Figures 2-4, a K-curve and an HTML page.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metapose.config import (
    PCK_ALPHA,
    ConfigError,
    ExperimentConfig,
    load_config,
    save_config,
)
from metapose.config.experiment import twin_arm
from metapose.data.augment import TaskAugmenter
from metapose.data.augment_figure import figure2
from metapose.data.batches import IndexedBatches
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.crops import apply_affine
from metapose.data.dataset import (
    crop_params_of,
    instances_from_coco,
    make_sample,
)
from metapose.data.images import read_rgb, write_rgb
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.evaluation.few_shot import UNADAPTED, adapt_and_score
from metapose.experiment.figures import PredictionPanel, k_curve, meta_test_loss, prediction_grid
from metapose.experiment.report import format_table, summarize, verdicts, write_index_html
from metapose.experiment.results import RunResult, load_result, save_result
from metapose.experiment.targets import (
    Target,
    check_pool,
    derived_seed,
    prepare_target,
    shot_seeds,
)
from metapose.experiment.twins import check_twin_pool, twin_tune
from metapose.files import write_json_atomic, write_text_atomic
from metapose.models import TopDownModel, seeded_model
from metapose.models.checkpoint import load_checkpoint
from metapose.models.zoo import resolve_model
from metapose.progress import Progress, SilentProgress
from metapose.provenance import provenance
from metapose.synth.domains import get_domain
from metapose.synth.scene import render_crop
from metapose.training import distributed
from metapose.training.meta import meta_train
from metapose.training.run_folder import FINAL_FILE
from metapose.training.sources import mixed_batches, person_instance
from metapose.training.train import train

log = logging.getLogger(__name__)

PANELS_PER_TARGET = 3  # test crops shown per target in Fig. 3


def check_resumable(cfg: ExperimentConfig, out: Path) -> None:
    """Resuming is only safe into a folder that holds a run of the very same configuration."""
    saved = out / "config.yaml"
    if saved.exists() and load_config(saved, ExperimentConfig) != cfg:
        raise ConfigError(
            f"{out} holds a run of a different configuration ({saved}); "
            "choose another --out, or delete the folder to start over"
        )


def validate_experiment(cfg: ExperimentConfig) -> None:
    """Everything that can be checked before a file is written: domains and input paths."""
    for name in cfg.source.domains:
        _known_domain(name, "source.domains")
    for folder in cfg.source.coco:
        if not Path(folder.annotations).is_file():
            raise ConfigError(f"source.coco: annotations file not found: {folder.annotations}")
        if folder.image_dir is not None and not Path(folder.image_dir).is_dir():
            raise ConfigError(f"source.coco: image_dir is not a folder: {folder.image_dir}")
    if cfg.init is not None and not resolve_model(cfg.init).is_file():
        raise ConfigError(f"init: {cfg.init!r} is neither a bundled model nor a file")
    semi = cfg.semi
    if semi is not None and semi.method == "distill" and not resolve_model(semi.teacher).is_file():
        raise ConfigError(f"semi.teacher: {semi.teacher!r} is neither a bundled model nor a file")
    for target in cfg.targets:
        where = f"target {target.name!r}"
        if target.domain is not None:
            _known_domain(target.domain, f"{where}: domain")
        if target.annotations is not None and not Path(target.annotations).is_file():
            raise ConfigError(f"{where}: annotations file not found: {target.annotations}")
        if target.image_dir is not None and not Path(target.image_dir).is_dir():
            raise ConfigError(f"{where}: image_dir is not a folder: {target.image_dir}")


def _known_domain(name: str, where: str) -> None:
    try:
        get_domain(name)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def starting_model(cfg: ExperimentConfig, device: torch.device) -> TopDownModel:
    """``cfg.init``'s weights (a zoo name or a checkpoint), else random ones from the seed."""
    if cfg.init is not None:
        return load_checkpoint(cfg.init, device).model
    return seeded_model(cfg.model, derived_seed(cfg.seed, "init"))


# ------------------------------------------------------------------------------ source data


def source_batches(cfg: ExperimentConfig, codec: HeatmapCodec, stream: str) -> IndexedBatches:
    """Augmented source crops; batch ``b`` of a named ``stream`` never changes."""
    return mixed_batches(
        cfg.source,
        codec,
        augment=cfg.augment,
        task_augment=cfg.task_augment,
        batch_size=cfg.task_batch_size,
        seed=derived_seed(cfg.seed, "source", stream),
        workers=cfg.workers,
    )


# ------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class ExperimentOutcome:
    results: tuple[RunResult, ...]
    table: str
    verdicts: tuple[str, ...]
    report_dir: Path
    seconds: float


def _trained(
    path: Path,
    build: Callable[[], TopDownModel],
    run: Callable[[TopDownModel], None],
    device: torch.device,
) -> TopDownModel:
    """Load ``path/model.safetensors`` if a previous run finished it, else build and run."""
    final = path / FINAL_FILE
    if final.exists():
        log.info("reusing %s", final)
        return load_checkpoint(final, device).model
    model = build()
    run(model)
    return model


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    device: torch.device,
    *,
    progress: Progress | None = None,
) -> ExperimentOutcome:
    """Run (or resume) the whole experiment into ``out_dir`` and write ``out_dir/report``."""
    t0 = time.perf_counter()
    progress = progress or SilentProgress()
    dist_info = distributed.current()
    out = Path(out_dir)
    validate_experiment(cfg)
    start = starting_model(cfg, device)
    codec = HeatmapCodec.for_model(start.config)
    options = DeviceOptions(device)

    # Stage 1: target data, rendered or split by rank 0 (the others read what it wrote).
    fresh = not (out / "config.yaml").exists()
    if dist_info.is_main:
        check_resumable(cfg, out)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if not (out / "provenance.json").exists():  # a resumed run keeps its first provenance
            write_json_atomic(out / "provenance.json", provenance(), indent=2)
        targets = [prepare_target(cfg, tc, out / "data", codec, progress) for tc in cfg.targets]
    distributed.barrier()
    if not dist_info.is_main:
        targets = [
            prepare_target(cfg, tc, out / "data", codec, SilentProgress()) for tc in cfg.targets
        ]
    try:  # on every rank, so that each stops with the same one line
        for target in targets:
            check_pool(target, max(cfg.shots))
            if cfg.semi is not None:
                check_twin_pool(target, max(cfg.shots))
    except DataError:
        if dist_info.is_main and fresh:  # a corrected config may then run into the same folder
            (out / "config.yaml").unlink(missing_ok=True)
            (out / "provenance.json").unlink(missing_ok=True)
        raise

    # Stage 2: shared pretraining.
    def pretrain(model: TopDownModel) -> None:
        assert cfg.pretrain is not None
        tick = progress.stage("pretraining (shared)", cfg.pretrain.steps)
        train(
            model,
            source_batches(cfg, codec, "pretrain"),
            cfg.pretrain,
            device,
            out_dir=out / "models" / "pretrain",
            run_config=cfg,
            on_step=lambda e: tick(1),
        )
        progress.close_stage()

    if cfg.pretrain is not None:
        first = start
        start = _trained(out / "models" / "pretrain", lambda: first, pretrain, device)

    # Stage 3: equal budgets on the same batches.
    stream = source_batches(cfg, codec, "continue")

    def continue_supervised(model: TopDownModel) -> None:
        tick = progress.stage("supervised", cfg.supervised.steps)
        train(
            model,
            stream,
            cfg.supervised,
            device,
            out_dir=out / "models" / "supervised",
            run_config=cfg,
            on_step=lambda e: tick(1),
        )
        progress.close_stage()

    def continue_meta(model: TopDownModel) -> None:
        tick = progress.stage("meta: Reptile", cfg.meta.meta_steps)
        meta_train(
            model,
            stream,
            cfg.meta,
            device,
            out_dir=out / "models" / "meta",
            run_config=cfg,
            on_step=lambda e: tick(1),
        )
        progress.close_stage()

    continued = {"supervised": continue_supervised, "meta": continue_meta}
    models: dict[str, TopDownModel] = {}
    for arm in cfg.arms:
        if arm == "as-is":
            models[arm] = start
        else:
            models[arm] = _trained(
                out / "models" / arm, lambda: copy.deepcopy(start), continued[arm], device
            )

    # Stage 4: few-shot adaptation and scoring, one job per (target, model, K, seed). Under
    # torchrun the jobs are dealt out to the ranks; each result is its own file. Semi-supervised
    # twins adapt at K = 0 too (on unlabelled people alone), so they have a job for every seed.
    results_dir = out / "results"
    twins = list(cfg.semi_twins)
    names = [*models, *(["scratch"] if cfg.from_scratch else []), *twins]
    job_list = (
        [Job(t, m, UNADAPTED, 0) for t in targets for m in models]
        + [Job(t, m, UNADAPTED, seed) for t in targets for seed in cfg.seeds for m in twins]
        + [
            Job(t, m, k, seed)
            for t in targets
            for k in cfg.shots
            for seed in cfg.seeds
            for m in names
        ]
    )
    mine = [job for i, job in enumerate(job_list) if i % dist_info.world_size == dist_info.rank]
    tick = progress.stage("adapt and evaluate", len(mine))
    for job in mine:
        if load_result(results_dir, job.key) is None:
            save_result(results_dir, run_job(job, cfg, models, codec, options, out / "predictions"))
        tick(1)
    progress.close_stage()
    distributed.barrier()
    results = [r for job in job_list if (r := load_result(results_dir, job.key)) is not None]
    if not dist_info.is_main:
        return ExperimentOutcome(tuple(results), "", (), out / "report", time.perf_counter() - t0)
    return write_report(cfg, out, results, targets, codec, time.perf_counter() - t0)


@dataclass(frozen=True)
class Job:
    """Score ``model`` on ``target`` after fine-tuning on K shots drawn by ``seed`` (K=0: as is)."""

    target: Target
    model: str
    shots: int
    seed: int

    @property
    def key(self) -> str:
        return RunResult(self.target.config.name, self.model, self.shots, self.seed, {}).key


def run_job(
    job: Job,
    cfg: ExperimentConfig,
    models: dict[str, TopDownModel],
    codec: HeatmapCodec,
    options: DeviceOptions,
    predictions_dir: Path | None = None,
) -> RunResult:
    """Fine-tune (K > 0) and score one job; its predictions go to ``predictions_dir`` (when
    given) as ``<job key>.json``. A twin (``<arm>+<method>``) starts from its arm and adapts on
    the arm's K shots (the same seeds) plus the pool's other people, unlabelled."""
    t0 = time.perf_counter()
    name = job.target.config.name
    arm, method = twin_arm(job.model)
    if arm in models:
        model = copy.deepcopy(models[arm])
    else:  # "scratch": random weights, the same for every K of a seed
        config = next(iter(models.values())).config
        model = seeded_model(config, derived_seed(cfg.seed, "scratch", job.seed))
    shot_seed, support_seed = shot_seeds(cfg.seed, name, job.shots, job.seed)
    shots: int | list[int] = job.shots
    tune = None
    if method is not None:
        if cfg.semi is None or cfg.semi.method != method:
            raise ConfigError(f"{job.model}: not a twin that the semi block of this config makes")
        shots, tune = twin_tune(
            cfg, job.target, job.shots, job.seed, shot_seed, support_seed, codec, options
        )
    score = adapt_and_score(
        model,
        job.target.dataset,
        shots,
        cfg.adapt,
        options,
        job.target.test,
        codec=codec,
        seed=job.seed,
        shot_seed=shot_seed,
        support_seed=support_seed,
        pool=job.target.pool_ids,
        augment=cfg.augment,
        results_path=None if predictions_dir is None else predictions_dir / f"{job.key}.json",
        tune=tune,
    )
    assert score.after is not None
    return RunResult(
        name,
        job.model,
        job.shots,
        job.seed,
        score.after.as_dict(),
        epoch_losses=score.epoch_losses,
        seconds=time.perf_counter() - t0,
        shot_image_ids=score.shot_image_ids,
    )


def write_report(
    cfg: ExperimentConfig,
    out: Path,
    results: Sequence[RunResult],
    targets: Sequence[Target],
    codec: HeatmapCodec,
    seconds: float,
) -> ExperimentOutcome:
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    table = format_table(rows)
    notes = verdicts(rows)
    write_text_atomic(
        report / "table.md",
        f"# {cfg.name}: few-shot adaptation, mean ± 95 % CI over {len(cfg.seeds)} seeds\n\n"
        + table
        + "\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n",
    )
    write_json_atomic(
        report / "table.json", {"rows": [r.to_dict() for r in rows], "verdicts": notes}, indent=1
    )

    figures = [
        ("Fig. 2: a source crop under each task augmentation", _figure2(cfg, codec, report).name),
        (
            f"Fig. 3: ground truth and each arm's predictions after fine-tuning on "
            f"K = {max(cfg.shots)} shots (seed {cfg.seeds[0]})",
            _figure3(cfg, out, targets, report).name,
        ),
        (
            "Fig. 4: training loss during the meta-test (few-shot fine-tuning)",
            meta_test_loss(results, report / "fig4_meta_test_loss.png").name,
        ),
        ("Test AP against K", k_curve(rows, report / "k_curve.png").name),
    ]
    if any("pck" in r.metrics for r in rows):
        curve = k_curve(rows, report / "k_curve_pck.png", metric="pck")
        figures.append((f"Test PCK@{PCK_ALPHA:g} against K", curve.name))
    write_index_html(
        report / "index.html",
        title=f"metapose experiment: {cfg.name}",
        rows=rows,
        figures=figures,
        notes=notes,
        config_yaml=(out / "config.yaml").read_text(),
        provenance=provenance(),
    )
    return ExperimentOutcome(tuple(results), table, tuple(notes), report, seconds)


def _figure2(cfg: ExperimentConfig, codec: HeatmapCodec, report: Path) -> Path:
    """A source crop (as the model sees it) and two draws of each task augmentation style."""
    rng = np.random.default_rng(derived_seed(cfg.seed, "figure2"))
    if cfg.source.domains:
        labelled = render_crop(get_domain(cfg.source.domains[0]), rng, *codec.input_size)
        image, person = labelled.image, person_instance(labelled)
    else:
        folder = cfg.source.coco[0]
        person = instances_from_coco(load_coco(folder.annotations, folder.image_dir))[0]
        assert isinstance(person.image, Path)
        image = read_rgb(person.image)
    base = make_sample(image, person, codec)
    grid = figure2(
        codec.normalization.invert(base.image.numpy()),
        base.keypoints.numpy(),
        TaskAugmenter(cfg.task_augment),
        rng,
    )
    path = report / "fig2_augmentations.png"
    write_rgb(path, grid)
    return path


def _figure3(cfg: ExperimentConfig, out: Path, targets: Sequence[Target], report: Path) -> Path:
    """The ground truth beside the predictions read back from the saved results of the largest K
    and the first seed (the title says which)."""
    import json

    panels = []
    k, seed = max(cfg.shots), cfg.seeds[0]
    for target in targets:
        name = target.config.name
        preds: dict[str, list[dict[str, object]]] = {}
        for model in (*map(str, cfg.arms), *cfg.semi_twins, "scratch"):
            file = out / "predictions" / f"{RunResult(name, model, k, seed, {}).key}.json"
            if file.exists():
                preds[model] = json.loads(file.read_text())
        batch = target.test.batches[0]
        for i in range(min(PANELS_PER_TARGET, int(batch.image.shape[0]))):
            codec = target.test.codec
            crop = codec.normalization.invert(batch.image[i].numpy())
            matrix = codec.crop_matrix(crop_params_of(batch, i))
            shown: dict[str, np.ndarray] = {}
            for model, entries in preds.items():
                kp = np.asarray(entries[i]["keypoints"], dtype=np.float64).reshape(-1, 3)
                kp[:, :2] = apply_affine(kp[:, :2], matrix)
                shown[model] = kp
            ground_truth = batch.keypoints[i].numpy().astype(np.float64)
            panels.append(PredictionPanel(f"{name} #{i + 1}", crop, shown, ground_truth))
    return prediction_grid(
        panels,
        report / "fig3_predictions.png",
        title=f"After fine-tuning on K = {k} shots, seed {seed}",
    )
