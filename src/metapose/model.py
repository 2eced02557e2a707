"""PoseResNet, the SimpleBaseline top-down pose model (Xiao, Wu & Wei, ECCV 2018).

A ResNet backbone, three stride-2 transposed convolutions (256 channels, kernel 4, no bias, each
followed by BatchNorm and ReLU) and a 1x1 convolution to one heatmap per keypoint. Parameter names
follow the original release (``deconv_layers.{0..8}``, ``final_layer``) with the backbone under
``backbone.``, so weights of torchvision, the SimpleBaseline release and MMPose map onto it by a
prefix rename (see :mod:`metapose.weights`). The model knows nothing of data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metapose.config import ModelConfig
from metapose.resnet import ResNet

HEAD_INIT_STD = 0.001  # SimpleBaseline's normal init of the deconvolutions and final layer


def _deconv_padding(kernel: int) -> tuple[int, int]:
    """Padding and output padding that make a stride-2 transposed convolution exactly double."""
    return {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel]


class PoseResNet(nn.Module):
    """``(B, 3, H, W)`` normalised RGB -> ``(B, K, H/stride, W/stride)`` heatmaps."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.depth)
        padding, output_padding = _deconv_padding(config.deconv_kernel)
        layers: list[nn.Module] = []
        in_channels = self.backbone.out_channels
        for channels in config.deconv_channels:
            layers += [
                nn.ConvTranspose2d(
                    in_channels,
                    channels,
                    kernel_size=config.deconv_kernel,
                    stride=2,
                    padding=padding,
                    output_padding=output_padding,
                    bias=False,
                ),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(in_channels, config.num_keypoints, kernel_size=1)
        self.reset_head()

    @property
    def stride(self) -> int:
        return self.backbone.stride // 2 ** len(self.config.deconv_channels)

    def reset_head(self) -> None:
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=HEAD_INIT_STD)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final_layer.weight, std=HEAD_INIT_STD)
        if self.final_layer.bias is not None:
            nn.init.zeros_(self.final_layer.bias)

    def forward_features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> backbone features ``(B, C, H/32, W/32)``."""
        return self.backbone(images)

    def forward_head(self, features: Tensor) -> Tensor:
        """Backbone features -> heatmaps ``(B, K, H/stride, W/stride)``.

        The 1x1 heatmap layer always runs in float32, also under mixed-precision autocast: it is
        cheap, and sub-pixel decoding compares neighbouring heatmap values that bfloat16's 8-bit
        mantissa would round to ties.
        """
        hidden = self.deconv_layers(features)
        with torch.autocast(hidden.device.type, enabled=False):
            return self.final_layer(hidden.float())

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.deconv_layers.parameters(), *self.final_layer.parameters()]


def build_model(config: ModelConfig) -> PoseResNet:
    return PoseResNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
