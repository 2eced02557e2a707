"""The device policy: which device, bfloat16 autocast and memory format a model runs with.

Passed in to training, adaptation and inference alike; the library never picks a device itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn


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
