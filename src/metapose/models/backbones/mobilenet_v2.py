"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks", CVPR 2018) as a pose backbone: the feature extractor without its classifier.

Structure and parameter names follow torchvision's ``mobilenet_v2``: ``features.0`` is the stride-2
3x3 stem (conv, BatchNorm, ReLU6 at ``features.0.{0,1,2}``), ``features.1`` .. ``features.17`` the
inverted residual blocks (``features.{i}.conv.*``: an optional 1x1 expansion, a 3x3 depthwise
convolution, a linear 1x1 projection and its BatchNorm; a residual connection where the stride
is 1 and the channels do not change), and ``features.18`` the closing 1x1 convolution to
``last_channels`` (conv, BatchNorm, activation). The output has stride 32.

Channel rounding: torchvision rounds every width-scaled channel count to a multiple of 8
(``_make_divisible``), which at width 0.5 turns 24 * 0.5 = 12 into 16. The Ultralight-SimplePose
release (exported from MXNet/Gluon) has 16, 8, 12, 16, 32, 48, 80, 160 channels at width 0.5:
Gluon's rule, ``int(channels * width_mult)`` (truncation), which :func:`scaled_channels` follows,
with a floor of 1 so that no layer vanishes. At width 1.0 (and any width where the products are
multiples of 8) both rules agree. Expanded (hidden) widths are ``in_channels * expansion``, as in
both references.

The closing activation is ReLU6 in the paper and torchvision. Ultralight-SimplePose closes with
a plain ReLU (its 160 -> 128 1x1 convolution belongs to its head in the original code), so the
activation is a choice: ``last_activation``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor, nn

from metapose.config import MobileNetV2Config

LastActivation = Literal["relu6", "relu"]

STEM_CHANNELS = 32  # before the width multiplier
STEM_STRIDE = 2
MIN_CHANNELS = 1


class StageSetting(NamedTuple):
    """Paper's Table 2 row: expansion ``t``, channels ``c``, repeats ``n``, stride ``s``."""

    expansion: int
    channels: int
    repeats: int
    stride: int


# Sandler et al. 2018, Table 2 (the 1x1 closing convolution is ``last_channels``).
STAGES: tuple[StageSetting, ...] = (
    StageSetting(1, 16, 1, 1),
    StageSetting(6, 24, 2, 2),
    StageSetting(6, 32, 3, 2),
    StageSetting(6, 64, 4, 2),
    StageSetting(6, 96, 3, 1),
    StageSetting(6, 160, 3, 2),
    StageSetting(6, 320, 1, 1),
)


def scaled_channels(channels: int, width_mult: float) -> int:
    """Gluon's width rule, ``int(channels * width_mult)``, at least :data:`MIN_CHANNELS`."""
    return max(MIN_CHANNELS, int(channels * width_mult))


class BlockSpec(NamedTuple):
    in_channels: int
    out_channels: int
    stride: int
    expansion: int


def block_specs(width_mult: float) -> tuple[int, tuple[BlockSpec, ...]]:
    """The stem's channels and the inverted residual blocks of MobileNetV2 at ``width_mult``."""
    stem = scaled_channels(STEM_CHANNELS, width_mult)
    blocks: list[BlockSpec] = []
    in_channels = stem
    for stage in STAGES:
        out_channels = scaled_channels(stage.channels, width_mult)
        for i in range(stage.repeats):
            stride = stage.stride if i == 0 else 1
            blocks.append(BlockSpec(in_channels, out_channels, stride, stage.expansion))
            in_channels = out_channels
    return stem, tuple(blocks)


def _activation(kind: LastActivation) -> nn.Module:
    return nn.ReLU6(inplace=True) if kind == "relu6" else nn.ReLU(inplace=True)


class ConvBNActivation(nn.Sequential):
    """Convolution (no bias), BatchNorm, activation: torchvision's ``Conv2dNormActivation``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: LastActivation = "relu6",
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            _activation(activation),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1, unless ``expansion`` is 1), depthwise 3x3, project (1x1, linear)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_channels * expansion
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNActivation(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNActivation(hidden, hidden, kernel_size=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, last_channels, H / 32, W / 32)`` MobileNetV2 features."""

    def __init__(self, config: MobileNetV2Config) -> None:
        super().__init__()
        last_activation = config.last_activation
        self.width_mult = config.width_mult
        self.last_activation: LastActivation = last_activation
        self.out_channels = config.last_channels
        self.stride = config.stride
        stem, blocks = block_specs(config.width_mult)
        layers: list[nn.Module] = [ConvBNActivation(3, stem, kernel_size=3, stride=STEM_STRIDE)]
        layers += [InvertedResidual(*spec) for spec in blocks]
        layers.append(
            ConvBNActivation(
                blocks[-1].out_channels, config.last_channels, activation=last_activation
            )
        )
        self.features = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He (fan-out) convolutions, unit BatchNorm."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        features: Tensor = self.features(images)
        return features
