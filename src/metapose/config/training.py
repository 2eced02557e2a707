"""Training configuration: optimisers, supervised training, Reptile, the few-shot fine-tune, the
sources of training crops and the `metapose train` / `metapose meta` runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from metapose.config.data import TaskAugmentConfig, TopDownAugmentConfig, move_task_sampler
from metapose.config.loading import (
    MAX_BATCH,
    MAX_STEPS,
    MAX_WORKERS,
    MODEL_PATH,
    PATH,
    ConfigError,
    check_finite,
    check_int,
    check_seed,
)
from metapose.config.model import MAX_KEYPOINTS, ModelConfig

OptimizerName = Literal["sgd", "adam"]


@dataclass(frozen=True)
class OptimizerConfig:
    """``adam`` with ``beta1 = 0`` is the inner optimiser Nichol et al. (2018) use for Reptile."""

    name: OptimizerName = "adam"
    lr: float = 1e-3
    momentum: float = 0.0  # sgd only
    beta1: float = 0.9  # adam only
    beta2: float = 0.999  # adam only
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_finite(self, "optimizer")
        if self.lr <= 0:
            raise ConfigError(f"optimizer lr must be > 0, got {self.lr}")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ConfigError(f"adam betas must be in [0, 1), got ({self.beta1}, {self.beta2})")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optimizer momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer weight_decay must be >= 0, got {self.weight_decay}")


Amp = bool | Literal["auto"]
"""bfloat16 autocast: ``"auto"`` (CUDA only), ``True`` (CUDA and native-bf16 CPUs), ``False``
(float32 everywhere); :class:`metapose.device.DeviceOptions` holds the rule and its reasons."""


@dataclass(frozen=True)
class TrainConfig:
    """SimpleBaseline's schedule: Adam 1e-3, x0.1 at 90/140 and 120/140 of training."""

    steps: int = 1000
    batch_size: int = 32
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_milestones: tuple[float, ...] = (90 / 140, 120 / 140)  # fractions of ``steps``
    lr_gamma: float = 0.1
    checkpoint_every: int = 0  # steps; 0 = only at the end
    log_every: int = 10
    amp: Amp = "auto"  # bf16 autocast: "auto" on CUDA only, true also on native-bf16 CPUs
    channels_last: bool = True  # on CUDA
    # "train": BatchNorm statistics follow the batches (training from scratch); "frozen": they
    # stay the starting model's, as in Reptile's inner loop and the few-shot recipe, so that
    # continued training of a trained model on the source is compared on equal terms.
    batchnorm: Literal["train", "frozen"] = "train"

    def __post_init__(self) -> None:
        check_finite(self, "train")
        check_int("train", "steps", self.steps, 1, MAX_STEPS)
        check_int("train", "batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("train", "checkpoint_every", self.checkpoint_every, 0, MAX_STEPS)
        check_int("train", "log_every", self.log_every, 1, MAX_STEPS)
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ConfigError(
                f"train.lr_milestones are fractions in (0, 1), got {self.lr_milestones}"
            )
        # A factor above 1 grows the learning rate; a negative one turns descent into ascent.
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"train.lr_gamma must be in (0, 1], got {self.lr_gamma}")

    @property
    def images(self) -> int:
        return self.steps * self.batch_size


@dataclass(frozen=True)
class ReptileConfig:
    """Reptile as the paper uses it: tasks of 32 images, meta step 0.05 (§4.2)."""

    meta_steps: int = 15000
    tasks_per_step: int = 1  # >1 averages several adapted copies per meta step (batched Reptile)
    inner_steps: int = 4
    inner: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="sgd", lr=1e-2))
    meta_step: float = 0.05
    meta_step_final: float | None = None  # linear annealing of beta to this value when set
    batch_size: int = 32  # images per task
    # "frozen": the inner loop keeps BatchNorm statistics, as the frozen-BatchNorm few-shot
    # recipe does (AdaptConfig.batchnorm); "train" (the paper's): they follow each task's batch.
    batchnorm: Literal["train", "frozen"] = "train"
    checkpoint_every: int = 0
    log_every: int = 10
    amp: Amp = "auto"
    channels_last: bool = True

    def __post_init__(self) -> None:
        check_finite(self, "meta")
        check_int("meta", "meta_steps", self.meta_steps, 1, MAX_STEPS)
        check_int("meta", "tasks_per_step", self.tasks_per_step, 1, MAX_BATCH)
        check_int("meta", "inner_steps", self.inner_steps, 1, MAX_STEPS)
        check_int("meta", "batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("meta", "checkpoint_every", self.checkpoint_every, 0, MAX_STEPS)
        check_int("meta", "log_every", self.log_every, 1, MAX_STEPS)
        for name in ("meta_step", "meta_step_final"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"meta.{name} must be in [0, 1], got {value}")

    @property
    def images_per_meta_step(self) -> int:
        """Images processed (forward and backward) per meta step: the compute budget unit."""
        return self.tasks_per_step * self.inner_steps * self.batch_size

    def beta(self, step: int) -> float:
        """Meta step size at meta step ``step`` (0-based), linearly annealed when asked."""
        if self.meta_step_final is None or self.meta_steps == 1:
            return self.meta_step
        frac = step / (self.meta_steps - 1)
        return self.meta_step + frac * (self.meta_step_final - self.meta_step)


BatchNormMode = Literal["train", "frozen", "reestimate"]
LrSchedule = Literal["constant", "cosine"]
# Epochs over K shots: a fine-tune of 10**5 epochs is already days; more is a typo.
MAX_EPOCHS = 10**5


@dataclass(frozen=True)
class AdaptConfig:
    """Few-shot fine-tuning (the paper's meta-test: ``epochs`` over the K shots, 20 in §4.3).

    The defaults are the recipe measured best on real LSPet photos from the COCO-trained
    PP-TinyPose (``benchmarks/recipes.py``; README "Which fine-tuning recipe"): all weights,
    Adam at 1e-4, BatchNorm statistics frozen. The paper's recipe (Adam 1e-3, BatchNorm in train
    mode) made that model 13 AP points worse than not adapting it; it stays available here
    (``optimizer: {lr: 1.0e-3}, batchnorm: train``).

    Beyond the paper's full fine-tune: ``head_only`` freezes the backbone; ``backbone_lr_scale``
    gives the backbone a fraction of the learning rate; ``batchnorm``: ``train`` (statistics
    follow the shots' batches), ``frozen`` (the starting model's statistics stay) or
    ``reestimate`` (statistics re-measured on the shots once, then frozen: AdaBN, Li et al.
    2017); ``lr_schedule``: ``constant``, or ``cosine`` (the learning rate falls from the
    optimiser's to 0 along half a cosine over the steps taken; Loshchilov & Hutter, 2017);
    ``l2sp`` pulls the weights towards the starting ones (L2-SP, Li et al., ICML 2018:
    ``l2sp / 2 * ||w - w0||^2`` added to the loss).

    ``select_epochs``: ``epochs`` becomes the most that may be taken. A quarter of the shots'
    images is held out, the rest fine-tuned for ``epochs`` while the held-out crops' loss is
    measured after every epoch (and before the first), and the count with the lowest loss (0:
    leave the model as it is) is then run from the start on all the shots
    (:func:`metapose.training.adapt.choose_epochs`).
    """

    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-4))
    epochs: int = 20
    batch_size: int = 32
    head_only: bool = False
    backbone_lr_scale: float = 1.0
    batchnorm: BatchNormMode = "frozen"
    l2sp: float = 0.0
    select_epochs: bool = False
    lr_schedule: LrSchedule = "constant"

    def __post_init__(self) -> None:
        check_int("adapt", "epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("adapt", "batch_size", self.batch_size, 1, MAX_BATCH)
        if self.select_epochs and self.lr_schedule != "constant":
            # the count would be chosen part-way down a schedule spanning the most epochs, then
            # run down a schedule spanning only the count: not the fine-tune that was chosen
            raise ConfigError("adapt.select_epochs needs lr_schedule: constant")
        if not math.isfinite(self.backbone_lr_scale) or self.backbone_lr_scale < 0:
            raise ConfigError(
                f"adapt.backbone_lr_scale must be finite and >= 0, got {self.backbone_lr_scale}"
            )
        if not math.isfinite(self.l2sp) or self.l2sp < 0:
            raise ConfigError(f"adapt.l2sp must be finite and >= 0, got {self.l2sp}")


@dataclass(frozen=True)
class CocoFolderConfig:
    """A COCO-format person-keypoint dataset on disk: the JSON and its image folder."""

    annotations: str = field(metadata=PATH)
    image_dir: str | None = field(default=None, metadata=PATH)


@dataclass(frozen=True)
class SourceConfig:
    """Where the source tasks come from: synthetic domains rendered on the fly, COCO-format
    folders of real people, or both (each crop picks one of them with equal probability)."""

    domains: tuple[str, ...] = ("rgb",)
    coco: tuple[CocoFolderConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.domains and not self.coco:
            raise ConfigError("source needs at least one of domains or coco")


def read_data_folder(data: dict[str, Any]) -> dict[str, Any]:
    """Read configurations written when ``data`` was one COCO folder (``data: {annotations,
    image_dir}``) or synthetic domains, and ``val`` carried a ``domains`` key: ``data`` is now a
    :class:`SourceConfig` and ``val`` a :class:`CocoFolderConfig`."""
    data = dict(data)
    old = data.get("data")
    if isinstance(old, dict) and ("annotations" in old or "image_dir" in old):
        folder = {k: old[k] for k in ("annotations", "image_dir") if k in old}
        data["data"] = {"domains": [], "coco": [folder]}
    val = data.get("val")
    if isinstance(val, dict) and "domains" in val:
        data["val"] = {k: v for k, v in val.items() if k != "domains"}
    return data


@dataclass(frozen=True)
class TrainRunConfig:
    """``metapose train``: supervised training of one model."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    # Training crops: one COCO folder alone is read in shuffled epochs; synthetic domains, several
    # folders or both are drawn crop by crop (see metapose.training.sources.batches_for).
    data: SourceConfig = field(default_factory=SourceConfig)
    val: CocoFolderConfig | None = None  # a COCO-format validation set, every validate_every
    validate_every: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    workers: int = 0

    def __post_init__(self) -> None:
        check_seed("", "seed", self.seed)
        check_int("", "workers", self.workers, 0, MAX_WORKERS)
        check_int("", "validate_every", self.validate_every, 0, MAX_STEPS)

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Read configurations with the earlier ``data``/``val`` keys."""
        return read_data_folder(data)


@dataclass(frozen=True)
class MetaRunConfig:
    """``metapose meta``: Reptile meta-training of initial weights."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    task_augment: TaskAugmentConfig = field(default_factory=TaskAugmentConfig)
    data: SourceConfig = field(default_factory=SourceConfig)
    meta: ReptileConfig = field(default_factory=ReptileConfig)
    workers: int = 0

    def __post_init__(self) -> None:
        check_seed("", "seed", self.seed)
        check_int("", "workers", self.workers, 0, MAX_WORKERS)

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Read configurations with a root ``task_sampler`` or the earlier ``data`` keys."""
        return read_data_folder(move_task_sampler(data))


SemiMethod = Literal["adabn", "mean_teacher", "distill"]


# Below this many shots, distillation's teacher fine-tuned on them is unreliable: on thermal
# renders with 4 shots it ended below the teacher as it was on 2 of 5 draws, and on those two the
# distilled model ended below the shots alone (README, "Unlabelled images of the domain"); with
# 16 the teacher gained on every draw.
FEW_SHOTS_FOR_TEACHER = 16


@dataclass(frozen=True)
class SemiConfig:
    """Semi-supervised few-shot adaptation with unlabelled target images
    (:func:`metapose.training.semi.fine_tune_with_unlabelled`).

    ``adabn``: BatchNorm statistics re-measured on ``adabn_batches`` batches of unlabelled crops
    (AdaBN, Li et al. 2017), then the usual fine-tune on the shots. ``mean_teacher``: the model is
    first fine-tuned on the shots (when there are any); an EMA copy of it (decay ``ema_decay``)
    predicts flip-averaged heatmaps on plain unlabelled crops; the student learns, for ``steps``
    steps, on a hard view: the crop and the teacher's heatmaps warped by one random affine
    (rotation up to ``rotation`` degrees, scale in ``1 +- scale``) plus ``cutouts`` patches of
    ``cutout_size`` (a fraction of the crop side) filled with zeros on its image only. Joints whose
    warped teacher peak is below ``threshold`` are left out. The loss is JointsMSE on a batch of
    the shots plus ``weight`` times the masked MSE to the teacher's heatmaps; ``final``: which of
    the two models is returned.

    ``distill``: a larger ``teacher`` (a zoo name or checkpoint file; default the 256x192 zoo
    model), first fine-tuned on the shots by the same :class:`AdaptConfig` when ``teacher_adapt``
    and there are shots, labels every unlabelled person with flip test; joints it scores at least
    ``threshold`` become labels, the others unknown, and people with fewer than ``min_joints``
    such joints are dropped. The model then takes ``steps`` steps on batches of
    ``unlabelled_batch`` pseudo-labelled people plus ``labelled_batch`` shots (both augmented as
    the shots are), JointsMSE over both. People whose box is shorter than
    ``min_relative_height`` times the tallest person of the same image are not labelled
    (:func:`metapose.data.unlabelled.main_people`; 0 keeps everyone). ``teacher_scales``: the
    teacher's multi-scale test, each person's box scaled about its centre by each factor and the
    joints averaged over the scales (:func:`metapose.inference.distill.pseudo_label`).

    ``lr`` and ``lr_schedule``: the optimiser's learning rate and its schedule for the ``steps``
    on unlabelled people (distillation's student, the mean teacher's student); ``None`` keeps the
    :class:`AdaptConfig`'s. The shots' fine-tunes (the teacher's, the mean teacher's first) keep
    the :class:`AdaptConfig`'s own (:meth:`student_adapt`).
    """

    method: SemiMethod = "distill"
    steps: int = 200
    unlabelled_batch: int = 16
    weight: float = 1.0
    ema_decay: float = 0.99
    threshold: float = 0.3
    rotation: float = 30.0  # degrees
    scale: float = 0.25
    cutouts: int = 1
    cutout_size: float = 0.25
    adabn_batches: int = 8
    final: Literal["teacher", "student"] = "teacher"
    teacher: str = field(default="pp-tinypose-256x192", metadata=MODEL_PATH)
    teacher_adapt: bool = True
    labelled_batch: int = 8
    min_joints: int = 4
    min_relative_height: float = 0.0
    teacher_scales: tuple[float, ...] = (1.0,)
    lr: float | None = None
    lr_schedule: LrSchedule | None = None

    def teacher_on_few_shots(self, shots: int) -> bool:
        """Whether distillation would fine-tune its teacher on 1 to ``FEW_SHOTS_FOR_TEACHER - 1``
        labelled images, too few for that fine-tune to be trusted."""
        return self.method == "distill" and self.teacher_adapt and 0 < shots < FEW_SHOTS_FOR_TEACHER

    def student_adapt(self, adapt: AdaptConfig) -> AdaptConfig:
        """``adapt`` with this config's learning rate and schedule where set: the settings of the
        steps on unlabelled people."""
        optimizer = adapt.optimizer if self.lr is None else replace(adapt.optimizer, lr=self.lr)
        schedule = adapt.lr_schedule if self.lr_schedule is None else self.lr_schedule
        return replace(adapt, optimizer=optimizer, lr_schedule=schedule)

    @property
    def crops_seen(self) -> int:
        """Unlabelled crops the method passes through the model: ``adabn_batches`` batches
        (AdaBN) or one batch a step. A larger set of people adds nothing the model sees."""
        batches = self.adabn_batches if self.method == "adabn" else self.steps
        return batches * self.unlabelled_batch

    def __post_init__(self) -> None:
        check_finite(self, "semi")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"semi.lr must be > 0, got {self.lr}")
        if not self.teacher_scales or len(self.teacher_scales) > 8:
            raise ConfigError("semi.teacher_scales must hold 1 to 8 factors")
        for i, factor in enumerate(self.teacher_scales):
            if not 0.5 <= factor <= 2:
                raise ConfigError(f"semi.teacher_scales[{i}] must be in [0.5, 2], got {factor}")
        if not 0 <= self.min_relative_height <= 1:
            raise ConfigError(
                f"semi.min_relative_height must be in [0, 1], got {self.min_relative_height}"
            )
        check_int("semi", "labelled_batch", self.labelled_batch, 1, MAX_BATCH)
        check_int("semi", "min_joints", self.min_joints, 0, MAX_KEYPOINTS)
        check_int("semi", "steps", self.steps, 1, MAX_STEPS)
        check_int("semi", "unlabelled_batch", self.unlabelled_batch, 1, MAX_BATCH)
        check_int("semi", "cutouts", self.cutouts, 0, 64)
        check_int("semi", "adabn_batches", self.adabn_batches, 1, MAX_STEPS)
        if self.weight < 0:
            raise ConfigError(f"semi.weight must be >= 0, got {self.weight}")
        if not 0 <= self.ema_decay <= 1:
            raise ConfigError(f"semi.ema_decay must be in [0, 1], got {self.ema_decay}")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"semi.threshold must be in [0, 1), got {self.threshold}")
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"semi.rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0 <= self.scale < 1:
            raise ConfigError(f"semi.scale must be in [0, 1), got {self.scale}")
        if not 0 < self.cutout_size <= 1:
            raise ConfigError(f"semi.cutout_size must be in (0, 1], got {self.cutout_size}")
