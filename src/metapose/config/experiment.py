"""The paper's experiment: the target domains and the comparison of the arms (Table 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from metapose.config.data import TaskAugmentConfig, TopDownAugmentConfig, move_task_sampler
from metapose.config.loading import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_WORKERS,
    MODEL_PATH,
    PATH,
    ConfigError,
    check_finite,
    check_int,
    check_seed,
)
from metapose.config.model import (
    MAX_INPUT_SIDE,
    ModelConfig,
)
from metapose.config.training import (
    AdaptConfig,
    ReptileConfig,
    SemiConfig,
    SourceConfig,
    TrainConfig,
)
from metapose.errors import cut
from metapose.files import show

# PCK's threshold as a fraction of the torso diameter: the usual LSP convention (PCK@0.2).
PCK_ALPHA = 0.2


@dataclass(frozen=True)
class TargetConfig:
    """A target domain: a synthetic domain rendered to disk, or a dataset on disk.

    ``annotations`` is a COCO person-keypoint JSON, or an LSP/LSPet ``joints.mat`` (converted
    into the run folder with :func:`metapose.data.lsp.import_lsp`; ``image_dir`` is then needed).

    Synthetic targets get a pool of ``pool_size`` images to draw the K shots from and a disjoint
    test split of ``test_size`` images (different seeds). COCO-format targets are split by image id
    ranges (inclusive) ``pool_ids`` and ``test_ids``.
    """

    name: str
    domain: str | None = None
    annotations: str | None = field(default=None, metadata=PATH)
    image_dir: str | None = field(default=None, metadata=PATH)
    pool_size: int = 200
    test_size: int = 100
    scene_size: tuple[int, int] = (320, 240)  # (width, height) of synthetic scenes
    pool_ids: tuple[int, int] | None = None
    test_ids: tuple[int, int] | None = None
    test_limit: int | None = None  # evaluate on the first N test images only (CPU budgets)
    keypoints: tuple[str, ...] | None = None  # evaluate on these keypoints only (partial labels)
    pck_alpha: float = PCK_ALPHA

    def __post_init__(self) -> None:
        check_finite(self, "target")
        if (self.domain is None) == (self.annotations is None):
            raise ConfigError(
                f"target {show(self.name)}: give exactly one of domain or annotations"
            )
        if self.annotations is not None and (self.pool_ids is None or self.test_ids is None):
            raise ConfigError(
                f"target {show(self.name)}: a COCO-format target needs pool_ids, test_ids"
            )
        owner = f"target {cut(self.name)}"
        if self.pool_ids is not None and self.test_ids is not None:
            (pool_lo, pool_hi), (test_lo, test_hi) = self.pool_ids, self.test_ids
            if (
                pool_lo > pool_hi
                or test_lo > test_hi
                or not (pool_hi < test_lo or test_hi < pool_lo)
            ):
                # the shots (and a twin's unlabelled images) would come from the test photos
                raise ConfigError(
                    f"{owner}: pool_ids {pool_lo}-{pool_hi} and test_ids {test_lo}-{test_hi} must "
                    "be ranges (low, high) that do not overlap"
                )
        check_int(owner, "pool_size", self.pool_size, 1, MAX_COUNT)
        check_int(owner, "test_size", self.test_size, 1, MAX_COUNT)
        if self.test_limit is not None:
            check_int(owner, "test_limit", self.test_limit, 1, MAX_COUNT)
        for i, side in enumerate(self.scene_size):
            check_int(owner, f"scene_size[{i}]", side, 1, MAX_INPUT_SIDE)
        if not self.pck_alpha > 0:
            raise ConfigError(f"{owner}: pck_alpha must be > 0, got {self.pck_alpha}")

    @property
    def synthetic(self) -> bool:
        return self.domain is not None


def _default_targets() -> tuple[TargetConfig, ...]:
    return (
        TargetConfig(name="thermal", domain="thermal"),
        TargetConfig(name="unique", domain="unique"),
    )


ArmName = Literal["as-is", "supervised", "meta"]
ARMS: tuple[ArmName, ...] = ("as-is", "supervised", "meta")
TWIN_SEPARATOR = "+"  # an arm's semi-supervised twin is named "<arm>+<method>", e.g. "meta+distill"


def semi_twin(arm: str, method: str) -> str:
    """The name of ``arm``'s twin adapted with unlabelled images by ``method`` too."""
    return f"{arm}{TWIN_SEPARATOR}{method}"


def twin_arm(model: str) -> tuple[str, str | None]:
    """``(arm, method)`` of a model name: ``("meta", "distill")`` for ``meta+distill``,
    ``("meta", None)`` for ``meta`` itself."""
    arm, _, method = model.partition(TWIN_SEPARATOR)
    return arm, method or None


@dataclass(frozen=True)
class ExperimentConfig:
    """The paper's comparison (Table 1): is a meta-learned initial model better to adapt?

    Every arm starts from the same weights: ``init`` (a bundled model's name or a checkpoint,
    whose model config is then used) or random ones, optionally ``pretrain``-ed on the source.
    ``as-is`` is that start (the paper's "HPE baseline model"); ``supervised`` continues it with
    supervised steps and ``meta`` with Reptile, on the very same stream of augmented source
    batches and the same number of images. Each arm is then fine-tuned (``adapt``) on K shots of
    every target, for every K and seed, and scored on the target's test split; unadapted too.

    With ``semi`` set every arm also gets a twin, ``<arm>+<method>`` (:func:`semi_twin`), adapted
    on the same K shots plus the target's other pool images as unlabelled people (one per
    annotated box, its keypoints never read) by ``semi.method``; at K = 0 on those alone.
    """

    name: str = "paper"
    seed: int = 0
    init: str | None = field(default=None, metadata=MODEL_PATH)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    task_augment: TaskAugmentConfig = field(default_factory=TaskAugmentConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    pretrain: TrainConfig | None = field(default_factory=TrainConfig)
    arms: tuple[ArmName, ...] = ARMS
    supervised: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=60000, lr_milestones=(0.75,))
    )
    meta: ReptileConfig = field(default_factory=ReptileConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    targets: tuple[TargetConfig, ...] = field(default_factory=_default_targets)
    shots: tuple[int, ...] = (16, 32)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    from_scratch: bool = False  # also fine-tune randomly initialised weights on the K shots
    semi: SemiConfig | None = None  # also adapt each arm with unlabelled pool images (twins)
    eval_batch_size: int = 64
    workers: int = 0  # DataLoader worker processes for the source stream

    def __post_init__(self) -> None:
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms must name each of {list(ARMS)} at most once, got {self.arms}")
        if "supervised" in self.arms and "meta" in self.arms:
            meta_images = self.meta.meta_steps * self.meta.images_per_meta_step
            if abs(self.supervised.images - meta_images) >= self.supervised.batch_size:
                raise ConfigError(
                    f"unequal budgets: supervised trains on {self.supervised.images} images "
                    f"(steps x batch_size), meta on {meta_images} "
                    "(meta_steps x tasks_per_step x inner_steps x batch_size)"
                )
            if self.meta.batch_size != self.supervised.batch_size:
                raise ConfigError(
                    "supervised.batch_size and meta.batch_size must match (same batches)"
                )
        if self.init is not None and self.model != ModelConfig():
            raise ConfigError(
                f"give either init ({show(self.init)}, whose own model config is used) or model"
            )
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"target names repeat: {names}")
        if not self.shots:
            raise ConfigError("shots must not be empty")
        for i, shots in enumerate(self.shots):
            check_int("", f"shots[{i}]", shots, 1, MAX_COUNT)
        # a rendered pool has one labelled person an image; the twins need one image beside K
        needed = max(self.shots) + (self.semi is not None)
        for t in self.targets:
            if t.synthetic and t.pool_size < needed:
                raise ConfigError(
                    f"target {t.name!r}: pool_size {t.pool_size} is too small for K = "
                    f"{max(self.shots)} shots"
                    + (" plus unlabelled pool images for the semi twins" if self.semi else "")
                    + f": give pool_size >= {needed}"
                )
        if not self.seeds:
            raise ConfigError("seeds must not be empty")
        check_seed("", "seed", self.seed)
        for i, seed in enumerate(self.seeds):
            check_seed("", f"seeds[{i}]", seed)
        check_int("", "eval_batch_size", self.eval_batch_size, 1, MAX_BATCH)
        check_int("", "workers", self.workers, 0, MAX_WORKERS)

    @property
    def semi_twins(self) -> tuple[str, ...]:
        """The arms' semi-supervised twins, in the arms' order (none without ``semi``)."""
        if self.semi is None:
            return ()
        method = self.semi.method
        return tuple(semi_twin(arm, method) for arm in self.arms)

    @property
    def task_batch_size(self) -> int:
        """Crops per source batch (a task), shared by the supervised and meta arms."""
        return self.meta.batch_size if "meta" in self.arms else self.supervised.batch_size

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Read configurations written when the supervised arm was called ``baseline``, or with a
        root ``task_sampler``."""
        if "baseline" in data and "supervised" not in data:
            data = dict(data)
            data["supervised"] = data.pop("baseline")
        return move_task_sampler(data)
