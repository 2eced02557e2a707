"""JointsMSELoss of SimpleBaseline (Xiao et al., 2018): heatmap MSE with per-joint weights."""

from __future__ import annotations

import torch
from torch import Tensor


def joints_mse(heatmaps: Tensor, targets: Tensor, target_weight: Tensor) -> Tensor:
    """``0.5 * mean((w * (pred - target))**2)`` over batch, joints and pixels.

    ``heatmaps``/``targets`` are ``(B, K, h, w)``, ``target_weight`` ``(B, K)``: joints that are
    unlabelled or fall outside the heatmap contribute nothing (but still count in the mean, as in
    SimpleBaseline, so the loss scale does not depend on how many joints are labelled).
    """
    weight = target_weight[:, :, None, None].to(heatmaps.dtype)
    diff = (heatmaps - targets.to(heatmaps.dtype)) * weight
    return 0.5 * torch.mean(diff.float() ** 2)
