"""Inference speed of TopDownModel: PyTorch vs onnxruntime, latency per crop and throughput.

For ResNet-18 and ResNet-50 at 256x192 and 128x96 (H x W): the median latency of one crop (batch 1)
and the throughput at batch 32, on the CPU with PyTorch (eager float32, and bf16 autocast +
channels_last where the CPU has native bfloat16, as metapose uses it there) and with onnxruntime
(float32) on the file :func:`metapose.inference.export.export_onnx` writes, and on a CUDA device
with PyTorch (float32, and bf16 autocast + channels_last) when one is available. The network alone
is timed (no crop, decode or flip test); weights are random, which does not change the speed. Run:
``python benchmarks/infer.py [--threads N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from metapose.config import ModelConfig, ResNetConfig
from metapose.device import DeviceOptions, cpu_has_bf16
from metapose.inference.export import export_onnx
from metapose.inference.onnx_runtime import OnnxHeatmapModel
from metapose.models import TopDownModel

DEPTHS = (18, 50)
SIZES = ((192, 256), (96, 128))  # (W, H): the paper's input and a fast one
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 32
MS_PER_S = 1e3

Runner = Callable[[np.ndarray], Callable[[], object]]  # a batch -> a call that runs it once


def no_sync() -> None:
    """CPU work is done when the call returns."""


def median_seconds(run: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    run()  # warm-up: allocator, oneDNN/cuDNN kernel choice
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_runner(
    model: TopDownModel, options: DeviceOptions, batch: np.ndarray
) -> Callable[[], object]:
    network = options.prepare(model).eval()
    x = torch.from_numpy(batch).to(options.device).contiguous(memory_format=options.memory_format)

    def run() -> object:
        with (
            torch.inference_mode(),
            torch.autocast(options.device.type, dtype=torch.bfloat16, enabled=options.use_amp),
        ):
            return network(x)

    return run


def onnx_runner(session: OnnxHeatmapModel, batch: np.ndarray) -> Callable[[], object]:
    return partial(session, batch)


def backends_for(
    model: TopDownModel, session: OnnxHeatmapModel
) -> list[tuple[str, Runner, Callable[[], None]]]:
    """(name, runner, synchronise) for every backend this machine has."""
    fp32 = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
    out: list[tuple[str, Runner, Callable[[], None]]] = [
        ("pytorch cpu fp32", partial(torch_runner, model, fp32), no_sync),
    ]
    if cpu_has_bf16():
        bf16 = DeviceOptions(torch.device("cpu"), amp=True)
        out.append(("pytorch cpu bf16", partial(torch_runner, model, bf16), no_sync))
    out.append(("onnxruntime cpu fp32", partial(onnx_runner, session), no_sync))
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        for name, amp in (("pytorch cuda fp32", False), ("pytorch cuda bf16", True)):
            options = DeviceOptions(cuda, amp=amp, channels_last=amp)
            out.append((name, partial(torch_runner, model, options), torch.cuda.synchronize))
    return out


def measure(
    make_run: Runner,
    shape: tuple[int, int],
    repeats: tuple[int, int],
    sync: Callable[[], None],
    rng: np.random.Generator,
) -> tuple[float, float]:
    """(ms per crop at batch 1, crops per second at batch 32)."""
    width, height = shape
    one = rng.standard_normal((LATENCY_BATCH, 3, height, width)).astype(np.float32)
    many = rng.standard_normal((THROUGHPUT_BATCH, 3, height, width)).astype(np.float32)
    latency = median_seconds(make_run(one), repeats[0], sync)
    batch = median_seconds(make_run(many), repeats[1], sync)
    return MS_PER_S * latency, THROUGHPUT_BATCH / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--latency-repeats", type=int, default=20)
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = (args.latency_repeats, args.batch_repeats)
    rng = np.random.default_rng(0)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {args.threads} threads; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}; "
        f"median of {repeats[0]} (batch 1) / {repeats[1]} (batch {THROUGHPUT_BATCH}) runs"
    )
    header = "| model | input HxW | backend | ms/crop (b=1) | crops/s (b=32) |"
    print(f"\n{header}\n|---|---|---|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            for width, height in SIZES:
                config = ModelConfig(backbone=ResNetConfig(depth=depth), input_size=(width, height))
                torch.manual_seed(0)
                model = TopDownModel(config).eval()
                path = export_onnx(model, Path(tmp) / f"r{depth}_{width}x{height}.onnx")
                session = OnnxHeatmapModel(path, threads=args.threads)
                backends = backends_for(model, session)
                for name, make_run, sync in backends:
                    ms, per_s = measure(make_run, (width, height), repeats, sync, rng)
                    row = {
                        "model": f"ResNet-{depth}",
                        "input": f"{height}x{width}",
                        "backend": name,
                        "ms_per_crop_b1": round(ms, 2),
                        "crops_per_s_b32": round(per_s, 1),
                    }
                    rows.append(row)
                    print(
                        f"| {row['model']} | {row['input']} | {name} | {ms:.1f} | {per_s:.1f} |",
                        flush=True,
                    )
                model.to("cpu")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
