"""Reading ncnn models: the ``.param`` text and ``.bin`` weights into an :class:`NcnnGraph`.

The format is described in :mod:`metapose.models.weights.ncnn`, which imports the graphs.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metapose.config import CodecConfig
from metapose.errors import DataError
from metapose.files import show

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
            raise ValueError(f"layer {self.name}: parameter {key} is {show(value)}, not an integer")
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
        return f"layer {show(self.name)} ({self.type}, line {self.index + 3})"


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
            raise ValueError(f"parameter {show(token)} is not key=value")
        key = int(key_text)
        if key <= ARRAY_KEY_BASE:
            items = value_text.split(",")
            count = int(items[0])
            values = tuple(_parse_value(v) for v in items[1:])
            if count != len(values):
                raise ValueError(f"array parameter {show(token)} announces {count} values")
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
        raise DataError(path, f"not an ncnn .param file: magic {show(first)}, expected {MAGIC}")
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
            raise DataError(path, f"{where} (layer {show(name)}): fewer blob names than announced")
        inputs = tokens[4 : 4 + n_in]
        outputs = tokens[4 + n_in : 4 + n_in + n_out]
        try:
            params = _parse_params(tokens[4 + n_in + n_out :])
        except ValueError as err:
            raise DataError(path, f"{where} (layer {show(name)}): {err}") from None
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
                f"{layer.describe()}: unsupported layer type {show(kind)} (supported: "
                f"{', '.join(SUPPORTED_LAYERS)})",
            )
        for blob in inputs:
            if blob not in produced:
                raise DataError(
                    param_path,
                    f"{layer.describe()} reads blob {show(blob)} before any layer makes it",
                )
        for blob in outputs:
            if blob in produced:
                raise DataError(param_path, f"{layer.describe()} makes blob {show(blob)} again")
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
