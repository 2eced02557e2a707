"""Configuration: nested frozen dataclasses and their YAML loading/saving.

The defaults are the documented experiment. YAML may override only fields that exist: an unknown
key, a wrong type or a value out of range is an error naming the key. Each component receives its
own sub-config, never the root.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import numpy as np
import yaml

T = TypeVar("T")

RESNET_DEPTHS = (18, 34, 50, 101, 152)

# Field metadata marking a file or folder path: relative paths in a YAML file are resolved
# against that file's folder when it is loaded (see load_config), so a run does not depend on the
# shell's current directory. MODEL_PATH: a checkpoint path or a bundled model's name (kept as is).
PATH: dict[str, str] = {"path": "file"}
MODEL_PATH: dict[str, str] = {"path": "model"}


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


# ----------------------------------------------------------------------------- the configs


RGB_CHANNELS = 3
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(rgb / 255 - mean) / std`` of a model's input; RGB, in ``[0, 1]`` units."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if len(self.mean) != RGB_CHANNELS or len(self.std) != RGB_CHANNELS:
            raise ConfigError(
                f"normalization needs 3 values (RGB) each, got {self.mean} and {self.std}"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) <= 0:
            raise ConfigError(f"normalization.std must be finite and > 0, got {self.std}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = (image.astype(np.float32) / PIXEL_MAX - mean) / std
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def invert(self, tensor: np.ndarray) -> np.ndarray:
        """``(3, H, W)`` float32 -> ``(H, W, 3)`` uint8 RGB, for drawing."""
        image = tensor.transpose(1, 2, 0) * np.asarray(self.std) + np.asarray(self.mean)
        return np.clip(image * PIXEL_MAX + 0.5, 0, PIXEL_MAX).astype(np.uint8)

    def convert(self, images: np.ndarray, target: Normalization) -> np.ndarray:
        """``(B, 3, H, W)`` images normalised by ``self`` -> normalised by ``target``."""
        if target == self:
            return images
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        new_mean, new_std = np.asarray(target.mean), np.asarray(target.std)
        scale = (std / new_std).astype(np.float32)[:, None, None]
        shift = ((mean - new_mean) / new_std).astype(np.float32)[:, None, None]
        return np.ascontiguousarray(images * scale + shift, dtype=np.float32)


CodecMode = Literal["simplebaseline", "udp"]
CODEC_MODES: tuple[str, ...] = get_args(CodecMode)


@dataclass(frozen=True)
class CodecConfig:
    """How crops are cut and heatmaps encoded and decoded.

    ``crop``: the image -> crop affine. ``simplebaseline`` (Xiao et al., 2018) maps a box of
    ``w`` pixels onto ``W`` input pixels, its centre onto ``(W/2, H/2)``; ``udp`` (Huang et al.,
    "The Devil is in the Details", CVPR 2020) maps it onto the ``W - 1`` spacings between the
    first and last pixel centres, its centre onto ``((W-1)/2, (H-1)/2)``.
    ``encoding``: crop pixels -> heatmap pixels. ``simplebaseline``: ``x / stride``; ``udp``:
    ``x * (w - 1) / (W - 1)`` (flipped heatmaps then mirror exactly, with no shift).
    PP-TinyPose trains with a ``udp`` crop and ``simplebaseline`` encoding (PaddleDetection's
    ``TopDownAffine(use_udp)`` + ``ToHeatmapsTopDown_DARK``) and decodes with DARK.
    ``dark``: DARK decoding (Zhang et al., CVPR 2020) instead of the quarter offset.
    """

    sigma_at_48: float = 2.0  # Gaussian sigma in heatmap pixels for a 48-pixel-wide heatmap
    dark: bool = False
    flip_test: bool = True
    crop: CodecMode = "simplebaseline"
    encoding: CodecMode = "simplebaseline"

    def __post_init__(self) -> None:
        if not math.isfinite(self.sigma_at_48) or self.sigma_at_48 <= 0:
            raise ConfigError(f"codec.sigma_at_48 must be finite and > 0, got {self.sigma_at_48}")


# Each backbone's stride is a count of halvings of the input, read off its structure.
RESNET_STEM_HALVINGS = 2  # conv1 (stride 2), max-pool (stride 2)
RESNET_STAGE_HALVINGS = 3  # layer2..layer4
LITE_HRNET_STEM_HALVINGS = 2  # the stem's 3x3 convolution and its depthwise branch
MOBILENET_V2_HALVINGS = 5  # the first convolution and four strided stages


@dataclass(frozen=True)
class ResNetConfig:
    """ResNet (He et al., 2016), torchvision layout; SimpleBaseline's backbone."""

    kind: Literal["resnet"] = "resnet"
    depth: int = 50

    def __post_init__(self) -> None:
        if self.depth not in RESNET_DEPTHS:
            raise ConfigError(f"backbone.depth must be one of {RESNET_DEPTHS}, got {self.depth}")

    @property
    def stride(self) -> int:
        """Input pixels per pixel of the feature map the head reads."""
        return 2 ** (RESNET_STEM_HALVINGS + RESNET_STAGE_HALVINGS)

    @property
    def input_multiple(self) -> int:
        """Input sizes must be multiples of this (the deepest feature map's stride)."""
        return self.stride


@dataclass(frozen=True)
class LiteHRNetConfig:
    """Lite-HRNet (Yu et al., CVPR 2021) with naive shuffle blocks, as PP-TinyPose uses it.

    The defaults are PaddleDetection's ``wider_naive`` network: a stem of ``stem_channels`` at
    stride 4, then stages of ``modules_per_stage`` HRNet modules over 2, 3 and 4 parallel branches
    of ``branch_channels`` (each branch half the resolution of the one before), every module
    ``blocks_per_module`` shuffle units per branch and a fusion; the output is the
    highest-resolution branch (stride 4).
    """

    kind: Literal["lite_hrnet"] = "lite_hrnet"
    stem_channels: int = 32
    branch_channels: tuple[int, ...] = (40, 80, 160, 320)
    modules_per_stage: tuple[int, ...] = (2, 4, 2)
    blocks_per_module: int = 2

    def __post_init__(self) -> None:
        if len(self.branch_channels) != len(self.modules_per_stage) + 1:
            raise ConfigError(
                "backbone.branch_channels needs one more entry than modules_per_stage, got "
                f"{self.branch_channels} and {self.modules_per_stage}"
            )
        if any(c < 2 or c % 2 for c in (self.stem_channels, *self.branch_channels)):
            raise ConfigError("backbone channels must be even and >= 2 (shuffle units split them)")
        if min(self.modules_per_stage) < 1 or self.blocks_per_module < 1:
            raise ConfigError("backbone.modules_per_stage and blocks_per_module must be >= 1")

    @property
    def stride(self) -> int:
        return 2**LITE_HRNET_STEM_HALVINGS

    @property
    def input_multiple(self) -> int:
        return self.stride * 2 ** (len(self.branch_channels) - 1)


@dataclass(frozen=True)
class MobileNetV2Config:
    """MobileNetV2 (Sandler et al., CVPR 2018) with a width multiplier, without its classifier.

    ``last_channels``: the 1x1 convolution that closes the network (1280 in the paper; the
    Ultralight-SimplePose release uses 128 at width 0.5), followed by ``last_activation`` (ReLU6
    in the paper, plain ReLU in that release).
    """

    kind: Literal["mobilenet_v2"] = "mobilenet_v2"
    width_mult: float = 1.0
    last_channels: int = 1280
    last_activation: Literal["relu6", "relu"] = "relu6"

    def __post_init__(self) -> None:
        if not math.isfinite(self.width_mult) or self.width_mult <= 0:
            raise ConfigError(f"backbone.width_mult must be > 0, got {self.width_mult}")
        if self.last_channels < 1:
            raise ConfigError(f"backbone.last_channels must be >= 1, got {self.last_channels}")

    @property
    def stride(self) -> int:
        return 2**MOBILENET_V2_HALVINGS

    @property
    def input_multiple(self) -> int:
        return self.stride


BackboneConfig = ResNetConfig | LiteHRNetConfig | MobileNetV2Config


@dataclass(frozen=True)
class ModelConfig:
    """A top-down heatmap model: backbone + SimpleBaseline deconvolution head + 1x1 heatmaps.

    ``deconv_channels`` may be empty (Lite-HRNet's heatmaps come from its stride-4 branch through
    the 1x1 layer alone). ``deconv_separable``: each upsampling is a depthwise transposed
    convolution followed by a 1x1 convolution (the mobile SimpleBaseline variant), instead of one
    dense transposed convolution. The model also records how its inputs are normalised and how
    its heatmaps are encoded, so that a checkpoint alone is enough to use it.
    """

    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    num_keypoints: int = 17
    input_size: tuple[int, int] = (192, 256)  # (width, height) in pixels
    deconv_channels: tuple[int, ...] = (256, 256, 256)
    deconv_kernel: int = 4
    deconv_separable: bool = False
    codec: CodecConfig = field(default_factory=CodecConfig)
    normalization: Normalization = field(default_factory=Normalization)

    def __post_init__(self) -> None:
        if self.num_keypoints < 1:
            raise ConfigError(f"model.num_keypoints must be >= 1, got {self.num_keypoints}")
        w, h = self.input_size
        multiple = self.backbone.input_multiple
        if w <= 0 or h <= 0 or w % multiple or h % multiple:
            raise ConfigError(
                f"model.input_size must be positive multiples of {multiple} for this backbone, "
                f"got {self.input_size}"
            )
        if self.backbone.stride % 2 ** len(self.deconv_channels):
            raise ConfigError(
                f"model.deconv_channels: {len(self.deconv_channels)} upsamplings exceed the "
                f"backbone's stride {self.backbone.stride}"
            )
        if self.deconv_kernel not in (2, 3, 4):
            raise ConfigError(f"model.deconv_kernel must be 2, 3 or 4, got {self.deconv_kernel}")

    @property
    def stride(self) -> int:
        """Input pixels per heatmap pixel: the backbone's stride halved by each deconvolution."""
        return self.backbone.stride // 2 ** len(self.deconv_channels)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return (self.input_size[0] // self.stride, self.input_size[1] // self.stride)

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Read the layout written before backbones were configurable (``depth`` at top level)."""
        if "depth" in data and "backbone" not in data:
            data = dict(data)
            data["backbone"] = {"kind": "resnet", "depth": data.pop("depth")}
        return data


def _check_finite(config: Any, owner: str) -> None:
    """Refuse NaN and infinite numbers in ``config``'s float fields (and tuples of floats).

    A NaN compares false with every bound, so range checks alone let it through.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{owner}.{f.name} must be a finite number, got {value}")


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
        _check_finite(self, "augment")
        if not 0 <= self.scale_factor < 1:
            raise ConfigError(f"augment.scale_factor must be in [0, 1), got {self.scale_factor}")
        for name in ("rotation_prob", "flip_prob", "half_body_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {value}")


# ------------------------------------------------------------ task augmentation (paper §4.2)

Style = Literal["none", "affine", "elastic", "perspective", "composed"]
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
        _check_finite(self, "task_augment.affine")
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
        _check_finite(self, "task_augment.elastic")
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
        _check_finite(self, "task_augment.perspective")
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
    one transform out of three.
    """

    styles: tuple[Style, ...] = PAPER_STYLES
    style_weights: tuple[float, ...] = ()
    affine: AffineWarpConfig = field(default_factory=AffineWarpConfig)
    elastic: ElasticWarpConfig = field(default_factory=ElasticWarpConfig)
    perspective: PerspectiveWarpConfig = field(default_factory=PerspectiveWarpConfig)

    def __post_init__(self) -> None:
        _check_finite(self, "task_augment")
        if not self.styles:
            raise ConfigError("task_augment.styles must name at least one style")
        for style in self.styles:
            if style not in STYLES:
                raise ConfigError(f"task_augment.styles: unknown style {style!r} (known: {STYLES})")
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
        _check_finite(self, "optimizer")
        if self.lr <= 0:
            raise ConfigError(f"optimizer lr must be > 0, got {self.lr}")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ConfigError(f"adam betas must be in [0, 1), got ({self.beta1}, {self.beta2})")


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
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA
    # "train": BatchNorm statistics follow the batches (training from scratch); "frozen": they
    # stay the starting model's, as in Reptile's inner loop and the few-shot recipe, so that
    # continued training of a trained model on the source is compared on equal terms.
    batchnorm: Literal["train", "frozen"] = "train"

    def __post_init__(self) -> None:
        _check_finite(self, "train")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(
                f"train.steps and train.batch_size must be >= 1: {self.steps} and {self.batch_size}"
            )
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ConfigError(
                f"train.lr_milestones are fractions in (0, 1), got {self.lr_milestones}"
            )

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
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        _check_finite(self, "meta")
        if self.meta_steps < 1 or self.tasks_per_step < 1 or self.inner_steps < 1:
            raise ConfigError(
                "meta.meta_steps, meta.tasks_per_step and meta.inner_steps must be >= 1"
            )
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
    2017); ``l2sp`` pulls the weights towards the starting ones (L2-SP, Li et al., ICML 2018:
    ``l2sp / 2 * ||w - w0||^2`` added to the loss).

    ``select_epochs``: ``epochs`` becomes the most that may be taken. A quarter of the shots'
    images is held out, the rest fine-tuned for ``epochs`` while the held-out crops' loss is
    measured after every epoch (and before the first), and the count with the lowest loss (0:
    leave the model as it is) is then run from the start on all the shots
    (:func:`metapose.adapt.choose_epochs`).
    """

    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-4))
    epochs: int = 20
    batch_size: int = 32
    head_only: bool = False
    backbone_lr_scale: float = 1.0
    batchnorm: BatchNormMode = "frozen"
    l2sp: float = 0.0
    select_epochs: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"adapt.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"adapt.batch_size must be >= 1, got {self.batch_size}")
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
    pck_alpha: float = 0.2

    def __post_init__(self) -> None:
        _check_finite(self, "target")
        if (self.domain is None) == (self.annotations is None):
            raise ConfigError(f"target {self.name!r}: give exactly one of domain or annotations")
        if self.annotations is not None and (self.pool_ids is None or self.test_ids is None):
            raise ConfigError(
                f"target {self.name!r}: a COCO-format target needs pool_ids, test_ids"
            )
        if self.pool_size < 1 or self.test_size < 1:
            raise ConfigError(f"target {self.name!r}: pool_size and test_size must be >= 1")

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


@dataclass(frozen=True)
class ExperimentConfig:
    """The paper's comparison (Table 1): is a meta-learned initial model better to adapt?

    Every arm starts from the same weights: ``init`` (a bundled model's name or a checkpoint,
    whose model config is then used) or random ones, optionally ``pretrain``-ed on the source.
    ``as-is`` is that start (the paper's "HPE baseline model"); ``supervised`` continues it with
    supervised steps and ``meta`` with Reptile, on the very same stream of augmented source
    batches and the same number of images. Each arm is then fine-tuned (``adapt``) on K shots of
    every target, for every K and seed, and scored on the target's test split; unadapted too.
    """

    name: str = "paper"
    seed: int = 0
    init: str | None = field(default=None, metadata=MODEL_PATH)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    task_augment: TaskAugmentConfig = field(default_factory=TaskAugmentConfig)
    task_sampler: Literal["mixed", "style"] = "mixed"
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
                f"give either init ({self.init!r}, whose own model config is used) or model"
            )
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"target names repeat: {names}")
        if not self.shots or min(self.shots) < 1:
            raise ConfigError(f"shots must be positive, got {self.shots}")
        if not self.seeds:
            raise ConfigError("seeds must not be empty")

    @property
    def task_batch_size(self) -> int:
        """Crops per source batch (a task), shared by the supervised and meta arms."""
        return self.meta.batch_size if "meta" in self.arms else self.supervised.batch_size

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Read configurations written when the supervised arm was called ``baseline``."""
        if "baseline" in data and "supervised" not in data:
            data = dict(data)
            data["supervised"] = data.pop("baseline")
        return data


@dataclass(frozen=True)
class DataConfig:
    """Training data: a COCO-format dataset, or (no ``annotations``) the synthetic stream."""

    annotations: str | None = field(default=None, metadata=PATH)
    image_dir: str | None = field(default=None, metadata=PATH)
    domains: tuple[str, ...] = ("rgb",)  # synthetic domains when ``annotations`` is not given


@dataclass(frozen=True)
class TrainRunConfig:
    """``metapose train``: supervised training of one model."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: DataConfig | None = None  # a COCO-format validation set, scored every validate_every
    validate_every: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    workers: int = 0

    def __post_init__(self) -> None:
        if self.val is not None and self.val.annotations is None:
            raise ConfigError("val.annotations must name a COCO-format file")


@dataclass(frozen=True)
class MetaRunConfig:
    """``metapose meta``: Reptile meta-training of initial weights."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    task_augment: TaskAugmentConfig = field(default_factory=TaskAugmentConfig)
    task_sampler: Literal["mixed", "style"] = "mixed"
    data: DataConfig = field(default_factory=DataConfig)
    meta: ReptileConfig = field(default_factory=ReptileConfig)
    workers: int = 0


# ------------------------------------------------------------------------- YAML <-> objects


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated type ``tp``; ``key`` names it in errors."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        tagged = _tagged_member(value, args, key)
        if tagged is not None:
            return _convert(value, tagged, key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}"
        )
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return _from_dict(tp, value, key)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: must have {len(args)} items, got {len(value)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        kt, vt = get_args(tp)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _tagged_member(value: Any, args: tuple[Any, ...], key: str) -> Any:
    """The dataclass of a union whose ``kind`` field's default is ``value['kind']``, if any."""
    kinds: dict[str, Any] = {
        str(f.default): arg
        for arg in args
        if is_dataclass(arg)
        for f in fields(arg)
        if f.name == "kind"
    }
    if not kinds or not isinstance(value, dict) or "kind" not in value:
        return None
    if value["kind"] not in kinds:
        known = sorted(kinds, key=str)
        raise ConfigError(f"{key}.kind: must be one of {known}, got {value['kind']!r}")
    return kinds[value["kind"]]


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    upgrade = getattr(cls, "upgrade_dict", None)
    if upgrade is not None:
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(known))})")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build config ``cls`` from a plain mapping, overriding its defaults."""
    return _from_dict(cls, data)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready mapping of a config (tuples become lists)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    out = plain(config)
    assert isinstance(out, dict)
    return out


def _resolve_path(value: str, base: Path, kind: str) -> str:
    if kind == "model":
        # The zoo's names, imported here because the models package imports this module.
        from metapose.models.zoo import ZOO

        if value in ZOO:
            return value
    if Path(value).expanduser().is_absolute():
        return value
    return os.path.normpath(base / value)


def resolve_paths(config: T, base: str | Path) -> T:
    """``config`` with each relative path (fields marked PATH or MODEL_PATH, at any depth)
    joined to the folder ``base``; absolute paths and bundled model names are kept."""
    if not is_dataclass(config) or isinstance(config, type):
        return config
    base = Path(base).absolute()
    changes: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        kind = f.metadata.get("path")
        new: Any
        if kind is not None and isinstance(value, str):
            new = _resolve_path(value, base, kind)
        elif isinstance(value, tuple):
            new = tuple(resolve_paths(v, base) for v in value)
        else:
            new = resolve_paths(value, base)
        if new != value:
            changes[f.name] = new
    return dataclasses.replace(config, **changes) if changes else config


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read YAML ``path`` into config ``cls``; errors name the file and the key.

    Relative paths in the file (see PATH) are taken relative to the file's folder.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return resolve_paths(from_dict(cls, data), path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` re-exported so callers need only this module."""
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


__all__ = [
    "ConfigError",
    "ModelConfig",
    "CodecConfig",
    "TopDownAugmentConfig",
    "TaskAugmentConfig",
    "OptimizerConfig",
    "TrainConfig",
    "ReptileConfig",
    "AdaptConfig",
    "CocoFolderConfig",
    "SourceConfig",
    "TargetConfig",
    "ExperimentConfig",
    "DataConfig",
    "TrainRunConfig",
    "MetaRunConfig",
    "from_dict",
    "to_dict",
    "load_config",
    "resolve_paths",
    "save_config",
    "replace",
]
