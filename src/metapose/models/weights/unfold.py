"""Giving folded BatchNorm back its statistics, so an imported model trains like the original.

Deployment files (ncnn, most ONNX exports) fold each BatchNorm into the convolution before it:
``conv'(x) = conv(x) * g + b``. Imported as is, the BatchNorm after ``conv'`` is an identity
carrying ``b`` (weight 1, running mean 0, running variance ``1 - eps``). That computes the file's
function in eval mode, but in train mode BatchNorm normalises by the batch's own statistics, so
fine-tuning, Reptile or supervised training would start from a different network than the one
imported (and drift its running statistics away). :func:`unfold_batchnorm` measures the mean
``m`` and variance ``v`` of each such BatchNorm's input on calibration images and sets
``running_mean = m``, ``running_var = v``, ``weight = sqrt(v + eps)``, ``bias = b + m``: eval mode
still computes ``x + b`` (exactly, up to rounding), and train mode on images like the calibration
ones computes about the same, as the original BatchNorm did on its training data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def folded_batchnorms(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """The BatchNorm layers that are identities plus a bias (how importers write folded ones)."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.BatchNorm2d) or m.running_mean is None or m.running_var is None:
            continue
        if (
            bool((m.running_mean == 0).all())
            and bool((m.running_var == 1.0 - m.eps).all())
            and m.weight is not None
            and bool((m.weight == 1).all())
        ):
            out[name] = m
    return out


@torch.no_grad()
def unfold_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Give every folded BatchNorm of ``model`` the statistics of its input on ``batches``.

    ``batches``: ``(B, 3, H, W)`` normalised images the way the model takes them. The model runs
    in eval mode (where the folded layers are identities, so every layer sees what the original
    network computes). Returns the number of layers unfolded; the model is left in eval mode.
    """
    layers = folded_batchnorms(model)
    if not layers:
        return 0
    sums: dict[str, Tensor] = {}
    squares: dict[str, Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(layers, 0)

    def hook(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].detach().double()  # float64 sums: many pixels, exact enough to repeat
            channel_sum, channel_squares = x.sum(dim=(0, 2, 3)), x.pow(2).sum(dim=(0, 2, 3))
            if name in sums:
                sums[name] += channel_sum
                squares[name] += channel_squares
            else:
                sums[name], squares[name] = channel_sum, channel_squares
            counts[name] += x.shape[0] * x.shape[2] * x.shape[3]

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        for h in handles:
            h.remove()
    for name, bn in layers.items():
        if counts[name] == 0:
            continue
        mean = sums[name] / counts[name]
        var = (squares[name] / counts[name] - mean.pow(2)).clamp_min(0.0)
        assert bn.running_mean is not None and bn.running_var is not None
        assert bn.weight is not None and bn.bias is not None
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.bias.add_(mean.float())
        bn.weight.copy_((var + bn.eps).sqrt().float())
    return len(layers)
