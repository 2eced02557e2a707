"""The experiment's target domains: a synthetic domain rendered into the run folder, or a
COCO-format (or LSP) dataset on disk, split into the pool the K shots are drawn from and a test
split cropped once for every evaluation.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

from metapose.config import ConfigError, ExperimentConfig, TargetConfig
from metapose.data.coco import CocoDataset, load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.lsp import import_lsp
from metapose.errors import DataError
from metapose.evaluation.evaluate import EvalSet, make_eval_set
from metapose.evaluation.few_shot import image_ids_in
from metapose.progress import Progress
from metapose.synth.domains import get_domain
from metapose.synth.writer import write_synth_dataset
from metapose.training.few_shot import labelled_images

log = logging.getLogger(__name__)


def derived_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from named parts (the same on every machine and Python run)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def shot_seeds(seed: int, target: str, shots: int, job_seed: int) -> tuple[int, int]:
    """The seeds that draw a job's K shots and augment its support set: an experiment of seed
    ``seed``, ``shots`` K on ``target``, its seed ``job_seed``."""
    return (
        derived_seed(seed, "shots", target, shots, job_seed),
        derived_seed(seed, "support", target, shots, job_seed),
    )


@dataclass(frozen=True)
class Target:
    config: TargetConfig
    dataset: CocoDataset  # the shot pool's images (and, for real targets, the test images too)
    pool_ids: tuple[int, ...]
    test: EvalSet


def _synthetic_split(
    cfg: ExperimentConfig,
    target: TargetConfig,
    split: str,
    size: int,
    root: Path,
    progress: Progress,
) -> CocoDataset:
    assert target.domain is not None
    folder = root / target.name / split
    annotation_file = folder / "annotations" / f"person_keypoints_{split}.json"
    if not annotation_file.exists():
        width, height = target.scene_size
        tick = progress.stage(f"render {target.name} {split}", size)
        write_synth_dataset(
            get_domain(target.domain),
            size,
            derived_seed(cfg.seed, "target", target.name, split),
            folder,
            width=width,
            height=height,
            split=split,
            progress=tick,
        )
        progress.close_stage()
    return load_coco(annotation_file)


def prepare_target(
    cfg: ExperimentConfig,
    target: TargetConfig,
    root: Path,
    codec: HeatmapCodec,
    progress: Progress,
) -> Target:
    if target.synthetic:
        pool = _synthetic_split(cfg, target, "pool", target.pool_size, root, progress)
        test = _synthetic_split(cfg, target, "test", target.test_size, root, progress)
        pool_ids = tuple(img.id for img in pool.images)
    else:
        assert (
            target.annotations is not None
            and target.pool_ids is not None
            and target.test_ids is not None
        )
        annotations = Path(target.annotations)
        if annotations.suffix == ".mat":  # LSP / LSPet joints: converted once into the run
            converted = root / target.name / "annotations.json"
            if not converted.exists():
                if target.image_dir is None:
                    raise ConfigError(f"target {target.name!r}: an LSP joints.mat needs image_dir")
                import_lsp(annotations, target.image_dir, converted)
            annotations = converted
        full = load_coco(annotations, target.image_dir)
        pool_ids = tuple(image_ids_in(full, target.pool_ids))
        pool, test = full, full.subset(image_ids_in(full, target.test_ids))
    if target.test_limit is not None:
        test = test.subset([i.id for i in test.images[: target.test_limit]])
    test_set = make_eval_set(
        test,
        codec,
        keypoints=target.keypoints,
        pck_alpha=target.pck_alpha,
        batch_size=cfg.eval_batch_size,
    )
    return Target(target, pool, pool_ids, test_set)


def check_pool(target: Target, shots: int) -> None:
    """Before any training: ``target``'s pool has ``shots`` labelled images to draw K from; else
    one :class:`DataError` naming the pool's annotation file (the twins' own check:
    :func:`metapose.experiment.twins.check_twin_pool`)."""
    labelled = len(labelled_images(target.dataset, target.pool_ids))
    if shots > labelled:
        raise DataError(
            target.dataset.annotation_file,
            f"target {target.config.name!r}: K = {shots} shots asked for but its pool has only "
            f"{labelled} labelled images: ask for fewer shots or give a larger pool",
        )


# ------------------------------------------------------------------------------ the run
