"""The device policy: which device, bfloat16 autocast and memory format a model runs with.

Passed in to training, adaptation and inference alike; the library never picks a device itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from metapose.config.training import Amp


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

    ``amp`` chooses bfloat16 autocast. The rule: a precision other than float32 is the default only
    where it is measured faster *and* reproducible. ``"auto"`` (the default): bfloat16 on CUDA,
    float32 on every CPU. On CPUs bfloat16 fails the second test: on AMX machines the same forward
    pass differs from run to run and tiny runs end in NaN, and a default that depends on the CPU's
    instruction set gives different results on different machines (``benchmarks/precision.py``
    times both). ``True``:
    bfloat16 on CUDA and on CPUs with native bfloat16 (faster for ResNets there, reproducible only
    on the same machine); float32 on other CPUs. ``False``: float32 everywhere.
    ``channels_last`` memory format on CUDA and CPU (oneDNN prefers it).
    """

    device: torch.device
    amp: Amp = "auto"
    channels_last: bool = True

    @property
    def use_amp(self) -> bool:
        if self.amp is False:
            return False
        if self.device.type == "cuda":
            return True
        return self.amp is True and self.device.type == "cpu" and cpu_has_bf16()

    @property
    def memory_format(self) -> torch.memory_format:
        if self.channels_last and self.device.type in ("cuda", "cpu"):
            return torch.channels_last
        return torch.contiguous_format

    def prepare(self, model: nn.Module) -> nn.Module:
        # Module.to accepts memory_format at run time; its type stubs do not list it.
        return model.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
