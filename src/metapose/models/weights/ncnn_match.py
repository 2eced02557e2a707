"""Matching an ncnn Lite-HRNet graph (PP-TinyPose) to metapose's native Lite-HRNet.

The walk from the graph's input along the data flow that
:func:`metapose.models.weights.ncnn.import_ncnn` describes: each convolution, shuffle, fusion and
head operation is matched to the one the native model computes, the configuration is read off
the file, and every convolution is placed by its position in the data flow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from metapose.config import ConfigError, LiteHRNetConfig
from metapose.errors import DataError
from metapose.files import show
from metapose.models.backbones.lite_hrnet import STEM_EXPAND_RATIO
from metapose.models.weights.ncnn_reader import (
    ADD,
    BILINEAR,
    DROP_DIM,
    NEAREST,
    PERMUTE_SWAP_OUTER,
    RELU_ACTIVATION,
    RGB,
    ConvSpec,
    NcnnGraph,
    NcnnLayer,
    conv_spec,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- matching


def not_understood(source: Path, message: str) -> DataError:
    return DataError(source, f"not a Lite-HRNet graph this importer understands: {message}")


class LiteHRNetMatcher:
    """Walks an ncnn graph along the data flow as LiteHRNet's forward pass computes it.

    Each step takes an unused layer reading a given blob (Split layers are seen through) that
    matches what the native model computes there, in file order among equals; the convolutions
    are recorded under the native model's module names.
    """

    def __init__(self, graph: NcnnGraph) -> None:
        self.graph = graph
        self.source = graph.param_path
        self.root: dict[str, str] = {}
        self.readers: dict[str, list[NcnnLayer]] = {}
        for layer in graph.layers:
            if layer.type == "Split":
                if len(layer.inputs) != 1:
                    raise not_understood(self.source, f"{layer.describe()} has several inputs")
                blob = layer.inputs[0]
                for out in layer.outputs:
                    self.root[out] = self.root.get(blob, blob)
                continue
            for blob in dict.fromkeys(self.root.get(b, b) for b in layer.inputs):
                self.readers.setdefault(blob, []).append(layer)
        self.used: set[int] = set()
        self.placed: list[tuple[str, NcnnLayer]] = []
        self.size0: tuple[int, int] | None = None  # (h, w) of branch 0

    # ------------------------------------------------------------------ primitives

    def canon(self, blob: str) -> str:
        return self.root.get(blob, blob)

    def inputs(self, layer: NcnnLayer) -> tuple[str, ...]:
        return tuple(self.canon(b) for b in layer.inputs)

    def find(self, blob: str, accept: Callable[[NcnnLayer], bool]) -> NcnnLayer | None:
        for layer in self.readers.get(self.canon(blob), []):
            if layer.index not in self.used and accept(layer):
                return layer
        return None

    def take(self, blob: str, what: str, accept: Callable[[NcnnLayer], bool]) -> NcnnLayer:
        layer = self.find(blob, accept)
        if layer is None:
            blob = self.canon(blob)
            found = [
                f"{r.name} ({r.type})"
                for r in self.readers.get(blob, [])
                if r.index not in self.used
            ]
            made_by = self.graph.producer(blob).describe()
            raise not_understood(
                self.source,
                f"expected {what} reading blob {show(blob)} (made by {made_by}); "
                f"found {', '.join(found) if found else 'no unused reader'}",
            )
        self.used.add(layer.index)
        return layer

    def out(self, layer: NcnnLayer) -> str:
        if len(layer.outputs) != 1:
            raise not_understood(self.source, f"{layer.describe()} has several outputs")
        return layer.outputs[0]

    def _conv_accept(
        self, *, out: int | None, inp: int, kernel: int, stride: int, depthwise: bool, relu: bool
    ) -> Callable[[NcnnLayer], bool]:
        def accept(layer: NcnnLayer) -> bool:
            if layer.type != ("ConvolutionDepthWise" if depthwise else "Convolution"):
                return False
            spec = conv_spec(layer, self.source)
            return (
                (out is None or spec.out_channels == out)
                and spec.in_channels == inp
                and spec.groups == (inp if depthwise else 1)
                and (not depthwise or spec.out_channels == inp)
                and spec.kernel == (kernel, kernel)
                and spec.stride == (stride, stride)
                and spec.dilation == (1, 1)
                and spec.padding == (kernel // 2,) * 4
                and spec.activation in ((0, RELU_ACTIVATION) if relu else (0,))
            )

        return accept

    def conv(
        self,
        blob: str,
        path: str,
        *,
        inp: int,
        out: int | None = None,
        kernel: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        relu: bool = False,
    ) -> tuple[str, ConvSpec]:
        """A convolution (ReLU fused or as the next layer) -> its output blob and parameters."""
        kind = "depthwise " if depthwise else ""
        what = (
            f"a {kernel}x{kernel} stride-{stride} {kind}convolution {inp} -> "
            f"{out if out is not None else 'any'} channels{' + ReLU' if relu else ''} ({path})"
        )
        accept = self._conv_accept(
            out=out, inp=inp, kernel=kernel, stride=stride, depthwise=depthwise, relu=relu
        )
        layer = self.take(blob, what, accept)
        spec = conv_spec(layer, self.source)
        result = self.out(layer)
        if relu and spec.activation != RELU_ACTIVATION:
            result = self.relu(result)
        self.placed.append((path, layer))
        return result, spec

    def separable(
        self, blob: str, path: str, *, inp: int, out: int | None, stride: int, relu: bool
    ) -> tuple[str, int]:
        blob, _ = self.conv(
            blob, f"{path}.depthwise", inp=inp, kernel=3, stride=stride, depthwise=True
        )
        blob, spec = self.conv(blob, f"{path}.pointwise", inp=inp, out=out, relu=relu)
        return blob, spec.out_channels

    def relu(self, blob: str) -> str:
        def accept(layer: NcnnLayer) -> bool:
            return layer.type == "ReLU" and layer.float_param(0, 0.0) == 0.0

        return self.out(self.take(blob, "a ReLU", accept))

    def halves(self, blob: str, channels: int) -> tuple[str, str]:
        half = channels // 2

        def accept(layer: NcnnLayer) -> bool:
            if layer.type != "Slice" or len(layer.outputs) != 2:
                return False
            slices = layer.array_param(0)
            return layer.int_param(1, 0) in (0, -3) and slices in (
                (DROP_DIM, DROP_DIM),
                (half, half),
                (half, DROP_DIM),
                (half, -1),
            )

        layer = self.take(blob, f"a Slice into two halves of {channels} channels", accept)
        first, second = layer.outputs
        return first, second

    def concat(self, first: str, second: str) -> str:
        pair = (self.canon(first), self.canon(second))

        def accept(layer: NcnnLayer) -> bool:
            return (
                layer.type == "Concat"
                and layer.int_param(0, 0) in (0, -3)
                and self.inputs(layer) == pair
            )

        return self.out(self.take(first, f"a Concat of {pair}", accept))

    def add(self, first: str, second: str) -> str:
        pair = sorted((self.canon(first), self.canon(second)))

        def accept(layer: NcnnLayer) -> bool:
            return (
                layer.type == "BinaryOp"
                and layer.int_param(0, 0) == ADD
                and layer.int_param(1, 0) == 0
                and sorted(self.inputs(layer)) == pair
            )

        return self.out(self.take(first, f"a BinaryOp Add of {tuple(pair)}", accept))

    def branch_size(self, branch: int) -> tuple[int, int] | None:
        if self.size0 is None:
            return None
        h, w = self.size0
        scale = 2**branch
        return (-(-h // scale), -(-w // scale))

    def shuffle(self, blob: str, channels: int, branch: int) -> str:
        """Channel shuffle in 2 groups: Reshape (2, C/2, H*W), Permute, Reshape (C, H, W)."""
        known = self.branch_size(branch)

        def reshape_dims(layer: NcnnLayer) -> tuple[int, int, int, int] | None:
            """(c, d, h, w) of a plain Reshape layer, else None."""
            if layer.type != "Reshape" or layer.int_param(3, 0):
                return None
            w, h, d, c = (layer.int_param(k, DROP_DIM) for k in (0, 1, 11, 2))
            return (c, d, h, w)

        def flat(layer: NcnnLayer) -> bool:
            dims = reshape_dims(layer)
            if dims is None or dims[:3] != (2, DROP_DIM, channels // 2):
                return False
            area = dims[3]
            return area == -1 or (area > 0 if known is None else area == known[0] * known[1])

        def swap(layer: NcnnLayer) -> bool:
            return layer.type == "Permute" and layer.int_param(0, 0) == PERMUTE_SWAP_OUTER

        def back(layer: NcnnLayer) -> bool:
            dims = reshape_dims(layer)
            if dims is None or dims[:2] != (channels, DROP_DIM):
                return False
            return min(dims[2:]) > 0 and (known is None or dims[2:] == known)

        first = self.take(
            blob,
            f"a Reshape of {channels} channels to (2, {channels // 2}, H*W) (channel shuffle)",
            flat,
        )
        middle = self.take(self.out(first), "a Permute (channel shuffle)", swap)
        size = f"{known[0]}x{known[1]}" if known else "HxW"
        last = self.take(
            self.out(middle), f"a Reshape to ({channels}, {size}) (channel shuffle)", back
        )
        if known is None:
            h, w = last.int_param(1, 0), last.int_param(0, 0)
            if first.int_param(0, 0) not in (-1, h * w):
                raise not_understood(
                    self.source, f"{first.describe()} and {last.describe()} disagree on H*W"
                )
            self.size0 = (h * 2**branch, w * 2**branch)
        return self.out(last)

    def upsample_nearest(self, blob: str, scale: int, branch: int) -> str:
        known = self.branch_size(branch)

        def accept(layer: NcnnLayer) -> bool:
            if layer.type != "Interp" or layer.int_param(0, 0) != NEAREST:
                return False
            if layer.int_param(5, 0):
                return False
            size = (layer.int_param(3, 0), layer.int_param(4, 0))
            scales = (layer.float_param(1, 1.0), layer.float_param(2, 1.0))
            return scales == (scale, scale) if size == (0, 0) else size == known

        return self.out(self.take(blob, f"a nearest Interp by {scale}", accept))

    def upsample_bilinear(self, blob: str, branch: int) -> str:
        known = self.branch_size(branch)

        def accept(layer: NcnnLayer) -> bool:
            if layer.type != "Interp" or layer.int_param(0, 0) != BILINEAR:
                return False
            if not layer.int_param(6, 0) or layer.int_param(5, 0):
                return False
            size = (layer.int_param(3, 0), layer.int_param(4, 0))
            scales = (layer.float_param(1, 1.0), layer.float_param(2, 1.0))
            return scales == (2.0, 2.0) if size == (0, 0) else size == known

        return self.out(self.take(blob, "a bilinear Interp (align_corner=1) by 2", accept))

    # ------------------------------------------------------------------ the network

    def has_new_branch(self, blob: str, channels: int) -> bool:
        accept = self._conv_accept(
            out=None, inp=channels, kernel=3, stride=2, depthwise=True, relu=False
        )
        return self.find(blob, accept) is not None

    def has_width_change(self, blob: str, channels: int) -> bool:
        accept = self._conv_accept(
            out=None, inp=channels, kernel=3, stride=1, depthwise=True, relu=False
        )
        return self.find(blob, accept) is not None

    def has_unit(self, blob: str) -> bool:
        return self.find(blob, lambda layer: layer.type == "Slice") is not None

    def stem(self, image: str) -> tuple[str, int]:
        path = "backbone.stem"
        x, spec = self.conv(image, f"{path}.conv1", inp=RGB, kernel=3, stride=2, relu=True)
        channels = spec.out_channels
        half = channels // 2
        mid = channels * STEM_EXPAND_RATIO
        a, b = self.halves(x, channels)
        a, _ = self.separable(
            a, f"{path}.branch1", inp=half, out=channels - half, stride=2, relu=True
        )
        b, _ = self.conv(b, f"{path}.expand_conv", inp=half, out=mid, relu=True)
        b, _ = self.conv(b, f"{path}.depthwise_conv", inp=mid, kernel=3, stride=2, depthwise=True)
        b, _ = self.conv(b, f"{path}.linear_conv", inp=mid, out=half, relu=True)
        return self.shuffle(self.concat(a, b), channels, 0), channels

    def unit(self, blob: str, channels: int, branch: int, path: str) -> str:
        half = channels // 2
        a, b = self.halves(blob, channels)
        b, _ = self.conv(b, f"{path}.branch2.0", inp=half, out=half, relu=True)
        b, _ = self.conv(b, f"{path}.branch2.1", inp=half, kernel=3, depthwise=True)
        b, _ = self.conv(b, f"{path}.branch2.2", inp=half, out=half, relu=True)
        return self.shuffle(self.concat(a, b), channels, branch)

    def downsample(self, blob: str, path: str, inp: int, out: int, steps: int) -> str:
        for k in range(steps):
            last = k == steps - 1
            blob, _ = self.separable(
                blob, f"{path}.{k}", inp=inp, out=out if last else inp, stride=2, relu=not last
            )
        return blob

    def module(self, xs: list[str], channels: list[int], path: str) -> tuple[list[str], int]:
        """An HRNet module -> its outputs and its shuffle units per branch."""
        outs: list[str] = []
        counts: list[int] = []
        for b, (x, c) in enumerate(zip(xs, channels, strict=True)):
            n = 0
            while self.has_unit(x):
                x = self.unit(x, c, b, f"{path}.branches.{b}.{n}")
                n += 1
            outs.append(x)
            counts.append(n)
        if len(set(counts)) != 1 or counts[0] < 1:
            raise not_understood(
                self.source, f"{path}: shuffle units per branch {counts}, expected equal and >= 1"
            )
        fused: list[str] = []
        y0 = self.add(outs[0], outs[0])
        for j in range(1, len(outs)):
            t, _ = self.conv(
                outs[j], f"{path}.fuse_layers.0.{j}.conv", inp=channels[j], out=channels[0]
            )
            y0 = self.add(y0, self.upsample_nearest(t, 2**j, 0))
        fused.append(self.relu(y0))
        for i in range(1, len(outs)):
            first = self.downsample(y0, f"{path}.fuse_layers.{i}.0", channels[0], channels[i], i)
            y = self.add(first, first)
            for j in range(1, len(outs)):
                if j == i:
                    t = outs[j]
                elif j > i:
                    t, _ = self.conv(
                        outs[j],
                        f"{path}.fuse_layers.{i}.{j}.conv",
                        inp=channels[j],
                        out=channels[i],
                    )
                    t = self.upsample_nearest(t, 2 ** (j - i), i)
                else:
                    t = self.downsample(
                        outs[j], f"{path}.fuse_layers.{i}.{j}", channels[j], channels[i], i - j
                    )
                y = self.add(y, t)
            fused.append(self.relu(y))
        return fused, counts[0]

    def head(self, xs: list[str], channels: list[int]) -> str:
        last: str | None = None
        n = len(xs)
        for k in range(n):
            b = n - 1 - k
            x = xs[b]
            if last is not None:
                x = self.add(x, self.upsample_bilinear(last, b))
            last, _ = self.separable(
                x,
                f"backbone.head.projects.{k}",
                inp=channels[b],
                out=channels[max(b - 1, 0)],
                stride=1,
                relu=True,
            )
        assert last is not None
        return last

    def walk(self) -> tuple[LiteHRNetConfig, int, tuple[int, int], str]:
        """-> backbone config, keypoints, input size (w, h), heatmap blob."""
        inputs = [layer for layer in self.graph.layers if layer.type == "Input"]
        if len(inputs) != 1 or len(inputs[0].outputs) != 1:
            raise not_understood(self.source, f"{len(inputs)} Input layers, expected one")
        (image,) = inputs[0].outputs
        self.used.add(inputs[0].index)
        x, stem_channels = self.stem(image)
        branches, channels = [x], [stem_channels]
        stages: list[list[int]] = []
        modules: list[int] = []
        blocks: set[int] = set()
        while self.has_new_branch(branches[-1], channels[-1]):
            s = len(stages)
            path = f"backbone.transitions.{s}"
            new: list[str] = []
            widths: list[int] = []
            for i, (blob, c) in enumerate(zip(branches, channels, strict=True)):
                if self.has_width_change(blob, c):
                    blob, c = self.separable(
                        blob, f"{path}.{i}.0", inp=c, out=None, stride=1, relu=True
                    )
                new.append(blob)
                widths.append(c)
            blob, c = self.separable(
                branches[-1],
                f"{path}.{len(branches)}.0",
                inp=channels[-1],
                out=None,
                stride=2,
                relu=True,
            )
            branches, channels = [*new, blob], [*widths, c]
            stages.append(list(channels))
            count = 0
            while True:
                branches, n = self.module(branches, channels, f"backbone.stages.{s}.{count}")
                blocks.add(n)
                count += 1
                if self.has_new_branch(branches[-1], channels[-1]) or not self.has_unit(
                    branches[0]
                ):
                    break
            modules.append(count)
        if not stages:
            raise not_understood(self.source, "no stage after the stem")
        final = stages[-1]
        for s, widths in enumerate(stages):
            if widths != final[: s + 2]:
                raise not_understood(
                    self.source,
                    f"stage {s} has branch widths {widths}, which are not {final[: s + 2]}: "
                    "every stage must keep the widths of the branches it shares",
                )
        if len(blocks) != 1:
            raise not_understood(
                self.source, f"modules have different shuffle units per branch {sorted(blocks)}"
            )
        features = self.head(branches, channels)
        heatmaps, spec = self.conv(features, "final_layer", inp=channels[0], out=None)
        if not spec.bias:
            raise not_understood(self.source, "the heatmap convolution has no bias")
        if self.readers.get(self.canon(heatmaps)):
            layer = self.readers[self.canon(heatmaps)][0]
            raise not_understood(
                self.source, f"{layer.describe()} reads the heatmaps; expected nothing after them"
            )
        assert self.size0 is not None  # the stem's shuffle sets it
        stride = LiteHRNetConfig().stride
        h, w = self.size0
        try:
            config = LiteHRNetConfig(
                stem_channels=stem_channels,
                branch_channels=tuple(final),
                modules_per_stage=tuple(modules),
                blocks_per_module=blocks.pop(),
            )
        except ConfigError as err:
            raise not_understood(self.source, str(err)) from None
        return config, spec.out_channels, (w * stride, h * stride), heatmaps
