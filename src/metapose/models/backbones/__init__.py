"""Backbones: ``(B, 3, H, W)`` -> ``(B, out_channels, H / stride, W / stride)`` features.

Every backbone is an ``nn.Module`` with ``out_channels`` and ``stride`` attributes, built from
its config by :func:`build_backbone` (a ``match`` on the config's type: no string registry).
"""

from __future__ import annotations

from torch import nn

from metapose.config import BackboneConfig, LiteHRNetConfig, MobileNetV2Config, ResNetConfig


def build_backbone(config: BackboneConfig) -> nn.Module:
    """The backbone ``config`` describes, freshly initialised."""
    match config:
        case ResNetConfig():
            from metapose.models.backbones.resnet import ResNet

            return ResNet(config.depth)
        case LiteHRNetConfig():
            from metapose.models.backbones.lite_hrnet import LiteHRNet

            return LiteHRNet(config)
        case MobileNetV2Config():
            from metapose.models.backbones.mobilenet_v2 import MobileNetV2

            return MobileNetV2(config)
    raise TypeError(f"unknown backbone config {config!r}")
