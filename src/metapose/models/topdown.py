"""The top-down heatmap model: backbone -> SimpleBaseline head -> one heatmap per keypoint.

Parameter names are ``backbone.*`` (each backbone keeps its reference implementation's names:
torchvision's for ResNet), ``deconv_layers.*`` and ``final_layer`` (the SimpleBaseline release's),
so published weights map onto it by a prefix rename (see :mod:`metapose.models.weights`). The
model knows nothing of data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metapose.config import ModelConfig
from metapose.device import DeviceOptions
from metapose.models.backbones import build_backbone
from metapose.models.heads import deconv_layers, reset_head


class TopDownModel(nn.Module):
    """``(B, 3, H, W)`` normalised RGB -> ``(B, K, H/stride, W/stride)`` heatmaps."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        out_channels: int = self.backbone.out_channels  # type: ignore[assignment]
        self.deconv_layers = deconv_layers(
            out_channels,
            config.deconv_channels,
            config.deconv_kernel,
            separable=config.deconv_separable,
        )
        head_channels = config.deconv_channels[-1] if config.deconv_channels else out_channels
        self.final_layer = nn.Conv2d(head_channels, config.num_keypoints, kernel_size=1)
        self.reset_head()

    @property
    def stride(self) -> int:
        """Input pixels per heatmap pixel of the built network (tests hold it to the config's)."""
        backbone_stride: int = self.backbone.stride  # type: ignore[assignment]
        return backbone_stride // 2 ** len(self.config.deconv_channels)

    def reset_head(self) -> None:
        reset_head(self.deconv_layers, self.final_layer)

    def forward_features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> backbone features ``(B, C, H/s, W/s)``, ``s``: backbone stride."""
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


def forward_on(model: nn.Module, images: Tensor, options: DeviceOptions) -> Tensor:
    """``model(images)`` on ``options.device``: the images moved there in ``options``'
    memory format, run under bfloat16 autocast when ``options.use_amp``."""
    x = images.to(options.device, non_blocking=True).contiguous(memory_format=options.memory_format)
    with torch.autocast(options.device.type, dtype=torch.bfloat16, enabled=options.use_amp):
        out: Tensor = model(x)
    return out


def seeded_model(config: ModelConfig, seed: int) -> TopDownModel:
    """A model of ``config`` whose random weights depend on ``seed`` only; torch's own random
    state (CPU; no GPU is touched) is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TopDownModel(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
