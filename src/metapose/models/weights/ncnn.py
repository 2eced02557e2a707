"""ncnn models: reading ``.param`` / ``.bin`` files, and importing Lite-HRNet ones (PP-TinyPose).

:func:`read_ncnn` parses an ncnn model into an :class:`NcnnGraph`: the layers in file order, each
with its type, name, input and output blobs, parameters and weights (float32 numpy arrays,
convolution weights in PyTorch's ``(out, in / groups, kh, kw)`` layout). ncnn's format:

- ``.param`` is text: the magic number 7767517, then the layer and blob counts, then one layer a
  line: type, name, input count, output count, input blobs, output blobs and ``key=value``
  parameters; an array parameter ``id`` is written ``(-23300 - id)=n,v1,...,vn``.
- ``.bin`` holds the weights of the layers that have any, in layer order. A convolution's weight
  starts with a 4-byte tag (``0x01306B47`` float16, 0 float32, ``0x0002C056`` float32; any
  other non-zero tag a 256-entry float32 codebook followed by uint8 indices; int8 weights are
  not supported), each part padded to 4 bytes; its bias, when it has one, is float32 without a
  tag.

:func:`import_ncnn` reads a Lite-HRNet graph (PaddleDetection's ``wider_naive`` network as
PP-TinyPose releases it; see :mod:`metapose.models.backbones.lite_hrnet`) into a
:class:`~metapose.models.TopDownModel`. It walks the graph from its input along the data flow,
matching each convolution, shuffle, fusion and head operation that the native model computes,
so that a graph of another structure fails with the layer or blob where it departs. The walk
reads the configuration off the file (stem and branch widths, modules per stage, shuffle units
per module, keypoints; the input size from the spatial dimensions the channel shuffles' Reshape
layers bake in) and places every convolution by its position in the data flow. BatchNorm is
folded into ncnn's convolutions; the import puts the folded weight into the convolution and makes
the BatchNorm that follows it an identity carrying the folded bias (weight 1, bias the folded
bias, running mean 0, running variance ``1 - eps``), so the model computes exactly what the file
does in evaluation and trains like the original.

Nothing is written to disk.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metapose.config import CodecConfig, ConfigError, LiteHRNetConfig, ModelConfig
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.models.backbones.lite_hrnet import STEM_EXPAND_RATIO, ConvNorm
from metapose.models.weights.layouts import ImportReport, ShapeMismatch

log = logging.getLogger(__name__)

MAGIC = 7767517
ARRAY_KEY_BASE = -23300  # an array parameter's key is ARRAY_KEY_BASE - id
TAG_FLOAT16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FLOAT32_SCALED = 0x0002C056
CODEBOOK_SIZE = 256
WORD = 4  # .bin parts are padded to 4 bytes
FLOAT32 = np.dtype("<f4")
FLOAT16 = np.dtype("<f2")
DROP_DIM = -233  # Reshape: drop this dimension; Slice: an equal share
ACTIVATIONS = {0: "none", 1: "relu", 2: "leaky relu", 3: "clip", 4: "sigmoid", 5: "mish"}
RELU_ACTIVATION = 1
NEAREST, BILINEAR = 1, 2  # Interp resize types
ADD = 0  # BinaryOp op type
PERMUTE_SWAP_OUTER = 2  # Permute order type "WCH": (c, h, w) -> (h, c, w)
NUM_BATCHES_TRACKED = "num_batches_tracked"
RGB = 3

CONVOLUTIONS = ("Convolution", "ConvolutionDepthWise")
# Layer types read without weights: every other type is refused, since its weights' size in the
# .bin would be unknown.
WEIGHTLESS = (
    "Input",
    "Split",
    "Slice",
    "Concat",
    "Reshape",
    "Permute",
    "Interp",
    "BinaryOp",
    "ReLU",
)
SUPPORTED_LAYERS = (*CONVOLUTIONS, *WEIGHTLESS)

# PP-TinyPose's training codec (PaddleDetection's tinypose configs: UDP crop affine
# (TopDownAffine use_udp), targets at x / stride (ToHeatmapsTopDown_DARK), DARK decoding, sigma 1
# at 24 and 2 at 48 heatmap pixels wide); an ncnn file does not record it.
PP_TINYPOSE_CODEC = CodecConfig(sigma_at_48=2.0, dark=True, crop="udp", encoding="simplebaseline")

ParamValue = int | float | tuple[int | float, ...]
_INT = re.compile(r"^[+-]?\d+$")


# ----------------------------------------------------------------------------- the graph


@dataclass(frozen=True, eq=False)  # weights are arrays: compared by identity
class NcnnLayer:
    """One line of the ``.param`` file with its weights from the ``.bin``.

    ``params``: parameter id -> int, float or tuple (arrays, by their plain id). ``weights``:
    ``weight`` ``(out, in / groups, kh, kw)`` and ``bias`` ``(out,)`` of a convolution, float32.
    """

    index: int  # position in the file, 0-based
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[int, ParamValue]
    weights: Mapping[str, np.ndarray]

    def int_param(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if isinstance(value, tuple) or int(value) != value:
            raise ValueError(f"layer {self.name}: parameter {key} is {value!r}, not an integer")
        return int(value)

    def float_param(self, key: int, default: float) -> float:
        value = self.params.get(key, default)
        if isinstance(value, tuple):
            raise ValueError(f"layer {self.name}: parameter {key} is an array, not a number")
        return float(value)

    def array_param(self, key: int) -> tuple[int | float, ...]:
        value = self.params.get(key, ())
        return value if isinstance(value, tuple) else (value,)

    def describe(self) -> str:
        return f"layer {self.name!r} ({self.type}, line {self.index + 3})"


@dataclass(frozen=True)
class ConvSpec:
    """A Convolution / ConvolutionDepthWise layer's parameters, defaults resolved."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]  # (h, w)
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # (left, right, top, bottom)
    groups: int
    bias: bool
    activation: int  # ncnn activation_type: 0 none, 1 ReLU, ...
    activation_params: tuple[int | float, ...]
    weight_size: int

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        """``(h, w)`` padding when top == bottom and left == right, else None."""
        left, right, top, bottom = self.padding
        return (top, left) if left == right and top == bottom else None


def conv_spec(layer: NcnnLayer, source: str | Path) -> ConvSpec:
    """The convolution parameters of ``layer`` (of the file ``source``); DataError for what
    this module does not support."""
    if layer.type not in CONVOLUTIONS:
        raise DataError(source, f"{layer.describe()} is not a convolution")
    try:
        out = layer.int_param(0, 0)
        kw = layer.int_param(1, 0)
        kh = layer.int_param(11, kw)
        dw = layer.int_param(2, 1)
        dh = layer.int_param(12, dw)
        sw = layer.int_param(3, 1)
        sh = layer.int_param(13, sw)
        left = layer.int_param(4, 0)
        right = layer.int_param(15, left)
        top = layer.int_param(14, left)
        bottom = layer.int_param(16, top)
        bias = layer.int_param(5, 0) != 0
        size = layer.int_param(6, 0)
        groups = layer.int_param(7, 1) if layer.type == "ConvolutionDepthWise" else 1
        int8 = layer.int_param(8, 0)
        activation = layer.int_param(9, 0)
        dynamic = layer.int_param(19, 0)
        pad_value = layer.float_param(18, 0.0)
    except ValueError as err:
        raise DataError(source, str(err)) from None
    activation_params = layer.array_param(10)
    problems = []
    if min(out, kw, kh, dw, dh, sw, sh, groups, size) < 1:
        problems.append("non-positive sizes")
    if min(left, right, top, bottom) < 0:
        problems.append("automatic ('SAME') padding")
    if int8:
        problems.append("int8 quantisation")
    if dynamic:
        problems.append("dynamic weights")
    if pad_value != 0:
        problems.append(f"padding value {pad_value}")
    if activation not in (0, RELU_ACTIVATION):
        problems.append(f"activation {ACTIVATIONS.get(activation, activation)}")
    if problems:
        raise DataError(source, f"{layer.describe()}: unsupported {', '.join(problems)}")
    per_input = out // groups * kh * kw
    if out % groups or size % per_input:
        raise DataError(
            source,
            f"{layer.describe()}: weight_data_size {size} does not fit {out} outputs, "
            f"{groups} groups and a {kh}x{kw} kernel",
        )
    return ConvSpec(
        out_channels=out,
        in_channels=size // per_input,
        kernel=(kh, kw),
        stride=(sh, sw),
        dilation=(dh, dw),
        padding=(left, right, top, bottom),
        groups=groups,
        bias=bias,
        activation=activation,
        activation_params=activation_params,
        weight_size=size,
    )


@dataclass(frozen=True, eq=False)
class NcnnGraph:
    """An ncnn model: its layers in file order (a topological order of the data flow)."""

    param_path: Path
    bin_path: Path
    layers: tuple[NcnnLayer, ...]
    blob_count: int

    def producer(self, blob: str) -> NcnnLayer:
        for layer in self.layers:
            if blob in layer.outputs:
                return layer
        raise KeyError(blob)

    def consumers(self, blob: str) -> tuple[NcnnLayer, ...]:
        return tuple(layer for layer in self.layers if blob in layer.inputs)

    @property
    def input_blobs(self) -> tuple[str, ...]:
        return tuple(b for layer in self.layers if layer.type == "Input" for b in layer.outputs)

    @property
    def output_blobs(self) -> tuple[str, ...]:
        """Blobs no layer reads."""
        read = {b for layer in self.layers for b in layer.inputs}
        return tuple(b for layer in self.layers for b in layer.outputs if b not in read)

    def parameter_count(self) -> int:
        return sum(w.size for layer in self.layers for w in layer.weights.values())


# ----------------------------------------------------------------------------- reading


def _parse_value(text: str) -> int | float:
    return int(text) if _INT.match(text) else float(text)


def _parse_params(tokens: list[str]) -> dict[int, ParamValue]:
    params: dict[int, ParamValue] = {}
    for token in tokens:
        key_text, sep, value_text = token.partition("=")
        if not sep:
            raise ValueError(f"parameter {token!r} is not key=value")
        key = int(key_text)
        if key <= ARRAY_KEY_BASE:
            items = value_text.split(",")
            count = int(items[0])
            values = tuple(_parse_value(v) for v in items[1:])
            if count != len(values):
                raise ValueError(f"array parameter {token!r} announces {count} values")
            params[ARRAY_KEY_BASE - key] = values
        else:
            params[key] = _parse_value(value_text)
    return params


_Row = tuple[str, str, list[str], list[str], dict[int, ParamValue]]


def _parse_param_file(path: Path) -> tuple[list[_Row], int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable ncnn .param file ({err})") from None
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        first = lines[0].strip()[:20] if lines else "an empty file"
        raise DataError(path, f"not an ncnn .param file: magic {first!r}, expected {MAGIC}")
    counts = lines[1].split() if len(lines) > 1 else []
    if len(counts) != 2 or not all(_INT.match(c) for c in counts):
        raise DataError(path, "line 2 must hold the layer count and the blob count")
    layer_count, blob_count = (int(c) for c in counts)
    body = lines[2:]
    if len(body) != layer_count:
        raise DataError(path, f"announces {layer_count} layers but holds {len(body)}")
    rows: list[_Row] = []
    for number, line in enumerate(body, start=3):
        tokens = line.split()
        where = f"line {number}"
        if len(tokens) < 4 or not _INT.match(tokens[2]) or not _INT.match(tokens[3]):
            raise DataError(path, f"{where}: expected 'type name inputs outputs ...'")
        kind, name = tokens[0], tokens[1]
        n_in, n_out = int(tokens[2]), int(tokens[3])
        if len(tokens) < 4 + n_in + n_out:
            raise DataError(path, f"{where} (layer {name!r}): fewer blob names than announced")
        inputs = tokens[4 : 4 + n_in]
        outputs = tokens[4 + n_in : 4 + n_in + n_out]
        try:
            params = _parse_params(tokens[4 + n_in + n_out :])
        except ValueError as err:
            raise DataError(path, f"{where} (layer {name!r}): {err}") from None
        rows.append((kind, name, inputs, outputs, params))
    return rows, blob_count


class _BinReader:
    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.data = data
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise DataError(
                self.path,
                f"truncated: {what} needs {size} bytes at offset {self.offset}, but the file "
                f"ends at {len(self.data)}",
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def floats(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * 4, what), dtype=FLOAT32).astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        """ncnn's ModelBin::load(count, type 0): a tag, then float16, float32 or codebook."""
        (tag,) = struct.unpack("<I", self.take(WORD, f"{what} tag"))
        if tag == TAG_FLOAT16:
            raw = self.take(_aligned(count * 2), what)
            return np.frombuffer(raw[: count * 2], dtype=FLOAT16).astype(np.float32)
        if tag == TAG_INT8:
            raise DataError(self.path, f"{what}: int8 weights are not supported")
        if tag in (0, TAG_FLOAT32_SCALED):
            return self.floats(count, what)
        codebook = self.floats(CODEBOOK_SIZE, f"{what} codebook")
        index = np.frombuffer(self.take(_aligned(count), what)[:count], dtype=np.uint8)
        return codebook[index]


def _aligned(size: int) -> int:
    return (size + WORD - 1) // WORD * WORD


def read_ncnn(param_path: str | Path, bin_path: str | Path | None = None) -> NcnnGraph:
    """The graph and weights of an ncnn model; ``bin_path`` defaults to ``.bin`` beside it.

    Raises :class:`~metapose.errors.DataError` naming the file and the layer for a wrong magic
    number, a malformed line, a layer type it cannot read, dangling blobs, or a ``.bin`` that is
    shorter or longer than the ``.param`` announces.
    """
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    rows, blob_count = _parse_param_file(param_path)
    try:
        data = bin_path.read_bytes()
    except OSError as err:
        raise DataError(bin_path, f"cannot read the ncnn weights ({err})") from None
    reader = _BinReader(bin_path, data)
    produced: set[str] = set()
    layers: list[NcnnLayer] = []
    for index, (kind, name, inputs, outputs, params) in enumerate(rows):
        layer = NcnnLayer(index, kind, name, tuple(inputs), tuple(outputs), params, {})
        if kind not in SUPPORTED_LAYERS:
            raise DataError(
                param_path,
                f"{layer.describe()}: unsupported layer type {kind!r} (supported: "
                f"{', '.join(SUPPORTED_LAYERS)})",
            )
        for blob in inputs:
            if blob not in produced:
                raise DataError(
                    param_path, f"{layer.describe()} reads blob {blob!r} before any layer makes it"
                )
        for blob in outputs:
            if blob in produced:
                raise DataError(param_path, f"{layer.describe()} makes blob {blob!r} again")
            produced.add(blob)
        if kind in CONVOLUTIONS:
            layer = _with_conv_weights(layer, reader, param_path)
        layers.append(layer)
    if len(produced) != blob_count:
        raise DataError(
            param_path, f"announces {blob_count} blobs but its layers make {len(produced)}"
        )
    if reader.offset != len(data):
        raise DataError(
            bin_path,
            f"{len(data) - reader.offset} bytes left after the last layer's weights "
            f"(offset {reader.offset} of {len(data)}): the .bin does not match {param_path.name}",
        )
    return NcnnGraph(param_path, bin_path, tuple(layers), blob_count)


def _with_conv_weights(layer: NcnnLayer, reader: _BinReader, source: Path) -> NcnnLayer:
    spec = conv_spec(layer, source)
    what = f"{layer.describe()} weight"
    weight = reader.tagged(spec.weight_size, what)
    shape = (spec.out_channels, spec.in_channels // spec.groups, *spec.kernel)
    weights = {"weight": weight.reshape(shape)}
    if spec.bias:
        weights["bias"] = reader.floats(spec.out_channels, f"{layer.describe()} bias")
    return NcnnLayer(
        layer.index, layer.type, layer.name, layer.inputs, layer.outputs, layer.params, weights
    )


# ----------------------------------------------------------------------------- matching


def _not_understood(source: Path, message: str) -> DataError:
    return DataError(source, f"not a Lite-HRNet graph this importer understands: {message}")


class _LiteHRNetMatcher:
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
                    raise _not_understood(self.source, f"{layer.describe()} has several inputs")
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
            raise _not_understood(
                self.source,
                f"expected {what} reading blob {blob!r} (made by {made_by}); "
                f"found {', '.join(found) if found else 'no unused reader'}",
            )
        self.used.add(layer.index)
        return layer

    def out(self, layer: NcnnLayer) -> str:
        if len(layer.outputs) != 1:
            raise _not_understood(self.source, f"{layer.describe()} has several outputs")
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
                raise _not_understood(
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
            raise _not_understood(
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
            raise _not_understood(self.source, f"{len(inputs)} Input layers, expected one")
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
            raise _not_understood(self.source, "no stage after the stem")
        final = stages[-1]
        for s, widths in enumerate(stages):
            if widths != final[: s + 2]:
                raise _not_understood(
                    self.source,
                    f"stage {s} has branch widths {widths}, which are not {final[: s + 2]}: "
                    "every stage must keep the widths of the branches it shares",
                )
        if len(blocks) != 1:
            raise _not_understood(
                self.source, f"modules have different shuffle units per branch {sorted(blocks)}"
            )
        features = self.head(branches, channels)
        heatmaps, spec = self.conv(features, "final_layer", inp=channels[0], out=None)
        if not spec.bias:
            raise _not_understood(self.source, "the heatmap convolution has no bias")
        if self.readers.get(self.canon(heatmaps)):
            layer = self.readers[self.canon(heatmaps)][0]
            raise _not_understood(
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
            raise _not_understood(self.source, str(err)) from None
        return config, spec.out_channels, (w * stride, h * stride), heatmaps


# ----------------------------------------------------------------------------- import


def _place(
    model: TopDownModel, path: str, layer: NcnnLayer
) -> tuple[list[str], ShapeMismatch | None]:
    """Copy ``layer``'s weights into the module at ``path`` -> the state-dict keys filled."""
    module = model.get_submodule(path)
    weight = torch.from_numpy(np.ascontiguousarray(layer.weights["weight"]))
    bias_array = layer.weights.get("bias")
    conv = module.conv if isinstance(module, ConvNorm) else module
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{path} is a {type(module).__name__}, not a convolution")
    if tuple(conv.weight.shape) != tuple(weight.shape):
        return [], ShapeMismatch(
            f"{path}.weight" if conv is module else f"{path}.conv.weight",
            tuple(weight.shape),
            tuple(conv.weight.shape),
        )
    bias = (
        torch.from_numpy(bias_array.copy())
        if bias_array is not None
        else torch.zeros(weight.shape[0])
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if isinstance(module, ConvNorm):
            bn = module.bn
            assert bn.running_mean is not None and bn.running_var is not None
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            return [f"{path}.conv.weight"] + [
                f"{path}.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var")
            ], None
        if conv.bias is None:
            raise TypeError(f"{path} has no bias for the file's")
        conv.bias.copy_(bias)
    return [f"{path}.weight", f"{path}.bias"], None


def import_ncnn(
    param_path: str | Path, bin_path: str | Path | None = None, *, init_seed: int = 0
) -> tuple[TopDownModel, ImportReport]:
    """A TopDownModel (Lite-HRNet, no deconvolutions) computing the ncnn model's heatmaps.

    The configuration comes from the file (see the module doc); the codec is PP-TinyPose's
    (UDP, DARK) and the normalisation ImageNet's, which ncnn files do not record. Tensors the
    file does not fill keep TopDownModel's initialisation under ``init_seed`` and are listed in
    the report's ``missing``; file layers outside the data flow to the heatmaps are listed in
    ``unexpected``. Raises :class:`~metapose.errors.DataError` for unreadable files and for
    graphs that are not a Lite-HRNet this importer understands.
    """
    graph = read_ncnn(param_path, bin_path)
    matcher = _LiteHRNetMatcher(graph)
    try:
        backbone, keypoints, input_size, _ = matcher.walk()
    except DataError:
        raise
    except ValueError as err:  # a parameter of the wrong kind
        raise _not_understood(graph.param_path, str(err)) from None
    try:
        config = ModelConfig(
            backbone=backbone,
            num_keypoints=keypoints,
            input_size=input_size,
            deconv_channels=(),
            codec=PP_TINYPOSE_CODEC,
        )
    except ConfigError as err:
        raise DataError(graph.param_path, f"the graph does not fit a TopDownModel: {err}") from None
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        model = TopDownModel(config)
    model.eval()
    loaded: list[str] = []
    mismatches: list[ShapeMismatch] = []
    for path, layer in matcher.placed:
        keys, mismatch = _place(model, path, layer)
        loaded += keys
        if mismatch is not None:
            mismatches.append(mismatch)
    filled = set(loaded)
    missing = tuple(
        k for k in model.state_dict() if k not in filled and not k.endswith(NUM_BATCHES_TRACKED)
    )
    unexpected = tuple(
        f"{layer.name} ({layer.type})"
        for layer in graph.layers
        if layer.index not in matcher.used and layer.type != "Split"
    )
    report = ImportReport(
        source=graph.param_path,
        format="ncnn",
        config=config,
        loaded=tuple(sorted(filled)),
        missing=missing,
        unexpected=unexpected,
        shape_mismatches=tuple(mismatches),
        fresh=(),
        dropped=(),
    )
    log.info(
        "ncnn %s: Lite-HRNet %s, %d keypoints, input %dx%d (WxH): %d tensors from %d "
        "convolutions; %d missing, %d unexpected",
        graph.param_path.name,
        backbone,
        keypoints,
        *input_size,
        len(filled),
        len(matcher.placed),
        len(missing),
        len(unexpected),
    )
    return model, report
