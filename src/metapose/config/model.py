"""The model's configuration: backbones, head, input normalisation and the heatmap codec."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from metapose.config.loading import ConfigError, check_int

RESNET_DEPTHS = (18, 34, 50, 101, 152)
# Size bounds checked before a model is built (a checkpoint header or a config saying
# ``deconv_channels: [100000]`` would otherwise allocate gigabytes): far beyond the released
# models (ResNet-152's widest layer has 2048 channels).
MAX_INPUT_SIDE = 4096  # pixels per side of the model's input
MAX_CHANNELS = 2048  # channels of any configurable layer
MAX_KEYPOINTS = 1024
MAX_BLOCKS = 64  # repeated modules or blocks of a configurable stage
MAX_WIDTH_MULT = 4.0

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
        check_int("backbone", "stem_channels", self.stem_channels, 2, MAX_CHANNELS)
        for i, c in enumerate(self.branch_channels):
            check_int("backbone", f"branch_channels[{i}]", c, 2, MAX_CHANNELS)
        for i, n in enumerate(self.modules_per_stage):
            check_int("backbone", f"modules_per_stage[{i}]", n, 1, MAX_BLOCKS)
        check_int("backbone", "blocks_per_module", self.blocks_per_module, 1, MAX_BLOCKS)

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
        if not math.isfinite(self.width_mult) or not 0 < self.width_mult <= MAX_WIDTH_MULT:
            raise ConfigError(
                f"backbone.width_mult must be in (0, {MAX_WIDTH_MULT}], got {self.width_mult}"
            )
        check_int("backbone", "last_channels", self.last_channels, 1, MAX_CHANNELS)

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
        check_int("model", "num_keypoints", self.num_keypoints, 1, MAX_KEYPOINTS)
        w, h = self.input_size
        multiple = self.backbone.input_multiple
        if w <= 0 or h <= 0 or w % multiple or h % multiple:
            raise ConfigError(
                f"model.input_size must be positive multiples of {multiple} for this backbone, "
                f"got {self.input_size}"
            )
        if max(w, h) > MAX_INPUT_SIDE:
            raise ConfigError(
                f"model.input_size must be at most {MAX_INPUT_SIDE} pixels a side, "
                f"got {self.input_size}"
            )
        for i, c in enumerate(self.deconv_channels):
            check_int("model", f"deconv_channels[{i}]", c, 1, MAX_CHANNELS)
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
