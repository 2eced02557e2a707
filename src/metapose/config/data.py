"""Data configuration: SimpleBaseline crop augmentation and the task augmentation (paper §4.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from metapose.config.loading import ConfigError, check_finite, check_int
from metapose.files import show


@dataclass(frozen=True)
class TopDownAugmentConfig:
    """SimpleBaseline training augmentation of the person crop."""

    scale_factor: float = 0.3
    rotation_factor: float = 40.0  # degrees; drawn from N(0, f) clipped to +-2f
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.0
    half_body_min_joints: int = 8

    def __post_init__(self) -> None:
        check_finite(self, "augment")
        if not 0 <= self.scale_factor < 1:
            raise ConfigError(f"augment.scale_factor must be in [0, 1), got {self.scale_factor}")
        for name in ("rotation_prob", "flip_prob", "half_body_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {value}")
        check_int("augment", "half_body_min_joints", self.half_body_min_joints, 0, 1024)


# ------------------------------------------------------------ task augmentation (paper §4.2)

Style = Literal["none", "affine", "elastic", "perspective", "composed"]
# How a task (one batch of source crops) is drawn: "mixed" (the paper's) draws the source and the
# augmentation style per crop, "style" once per task for all its crops.
TaskSampler = Literal["mixed", "style"]
Warp = Literal["affine", "perspective", "elastic"]

STYLES: tuple[Style, ...] = get_args(Style)
PAPER_STYLES: tuple[Style, ...] = ("affine", "elastic", "perspective")  # §4.2: one per image
# Corner jitter is clipped at this many standard deviations so that, with scale < 0.25, no corner
# leaves its quadrant of the crop and the viewed quadrilateral stays convex.
PERSPECTIVE_CLIP = 2.0
MAX_PERSPECTIVE_SCALE = 0.5 / PERSPECTIVE_CLIP


def _check_prob(owner: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}.prob must be in [0, 1], got {value}")


@dataclass(frozen=True)
class AffineWarpConfig:
    """Random affine about the crop centre: zoom, rotation, shear and translation."""

    prob: float = 1.0  # chance the warp is applied when its style is chosen
    scale: tuple[float, float] = (0.85, 1.15)  # zoom range, drawn log-uniformly
    rotation: float = 20.0  # degrees, drawn uniformly from [-rotation, rotation]
    shear: float = 12.0  # degrees per axis, drawn uniformly from [-shear, shear]
    translate: float = 0.05  # fraction of the crop's width/height, uniform in [-t, t]

    def __post_init__(self) -> None:
        check_finite(self, "task_augment.affine")
        _check_prob("task_augment.affine", self.prob)
        low, high = self.scale
        if not 0 < low <= high:
            raise ConfigError(
                f"task_augment.affine.scale must be 0 < low <= high, got {self.scale}"
            )
        if not 0 <= self.rotation <= 180:
            raise ConfigError(
                f"task_augment.affine.rotation must be in [0, 180], got {self.rotation}"
            )
        if not 0 <= self.shear < 90:
            raise ConfigError(f"task_augment.affine.shear must be in [0, 90), got {self.shear}")
        if not 0 <= self.translate <= 1:
            raise ConfigError(
                f"task_augment.affine.translate must be in [0, 1], got {self.translate}"
            )


@dataclass(frozen=True)
class ElasticWarpConfig:
    """Simard et al. (2003) elastic field: noise in [-1, 1], Gaussian ``sigma``, times ``alpha``.

    Both are in crop pixels, so the same values deform a smaller crop relatively more. The
    defaults bend limbs by about 3.3 px RMS (8 px at most) on a 192 x 256 crop and rarely need
    damping to :data:`MAX_FIELD_LIPSCHITZ`.
    """

    prob: float = 1.0
    alpha: float = 250.0
    sigma: float = 20.0

    def __post_init__(self) -> None:
        check_finite(self, "task_augment.elastic")
        _check_prob("task_augment.elastic", self.prob)
        if self.alpha < 0:
            raise ConfigError(f"task_augment.elastic.alpha must be >= 0, got {self.alpha}")
        if self.sigma <= 0:
            raise ConfigError(f"task_augment.elastic.sigma must be > 0, got {self.sigma}")


@dataclass(frozen=True)
class PerspectiveWarpConfig:
    """The crop shows a random quadrilateral of the input: its corners jitter by N(0, scale)."""

    prob: float = 1.0
    scale: float = 0.06  # corner jitter std as a fraction of the crop's width/height

    def __post_init__(self) -> None:
        check_finite(self, "task_augment.perspective")
        _check_prob("task_augment.perspective", self.prob)
        if not 0 <= self.scale < MAX_PERSPECTIVE_SCALE:
            raise ConfigError(
                f"task_augment.perspective.scale must be in [0, {MAX_PERSPECTIVE_SCALE}), "
                f"got {self.scale}"
            )


@dataclass(frozen=True)
class TaskAugmentConfig:
    """Task augmentation (paper §4.2): the styles drawn and each warp's strength and probability.

    ``styles`` are drawn with ``style_weights`` (uniform when empty); the default is the paper's
    one transform out of three. ``sampler``: whether each crop of a task draws its own source and
    style (``mixed``, the paper's) or the whole task shares one (``style``).
    """

    sampler: TaskSampler = "mixed"
    styles: tuple[Style, ...] = PAPER_STYLES
    style_weights: tuple[float, ...] = ()
    affine: AffineWarpConfig = field(default_factory=AffineWarpConfig)
    elastic: ElasticWarpConfig = field(default_factory=ElasticWarpConfig)
    perspective: PerspectiveWarpConfig = field(default_factory=PerspectiveWarpConfig)

    def __post_init__(self) -> None:
        check_finite(self, "task_augment")
        if not self.styles:
            raise ConfigError("task_augment.styles must name at least one style")
        for style in self.styles:
            if style not in STYLES:
                raise ConfigError(
                    f"task_augment.styles: unknown style {show(style)} (known: {STYLES})"
                )
        if len(set(self.styles)) != len(self.styles):
            raise ConfigError(f"task_augment.styles repeat: {self.styles}")
        if self.style_weights:
            if len(self.style_weights) != len(self.styles):
                raise ConfigError(
                    f"task_augment.style_weights has {len(self.style_weights)} entries for "
                    f"{len(self.styles)} styles"
                )
            if min(self.style_weights) < 0 or sum(self.style_weights) <= 0:
                raise ConfigError(
                    "task_augment.style_weights must be >= 0 with a positive sum, "
                    f"got {self.style_weights}"
                )


def move_task_sampler(data: dict[str, Any]) -> dict[str, Any]:
    """Read configurations written when the task sampler was a root key (``task_sampler``), not
    ``task_augment.sampler``."""
    if "task_sampler" not in data:
        return data
    data = dict(data)
    task_augment = data.get("task_augment")
    task_augment = dict(task_augment) if isinstance(task_augment, dict) else {}
    task_augment.setdefault("sampler", data.pop("task_sampler"))
    data["task_augment"] = task_augment
    return data
