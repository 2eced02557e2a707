"""The few-shot recipe's options: BatchNorm handling, backbone learning rate, L2-SP."""

from __future__ import annotations

import torch
from torch import nn

from metapose.adapt import fine_tune, reestimate_batchnorm
from metapose.config import AdaptConfig, OptimizerConfig
from metapose.data.batches import EpochBatches
from metapose.models import TopDownModel
from metapose.optim import DeviceOptions
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
QUICK = AdaptConfig(optimizer=OptimizerConfig(lr=1e-2), epochs=2, batch_size=4)


def model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def norms(m: nn.Module) -> list[nn.BatchNorm2d]:
    return [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]


def stats(m: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for b in norms(m) for t in (b.running_mean, b.running_var)]


def test_frozen_batchnorm_keeps_the_starting_statistics_and_trains_the_weights() -> None:
    m = model()
    before, weights = stats(m), m.final_layer.weight.clone()
    fine_tune(m, tiny_dataset(8), AdaptConfig(**{**QUICK.__dict__, "batchnorm": "frozen"}), CPU)
    assert all(torch.equal(a, b) for a, b in zip(before, stats(m), strict=True))
    assert not torch.equal(weights, m.final_layer.weight)


def test_reestimated_statistics_are_the_support_batch_average_then_stay() -> None:
    support = tiny_dataset(4)
    m = model()
    cfg = AdaptConfig(**{**QUICK.__dict__, "batchnorm": "reestimate"})
    first = next(EpochBatches(support, cfg.batch_size, seed=0).batches())
    expected = model()
    reestimate_batchnorm(expected, [first], CPU)
    fine_tune(m, support, cfg, CPU)
    bn = norms(m)[0]
    assert torch.allclose(bn.running_mean, norms(expected)[0].running_mean)
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    # the statistics really are those of the batch: BN's input channel means
    with torch.no_grad():
        conv1 = expected.backbone.conv1(first.image)
    assert torch.allclose(norms(expected)[0].running_mean, conv1.mean(dim=(0, 2, 3)), atol=1e-5)


def test_backbone_lr_scale_zero_moves_only_the_head() -> None:
    m = model()
    backbone = [p.clone() for p in m.backbone.parameters()]
    head = [p.clone() for p in m.head_parameters()]
    cfg = AdaptConfig(**{**QUICK.__dict__, "backbone_lr_scale": 0.0, "batchnorm": "frozen"})
    fine_tune(m, tiny_dataset(8), cfg, CPU)
    assert all(torch.equal(a, b) for a, b in zip(backbone, m.backbone.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(head, m.head_parameters(), strict=True))


def test_l2sp_keeps_the_weights_nearer_the_start() -> None:
    def drift(l2sp: float) -> float:
        m = model()
        start = [p.detach().clone() for p in m.parameters()]
        fine_tune(m, tiny_dataset(8), AdaptConfig(**{**QUICK.__dict__, "l2sp": l2sp}), CPU)
        return sum(
            float((p.detach() - s).pow(2).sum()) for p, s in zip(m.parameters(), start, strict=True)
        )

    assert drift(100.0) < 0.5 * drift(0.0)
