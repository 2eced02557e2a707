"""One optimisation step on a batch, and the optimisers used by training, adaptation and Reptile.

Shared by :mod:`metapose.train`, :mod:`metapose.adapt` and :mod:`metapose.meta` so that the
supervised baseline, the inner loop and the few-shot fine-tune compute exactly the same thing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metapose.config import OptimizerConfig
from metapose.data.dataset import Sample
from metapose.losses import joints_mse


def build_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], config: OptimizerConfig
) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(
        params, lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
    )


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16 or AMX), which makes it fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class DeviceOptions:
    """How a device is used.

    ``amp``: bfloat16 autocast on CUDA and on CPUs with native bfloat16 (measured on a 2-core
    AVX512-BF16 machine: ResNet-18 128x96 training 31 -> 52 images/s, inference 90 -> 214);
    elsewhere float32. ``channels_last`` memory format on CUDA and CPU (oneDNN prefers it).
    """

    device: torch.device
    amp: bool = True
    channels_last: bool = True

    @property
    def use_amp(self) -> bool:
        if not self.amp:
            return False
        return self.device.type == "cuda" or (self.device.type == "cpu" and cpu_has_bf16())

    @property
    def memory_format(self) -> torch.memory_format:
        if self.channels_last and self.device.type in ("cuda", "cpu"):
            return torch.channels_last
        return torch.contiguous_format

    def prepare(self, model: nn.Module) -> nn.Module:
        # Module.to accepts memory_format at run time; its type stubs do not list it.
        return model.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]


def train_mode(model: nn.Module, frozen_batchnorm: bool = False) -> None:
    """``model.train()``; ``frozen_batchnorm`` keeps every BatchNorm's running statistics (its
    affine weights still train)."""
    model.train()
    if frozen_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def batch_loss(model: nn.Module, batch: Sample, options: DeviceOptions) -> torch.Tensor:
    images = batch.image.to(options.device, non_blocking=True).contiguous(
        memory_format=options.memory_format
    )
    with torch.autocast(options.device.type, dtype=torch.bfloat16, enabled=options.use_amp):
        heatmaps = model(images)
    return joints_mse(
        heatmaps.float(),
        batch.heatmaps.to(options.device, non_blocking=True),
        batch.target_weight.to(options.device, non_blocking=True),
    )


def step_on_batch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Sample,
    options: DeviceOptions,
    *,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> float:
    """Forward, JointsMSE (+ ``penalty()``), backward, step; returns the loss before the step.

    The caller sets the module's train/eval mode (a frozen backbone keeps its BatchNorm in eval).
    The returned loss is the data term alone, so runs with and without a penalty compare.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = batch_loss(model, batch, options)
    total = loss if penalty is None else loss + penalty()
    total.backward()
    optimizer.step()
    return float(loss.detach())
