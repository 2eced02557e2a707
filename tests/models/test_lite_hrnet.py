"""The native Lite-HRNet backbone: shapes, gradients, train/eval, and its fusion quirks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from metapose.config import LiteHRNetConfig, ModelConfig
from metapose.models import TopDownModel
from metapose.models.backbones import build_backbone
from metapose.models.backbones.lite_hrnet import (
    IterativeHead,
    LiteHRNet,
    LiteHRNetModule,
    channel_shuffle,
)

TINY = LiteHRNetConfig(
    stem_channels=8,
    branch_channels=(8, 16, 32, 64),
    modules_per_stage=(1, 1, 1),
    blocks_per_module=1,
)
SIZES = [(96, 128), (192, 256)]  # (W, H)


@pytest.fixture
def tiny() -> LiteHRNet:
    torch.manual_seed(0)
    return LiteHRNet(TINY)


@pytest.mark.parametrize("size", SIZES, ids=["128x96", "256x192"])
def test_output_shape_and_stride(tiny: LiteHRNet, size: tuple[int, int]) -> None:
    w, h = size
    out = tiny(torch.randn(2, 3, h, w))
    assert tiny.out_channels == 8 and tiny.stride == TINY.stride == 4
    assert out.shape == (2, tiny.out_channels, h // tiny.stride, w // tiny.stride)


def test_build_backbone_and_topdown_model() -> None:
    torch.manual_seed(0)
    assert isinstance(build_backbone(TINY), LiteHRNet)
    config = ModelConfig(backbone=TINY, deconv_channels=(), input_size=(96, 128))
    model = TopDownModel(config)
    assert model.stride == 4
    assert model(torch.randn(1, 3, 128, 96)).shape == (1, 17, 32, 24)


def test_pp_tinypose_size() -> None:
    """The default config is PP-TinyPose's network: 1,300,177 parameters once BatchNorm is folded
    into the convolutions (every convolution weight, plus one bias per BatchNorm channel and
    the heatmap layer's bias), as in the released ncnn files."""
    torch.manual_seed(0)
    model = TopDownModel(ModelConfig(backbone=LiteHRNetConfig(), deconv_channels=()))
    folded = sum(
        p.numel()
        for name, p in model.named_parameters()
        if not name.endswith("bn.weight")  # folded into the convolution
    )
    assert folded == 1_300_177
    assert model.backbone.out_channels == 40


def test_every_parameter_gets_a_gradient(tiny: LiteHRNet) -> None:
    tiny.train()
    out = tiny(torch.randn(2, 3, 64, 32))
    loss = (out - torch.randn_like(out)).square().mean()
    loss.backward()
    for name, p in tiny.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_train_and_eval(tiny: LiteHRNet) -> None:
    x = torch.randn(4, 3, 64, 32)
    tiny.train()
    before = [m.running_mean.clone() for m in tiny.modules() if isinstance(m, nn.BatchNorm2d)]  # type: ignore[union-attr]
    train_out = tiny(x)
    after = [m.running_mean for m in tiny.modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    tiny.eval()
    with torch.no_grad():
        first, second = tiny(x), tiny(x)
    assert torch.equal(first, second)
    assert first.shape == train_out.shape
    assert not torch.allclose(first, train_out)
    optimizer = torch.optim.Adam(tiny.parameters(), lr=1e-3)
    tiny.train()
    for _ in range(2):
        optimizer.zero_grad()
        loss = tiny(x).square().mean()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)


def test_channel_shuffle_interleaves_the_halves() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_fusion_reproduces_paddledetection() -> None:
    """Output 0 counts branch 0 twice; later outputs read the updated (pre-ReLU) output 0,
    through their fuse layer, twice."""
    torch.manual_seed(0)
    module = LiteHRNetModule((8, 16, 32), blocks=1).eval()
    xs = [torch.randn(1, c, 16 // 2**b, 8 // 2**b) for b, c in enumerate((8, 16, 32))]
    with torch.no_grad():
        fused = module([x.clone() for x in xs])
        out = [branch(x) for branch, x in zip(module.branches, xs, strict=True)]
        f = module.fuse_layers
        y0 = 2 * out[0] + f[0][1](out[1]) + f[0][2](out[2])
        y1 = 2 * f[1][0](y0) + out[1] + f[1][2](out[2])
        y2 = 2 * f[2][0](y0) + f[2][1](out[1]) + out[2]
    for got, want in zip(fused, (y0, y1, y2), strict=True):
        torch.testing.assert_close(got, F.relu(want), rtol=1e-5, atol=1e-6)


def test_iterative_head_upsamples_bilinearly_from_the_coarsest() -> None:
    torch.manual_seed(0)
    head = IterativeHead((8, 16)).eval()
    fine, coarse = torch.randn(1, 8, 8, 6), torch.randn(1, 16, 4, 3)
    with torch.no_grad():
        got = head([fine, coarse])
        up = F.interpolate(
            head.projects[0](coarse), size=(8, 6), mode="bilinear", align_corners=True
        )
        want = head.projects[1](fine + up)
    torch.testing.assert_close(got, want)
    assert got.shape == (1, 8, 8, 6)
