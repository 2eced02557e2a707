"""One optimisation step on a batch, and the optimisers used by training, adaptation and Reptile.

Shared by :mod:`metapose.training.train`, :mod:`metapose.training.adapt` and
:mod:`metapose.training.meta` so that the supervised baseline, the inner loop and the few-shot
fine-tune compute exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from metapose.config import OptimizerConfig
from metapose.data.dataset import Sample
from metapose.device import DeviceOptions
from metapose.models.topdown import forward_on
from metapose.training.losses import joints_mse


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


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def train_mode(model: nn.Module, frozen_batchnorm: bool = False) -> None:
    """``model.train()``; ``frozen_batchnorm`` keeps every BatchNorm's running statistics (its
    affine weights still train)."""
    model.train()
    if frozen_batchnorm:
        for m in batchnorms(model):
            m.eval()


def batch_loss(model: nn.Module, batch: Sample, options: DeviceOptions) -> torch.Tensor:
    heatmaps = forward_on(model, batch.image, options)
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
