"""Lite-HRNet with naive shuffle blocks: PP-TinyPose's backbone, in native PyTorch.

Lite-HRNet (Yu, Xiao, Gao, Yuan, Zhang, Sang & Wang, "Lite-HRNet: A Lightweight High-Resolution
Network", CVPR 2021) keeps HRNet's parallel branches at halving resolutions with repeated
multi-resolution fusions, and replaces its residual blocks by ShuffleNetV2 units. The "naive"
variant uses plain shuffle units (1x1, depthwise 3x3, 1x1 on half of the channels) in place of
the paper's conditional channel weighting; PaddleDetection's ``wider_naive`` network, which
PP-TinyPose uses, has branches of 40, 80, 160 and 320 channels, and its output passes through an
iterative head that adds each branch, upsampled, into the next finer one.

The layout follows PaddleDetection's ``LiteHRNet(network_type="wider_naive")``:

- ``stem``: a 3x3 stride-2 convolution, then a shuffle unit of stride 2 (stride 4 overall).
- ``transitions[s]``: before stage ``s``, a depthwise-separable convolution on each branch whose
  width changes (identity otherwise) and a stride-2 depthwise-separable convolution from the
  coarsest branch for each new branch.
- ``stages[s][m]``: an HRNet module: ``blocks_per_module`` shuffle units on every branch
  (``branches[b]``), then the fusion ``fuse_layers[i][j]`` of branch ``j`` into output ``i``
  (1x1 convolution + nearest upsampling from coarser branches, chains of stride-2
  depthwise-separable convolutions from finer ones). Every module outputs every branch.
- ``head``: the iterative head, from the coarsest branch to the finest: add the previous
  result (bilinear upsampling, ``align_corners=True``), then a depthwise-separable convolution
  down to the next finer branch's width. The finest branch (stride 4) is the output.

Every convolution has no bias and is followed by BatchNorm; activations are ReLU. The released
PP-TinyPose models compute, and this module reproduces exactly, two quirks of PaddleDetection's
fusion loop, in which the running sum ``y`` starts from ``out[0]`` and the loop over ``j``
includes ``j == i``, and ``out[0]`` is overwritten by the running sum while output 0 is built:

- output 0 is ``relu(2 * out[0] + sum_{j>0} fuse[0][j](out[j]))`` (branch 0 counted twice);
- output ``i >= 1`` applies ``fuse[i][0]`` to the *updated* ``out[0]``, that is ``y0``, the
  pre-ReLU sum of output 0 (not branch 0's own features), and adds the result twice:
  ``relu(2 * fuse[i][0](y0) + out[i] + sum_{j not in (0, i)} fuse[i][j](out[j]))``.

Channel shuffles (groups of 2) are reshape / transpose / reshape, as in the ncnn graphs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metapose.config import LiteHRNetConfig

INIT_STD = 0.001  # PaddleDetection's normal initialisation of every convolution
SHUFFLE_GROUPS = 2
STEM_EXPAND_RATIO = 1  # the stem's inverted-residual expansion (PaddleDetection's Stem(.., 1))
RGB = 3


def channel_shuffle(x: Tensor, groups: int = SHUFFLE_GROUPS) -> Tensor:
    """ShuffleNet's channel shuffle: channel ``g * C / groups + k`` moves to ``k * groups + g``."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ConvNorm(nn.Module):
    """Convolution (no bias, padding ``kernel // 2``) + BatchNorm + optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x

    def extra_repr(self) -> str:
        return "relu=True" if self.relu else ""


class SeparableConv(nn.Module):
    """Depthwise 3x3 ConvNorm (no activation) + pointwise 1x1 ConvNorm (optional ReLU)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, relu: bool = True
    ) -> None:
        super().__init__()
        self.depthwise = ConvNorm(in_channels, in_channels, 3, stride=stride, groups=in_channels)
        self.pointwise = ConvNorm(in_channels, out_channels, 1, relu=relu)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class Stem(nn.Module):
    """3x3 stride-2 ConvNorm, then a stride-2 shuffle unit; ``channels`` in and out of the unit.

    The unit halves the channels; the first half goes through a stride-2 depthwise-separable
    convolution (``branch1``), the second through an inverted residual without the residual
    (``expand_conv``, ``depthwise_conv``, ``linear_conv``); then concatenation and shuffle.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        mid = channels * STEM_EXPAND_RATIO
        self.conv1 = ConvNorm(RGB, channels, 3, stride=2, relu=True)
        self.branch1 = SeparableConv(half, channels - half, stride=2)
        self.expand_conv = ConvNorm(half, mid, 1, relu=True)
        self.depthwise_conv = ConvNorm(mid, mid, 3, stride=2, groups=mid)
        self.linear_conv = ConvNorm(mid, half, 1, relu=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x1, x2 = x.chunk(2, dim=1)
        x2 = self.linear_conv(self.depthwise_conv(self.expand_conv(x2)))
        return channel_shuffle(torch.cat([self.branch1(x1), x2], dim=1))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's stride-1 unit: half the channels pass, the other half go through
    1x1 ConvNorm + ReLU, depthwise 3x3 ConvNorm, 1x1 ConvNorm + ReLU; concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch2 = nn.Sequential(
            ConvNorm(half, half, 1, relu=True),
            ConvNorm(half, half, 3, groups=half),
            ConvNorm(half, half, 1, relu=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch2(x2)], dim=1))


class UpsampleFuse(nn.Module):
    """A coarser branch into a finer one: 1x1 ConvNorm, then nearest upsampling by ``scale``."""

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.conv = ConvNorm(in_channels, out_channels, 1)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.conv(x), scale_factor=float(self.scale), mode="nearest")


def downsample_fuse(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    """A finer branch into a coarser one: ``steps`` stride-2 depthwise-separable convolutions,
    ReLU after all but the last, the last one changing the width."""
    return nn.Sequential(
        *(
            SeparableConv(
                in_channels,
                out_channels if k == steps - 1 else in_channels,
                stride=2,
                relu=k < steps - 1,
            )
            for k in range(steps)
        )
    )


class LiteHRNetModule(nn.Module):
    """Shuffle units on every branch, then the (quirky, see the module doc) fusion."""

    def __init__(self, channels: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        self.channels = channels
        self.branches = nn.ModuleList(
            nn.Sequential(*(ShuffleUnit(c) for _ in range(blocks))) for c in channels
        )
        self.fuse_layers = nn.ModuleList()
        for i, c_out in enumerate(channels):
            row = nn.ModuleList()
            for j, c_in in enumerate(channels):
                if j > i:
                    row.append(UpsampleFuse(c_in, c_out, 2 ** (j - i)))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    row.append(downsample_fuse(c_in, c_out, i - j))
            self.fuse_layers.append(row)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        out = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        fused: list[Tensor] = []
        for i, row in enumerate(cast(Iterable[nn.ModuleList], self.fuse_layers)):
            if i == 0:
                y = out[0] + out[0]
            else:
                first = row[0](out[0])
                y = first + first
            for j in range(1, len(out)):
                y = y + (out[j] if j == i else row[j](out[j]))
            if i == 0:
                out[0] = y  # what outputs i >= 1 read
            fused.append(F.relu(y))
        return fused


class IterativeHead(nn.Module):
    """From the coarsest branch to the finest: add the previous result (bilinear upsampling,
    ``align_corners=True``), then a depthwise-separable ConvNorm + ReLU to the next width."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        coarse_first = channels[::-1]
        self.projects = nn.ModuleList(
            SeparableConv(c, coarse_first[min(k + 1, len(channels) - 1)])
            for k, c in enumerate(coarse_first)
        )

    def forward(self, xs: list[Tensor]) -> Tensor:
        """The finest branch's result (the others are only intermediate here)."""
        last: Tensor | None = None
        for project, x in zip(self.projects, xs[::-1], strict=True):
            if last is not None:
                x = x + F.interpolate(last, size=x.shape[-2:], mode="bilinear", align_corners=True)
            last = project(x)
        assert last is not None
        return last


class LiteHRNet(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, branch_channels[0], H / 4, W / 4)``; see the module doc."""

    def __init__(self, config: LiteHRNetConfig) -> None:
        super().__init__()
        self.config = config
        self.out_channels = config.branch_channels[0]
        self.stride = config.stride
        self.stem = Stem(config.stem_channels)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        previous: tuple[int, ...] = (config.stem_channels,)
        for s, modules in enumerate(config.modules_per_stage):
            current = config.branch_channels[: s + 2]
            self.transitions.append(self._transition(previous, current))
            self.stages.append(
                nn.ModuleList(
                    LiteHRNetModule(current, config.blocks_per_module) for _ in range(modules)
                )
            )
            previous = current
        self.head = IterativeHead(previous)
        self.reset_parameters()

    @staticmethod
    def _transition(previous: tuple[int, ...], current: tuple[int, ...]) -> nn.ModuleList:
        layers = nn.ModuleList()
        for i, c in enumerate(current):
            if i < len(previous):
                same = c == previous[i]
                layers.append(
                    nn.Identity() if same else nn.Sequential(SeparableConv(previous[i], c))
                )
            else:
                steps = i + 1 - len(previous)
                c_in = previous[-1]
                layers.append(
                    nn.Sequential(
                        *(
                            SeparableConv(c_in, c if k == steps - 1 else c_in, stride=2)
                            for k in range(steps)
                        )
                    )
                )
        return layers

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=INIT_STD)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()

    def forward(self, images: Tensor) -> Tensor:
        branches = [self.stem(images)]
        stages = cast(Iterable[nn.ModuleList], self.stages)
        transitions = cast(Iterable[nn.ModuleList], self.transitions)
        for transition, stage in zip(transitions, stages, strict=True):
            branches = [
                layer(branches[min(i, len(branches) - 1)]) for i, layer in enumerate(transition)
            ]
            for module in stage:
                branches = module(branches)
        return self.head(branches)
