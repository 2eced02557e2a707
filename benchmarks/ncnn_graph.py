"""Naive ncnn-graph interpretation vs the native Lite-HRNet, on PP-TinyPose's ncnn files.

:class:`NcnnGraphModule` runs an ncnn graph (:func:`metapose.models.weights.ncnn.read_ncnn`)
layer by layer with torch operations, its convolution weights and biases as parameters: the
shortest way to run, and even fine-tune, any ncnn model in PyTorch, but with BatchNorm folded
away, shapes baked into its Reshape layers and no module names. The benchmark compares it with
the native model :func:`~metapose.models.weights.ncnn.import_ncnn` builds from the same files
(``TopDownModel`` with ``LiteHRNet``, BatchNorm kept): training throughput (forward, MSE
loss, backward and an Adam step; batch 32, float32, training mode) and inference throughput
(batch 32, no gradients, evaluation mode) at 128x96 and 256x192 (H x W) on the CPU, 2 threads
by default. It first checks that the two compute the same heatmaps.

Run: ``python benchmarks/ncnn_graph.py [--threads 2] [--batch 32] [--iters 3]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metapose.models.weights.ncnn import import_ncnn
from metapose.models.weights.ncnn_reader import ConvSpec, NcnnGraph, NcnnLayer, conv_spec, read_ncnn

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "pp_tinypose"
NAMES = ("tinypose_128x96", "tinypose_256x192")
DROP_DIM = -233
# ncnn's Permute order types for 3-D blobs, as a permutation of (c, h, w) outermost first.
PERMUTE_3D = {0: (0, 1, 2), 1: (0, 2, 1), 2: (1, 0, 2), 3: (1, 2, 0), 4: (2, 0, 1), 5: (2, 1, 0)}
PERMUTE_2D = {0: (0, 1), 1: (1, 0)}
BINARY_OPS: dict[int, Callable[[Tensor, Tensor], Tensor]] = {
    0: torch.add,
    1: torch.sub,
    2: torch.mul,
    3: torch.div,
    4: torch.maximum,
    5: torch.minimum,
    6: torch.pow,
    7: lambda a, b: b - a,
    8: lambda a, b: b / a,
}
INTERP_MODES = {1: "nearest", 2: "bilinear"}


def _axis(axis: int, rank: int) -> int:
    """ncnn's axis of a blob of ``rank`` dimensions -> the batched tensor's dim."""
    return (axis + rank if axis < 0 else axis) + 1


class NcnnGraphModule(nn.Module):
    """Executes an ncnn graph on a batch, one layer after the other, with torch operations.

    Supports the layer types :func:`read_ncnn` reads; blobs keep a leading batch dimension
    that ncnn's per-sample shapes (Reshape, Slice and Concat axes) leave out.
    """

    def __init__(self, graph: NcnnGraph) -> None:
        super().__init__()
        self.graph = graph
        (self.input_blob,) = graph.input_blobs
        (self.output_blob,) = graph.output_blobs
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        self.specs: dict[int, ConvSpec] = {}
        for layer in graph.layers:
            if layer.weights:
                key = str(layer.index)
                self.specs[layer.index] = conv_spec(layer, graph.param_path)
                self.weights[key] = nn.Parameter(torch.from_numpy(layer.weights["weight"].copy()))
                if "bias" in layer.weights:
                    self.biases[key] = nn.Parameter(torch.from_numpy(layer.weights["bias"].copy()))

    def forward(self, images: Tensor) -> Tensor:
        blobs: dict[str, Tensor] = {self.input_blob: images}
        for layer in self.graph.layers:
            if layer.type == "Input":
                continue
            outputs = self.run(layer, [blobs[b] for b in layer.inputs])
            blobs.update(zip(layer.outputs, outputs, strict=True))
        return blobs[self.output_blob]

    def run(self, layer: NcnnLayer, inputs: list[Tensor]) -> Sequence[Tensor]:
        kind = layer.type
        if kind in ("Convolution", "ConvolutionDepthWise"):
            return [self.conv(layer, inputs[0])]
        if kind == "Split":
            return [inputs[0]] * len(layer.outputs)
        if kind == "Slice":
            return self.slice(layer, inputs[0])
        if kind == "Concat":
            return [torch.cat(inputs, dim=_axis(layer.int_param(0, 0), inputs[0].dim() - 1))]
        if kind == "Reshape":
            return [self.reshape(layer, inputs[0])]
        if kind == "Permute":
            rank = inputs[0].dim() - 1
            order = (PERMUTE_3D if rank == 3 else PERMUTE_2D)[layer.int_param(0, 0)]
            return [inputs[0].permute(0, *(d + 1 for d in order))]
        if kind == "Interp":
            return [self.interp(layer, inputs[0])]
        if kind == "BinaryOp":
            op = BINARY_OPS[layer.int_param(0, 0)]
            if layer.int_param(1, 0):
                return [op(inputs[0], torch.tensor(layer.float_param(2, 0.0)))]
            return [op(inputs[0], inputs[1])]
        if kind == "ReLU":
            slope = layer.float_param(0, 0.0)
            return [F.leaky_relu(inputs[0], slope) if slope else F.relu(inputs[0])]
        raise NotImplementedError(f"{layer.describe()}: no interpretation")

    def conv(self, layer: NcnnLayer, x: Tensor) -> Tensor:
        spec = self.specs[layer.index]
        key = str(layer.index)
        padding = spec.symmetric_padding
        if padding is None:
            x = F.pad(x, spec.padding)
            padding = (0, 0)
        bias = self.biases.get(key)
        y = F.conv2d(
            x,
            self.weights[key],
            bias,
            stride=spec.stride,
            padding=padding,
            dilation=spec.dilation,
            groups=spec.groups,
        )
        return F.relu(y) if spec.activation else y

    @staticmethod
    def slice(layer: NcnnLayer, x: Tensor) -> list[Tensor]:
        dim = _axis(layer.int_param(1, 0), x.dim() - 1)
        total, slices = x.shape[dim], [int(v) for v in layer.array_param(0)]
        sizes: list[int] = []
        for k, size in enumerate(slices):
            left = total - sum(sizes)
            if size == -1 or (k == len(slices) - 1 and size == DROP_DIM):
                size = left
            elif size == DROP_DIM:
                size = left // (len(slices) - k)
            sizes.append(size)
        return list(torch.split(x, sizes, dim=dim))

    @staticmethod
    def reshape(layer: NcnnLayer, x: Tensor) -> Tensor:
        bottom = x.shape[1:][::-1]  # ncnn's w, h, (d,) c
        dims = [layer.int_param(k, DROP_DIM) for k in (0, 1, 11, 2)]
        shape = [bottom[i] if v == 0 else v for i, v in enumerate(dims) if v != DROP_DIM]
        return x.reshape(x.shape[0], *shape[::-1])

    @staticmethod
    def interp(layer: NcnnLayer, x: Tensor) -> Tensor:
        mode = INTERP_MODES[layer.int_param(0, 0)]
        size = (layer.int_param(3, 0), layer.int_param(4, 0))
        corners = bool(layer.int_param(6, 0)) if mode == "bilinear" else None
        if size != (0, 0):
            return F.interpolate(x, size=size, mode=mode, align_corners=corners)
        scale = (layer.float_param(1, 1.0), layer.float_param(2, 1.0))
        return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=corners)


# ----------------------------------------------------------------------------- timing


def train_step(model: nn.Module, images: Tensor) -> Callable[[], None]:
    """One training step (forward, MSE loss, backward, Adam) of ``model`` on ``images``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    with torch.no_grad():
        target = torch.rand_like(model.eval()(images[:1])).expand(len(images), -1, -1, -1)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(images), target)
        loss.backward()
        optimizer.step()

    return step


def infer_step(model: nn.Module, images: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    return step


def best_seconds(steps: Sequence[Callable[[], None]], iters: int) -> list[float]:
    """The fastest of ``iters`` timed runs of each step, after a warm-up run. The steps take
    turns, so that a burst of load on a shared machine slows all of them alike, and the best
    run is the one least disturbed."""
    for step in steps:
        step()  # warm-up: allocations, oneDNN primitives
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(iters):
        for k, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3, help="timed runs after a warm-up")
    parser.add_argument("--models", type=Path, default=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in NAMES:
        param = args.models / f"{name}.param"
        if not param.is_file():
            raise SystemExit(f"{param} not found: PP-TinyPose's ncnn files live in ../shared")
        native, report = import_ncnn(param)
        naive = NcnnGraphModule(read_ncnn(param))
        width, height = report.config.input_size
        images = torch.randn(args.batch, 3, height, width)
        with torch.no_grad():
            diff = (native.eval()(images[:4]) - naive.eval()(images[:4])).abs().max().item()
        print(f"{name}: native vs naive max |heatmap difference| {diff:.2e}", flush=True)
        models = {"naive ncnn graph": naive, "native LiteHRNet": native}
        infer = best_seconds([infer_step(m, images) for m in models.values()], args.iters)
        train = best_seconds([train_step(m, images) for m in models.values()], args.iters)
        for (label, model), train_s, infer_s in zip(models.items(), train, infer, strict=True):
            params = sum(p.numel() for p in model.parameters())
            rate_train, rate_infer = args.batch / train_s, args.batch / infer_s
            rows.append((f"{height}x{width}", label, params, rate_train, rate_infer))
            print(f"  {label}: train {rate_train:.1f} img/s, infer {rate_infer:.1f} img/s")
    print(
        f"\nPP-TinyPose, CPU float32, {args.threads} threads, batch {args.batch}, "
        f"best of {args.iters} timed iterations"
    )
    header = f"{'input':>8} | {'model':<17} | {'parameters':>10} | {'train img/s':>11} | "
    print(header + f"{'infer img/s':>11}")
    print("-" * (len(header) + 11))
    for size, label, params, train, infer in rows:
        print(f"{size:>8} | {label:<17} | {params:>10,} | {train:>11.1f} | {infer:>11.1f}")


if __name__ == "__main__":
    main()
