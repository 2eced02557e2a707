"""Training and inference throughput of each backbone, at 128x96 and 256x192, on this machine.

For ResNet-18, ResNet-50 (SimpleBaseline heads), Lite-HRNet in PP-TinyPose's configuration and
MobileNetV2 x0.5 in Ultralight-SimplePose's: images per second of a training step (forward,
JointsMSE, backward, Adam step; batch 32, train mode) and of inference (batch 32, eval mode, no
flip test), in float32 and in bfloat16 autocast + channels_last (``amp: true`` on CPUs with
native bfloat16; the default is float32), with the median of a few timed repeats after a
warm-up. Weights are random, which does not change the speed. Run:
``python benchmarks/architectures.py [--threads N]``.
``benchmarks/ncnn_graph.py`` times a naive graph-interpreting conversion of the PP-TinyPose ncnn
file beside the native Lite-HRNet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from metapose.config import LiteHRNetConfig, MobileNetV2Config, ModelConfig, ResNetConfig
from metapose.device import DeviceOptions, cpu_has_bf16
from metapose.models import TopDownModel, count_parameters
from metapose.training.losses import joints_mse

SIZES = ((96, 128), (192, 256))  # (W, H)
BATCH = 32


def architectures(size: tuple[int, int]) -> dict[str, ModelConfig]:
    return {
        "ResNet-18": ModelConfig(backbone=ResNetConfig(depth=18), input_size=size),
        "ResNet-50": ModelConfig(backbone=ResNetConfig(depth=50), input_size=size),
        "Lite-HRNet (PP-TinyPose)": ModelConfig(
            backbone=LiteHRNetConfig(), deconv_channels=(), input_size=size
        ),
        "MobileNetV2 x0.5 (Ultralight)": ModelConfig(
            backbone=MobileNetV2Config(width_mult=0.5, last_channels=128, last_activation="relu"),
            deconv_channels=(128, 128, 128),
            deconv_separable=True,
            input_size=size,
        ),
    }


def images_per_second(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: allocator and oneDNN kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return BATCH / statistics.median(times)


def measure(config: ModelConfig, options: DeviceOptions, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = options.prepare(TopDownModel(config))
    w, h = config.input_size
    images = torch.randn(BATCH, 3, h, w).contiguous(memory_format=options.memory_format)
    hw, hh = config.heatmap_size
    targets = torch.rand(BATCH, config.num_keypoints, hh, hw)
    weights = torch.ones(BATCH, config.num_keypoints)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.use_amp):
            heatmaps = model(images)
        joints_mse(heatmaps.float(), targets, weights).backward()
        optimizer.step()

    def infer() -> None:
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.use_amp),
        ):
            model(images)

    model.train()
    train = images_per_second(train_step, repeats)
    model.eval()
    inference = images_per_second(infer, repeats)
    return train, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = [("float32", DeviceOptions(torch.device("cpu"), amp=False, channels_last=False))]
    if cpu_has_bf16():
        modes.append(("bf16+cl", DeviceOptions(torch.device("cpu"), amp=True)))
    rows = []
    print(f"threads {args.threads}, batch {BATCH}, images/s (median of {args.repeats})")
    print(f"{'model':32s} {'input':8s} {'params':>8s} {'mode':8s} {'train':>8s} {'infer':>8s}")
    for w, h in SIZES:
        for name, config in architectures((w, h)).items():
            params = count_parameters(TopDownModel(config)) / 1e6
            for mode, options in modes:
                train, infer = measure(config, options, args.repeats)
                rows.append(
                    {
                        "model": name,
                        "input": f"{h}x{w}",
                        "params_m": round(params, 2),
                        "mode": mode,
                        "train": round(train, 1),
                        "infer": round(infer, 1),
                    }
                )
                print(
                    f"{name:32s} {h}x{w:<5d} {params:7.2f}M {mode:8s} {train:8.1f} {infer:8.1f}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
