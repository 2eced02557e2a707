"""MobileNetV2 backbone: shapes, stride, channel rule, names, gradients, use in TopDownModel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metapose.config import ConfigError, MobileNetV2Config, ModelConfig, from_dict, replace
from metapose.models import TopDownModel
from metapose.models.backbones import build_backbone
from metapose.models.backbones.mobilenet_v2 import (
    InvertedResidual,
    MobileNetV2,
    block_specs,
    scaled_channels,
)

TINY = MobileNetV2Config(width_mult=0.25, last_channels=32)
ULTRALIGHT = MobileNetV2Config(width_mult=0.5, last_channels=128)


def stage_channels(width_mult: float) -> list[int]:
    """The stem's channels, then each stage's output channels."""
    stem, blocks = block_specs(width_mult)
    outs = [stem]
    for block in blocks:
        if block.out_channels != outs[-1] or block.stride == 2:
            outs.append(block.out_channels)
    return outs


@pytest.mark.parametrize("config", [TINY, ULTRALIGHT], ids=["tiny", "ultralight"])
@pytest.mark.parametrize("size", [(96, 128), (192, 256)], ids=["128x96", "256x192"])
def test_output_shape_and_stride(config: MobileNetV2Config, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    backbone = MobileNetV2(config).eval()
    assert backbone.out_channels == config.last_channels
    assert backbone.stride == config.stride == 32
    width, height = size
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, height, width))
    assert out.shape == (2, config.last_channels, height // 32, width // 32)
    assert torch.isfinite(out).all()


def test_build_backbone_makes_one() -> None:
    backbone = build_backbone(TINY)
    assert isinstance(backbone, MobileNetV2)
    assert backbone.out_channels == 32


def test_channels_follow_gluon_not_make_divisible() -> None:
    # Ultralight-SimplePose's graph at width 0.5: not multiples of 8 (torchvision would give 16
    # for 24 * 0.5); at width 1.0 both rules give the paper's channels.
    assert stage_channels(0.5) == [16, 8, 12, 16, 32, 48, 80, 160]
    assert stage_channels(1.0) == [32, 16, 24, 32, 64, 96, 160, 320]
    assert stage_channels(0.25) == [8, 4, 6, 8, 16, 24, 40, 80]
    assert scaled_channels(16, 0.01) == 1  # never zero channels


def test_torchvision_names_and_residuals() -> None:
    backbone = MobileNetV2(ULTRALIGHT)
    names = set(backbone.state_dict())
    for key in (
        "features.0.0.weight",  # stem conv
        "features.0.1.running_var",
        "features.1.conv.0.0.weight",  # first block: depthwise (no expansion)
        "features.1.conv.1.weight",  # its linear projection
        "features.1.conv.2.bias",
        "features.2.conv.0.0.weight",  # expansion
        "features.2.conv.1.0.weight",  # depthwise
        "features.2.conv.2.weight",  # projection
        "features.2.conv.3.running_mean",
        "features.18.0.weight",  # closing 1x1
    ):
        assert key in names, key
    assert len(backbone.features) == 19
    blocks = [m for m in backbone.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_res_connect for b in blocks) == 10
    assert tuple(backbone.state_dict()["features.2.conv.0.0.weight"].shape) == (48, 8, 1, 1)
    assert isinstance(backbone.get_submodule("features.18.2"), nn.ReLU6)


def test_last_activation_is_a_choice() -> None:
    relu = MobileNetV2(replace(ULTRALIGHT, last_activation="relu"))
    last = relu.get_submodule("features.18.2")
    assert isinstance(last, nn.ReLU) and not isinstance(last, nn.ReLU6)
    assert relu.last_activation == "relu"
    with pytest.raises(ConfigError, match="last_activation"):
        from_dict(MobileNetV2Config, {"last_activation": "gelu"})


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    backbone = MobileNetV2(TINY).train()
    out = backbone(torch.randn(2, 3, 128, 96))
    (out * torch.randn_like(out)).sum().backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_in_a_separable_simplebaseline() -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        backbone=TINY,
        input_size=(96, 128),
        deconv_channels=(16, 16, 16),
        deconv_separable=True,
    )
    model = TopDownModel(config).eval()
    with torch.no_grad():
        heatmaps = model(torch.randn(1, 3, 128, 96))
    assert heatmaps.shape == (1, 17, 32, 24)
    assert model.stride == 4


def test_ultralight_architecture_size() -> None:
    config = ModelConfig(
        backbone=ULTRALIGHT,
        deconv_channels=(128, 128, 128),
        deconv_separable=True,
    )
    count = sum(p.numel() for p in TopDownModel(config).parameters())
    assert 0.5e6 < count < 0.6e6  # the model card: about 0.57 M parameters
