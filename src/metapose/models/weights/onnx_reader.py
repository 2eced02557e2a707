"""Reading an ONNX graph as the chain of layers :mod:`metapose.models.weights.onnx_graph` imports.

Each layer is a ``Conv`` or ``ConvTranspose`` optionally followed by a ``BatchNormalization`` and
an activation, with residual ``Add`` nodes between them; unsupported operators are refused here.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from metapose.errors import DataError, cut
from metapose.files import show
from metapose.models.backbones.mobilenet_v2 import (
    LastActivation,
)

log = logging.getLogger(__name__)


FORMAT = "onnx"
LAYER_OPS = frozenset({"Conv", "ConvTranspose"})
ACTIVATION_OPS = frozenset({"Clip", "Relu"})
ALIAS_OPS = frozenset({"Identity", "Dropout", "Cast"})
SUPPORTED_OPS = frozenset(
    {*LAYER_OPS, *ACTIVATION_OPS, *ALIAS_OPS, "BatchNormalization", "Add", "Constant"}
)
ONNX_DOMAINS = ("", "ai.onnx")
RELU6_MAX = 6.0
TORCH_BN_EPS = 1e-5
EPS_REL_TOL = 1e-6  # float32 rounding of 1e-5 is 2.5e-8 relative
CONV_RANK = 4
INPUT_RANK = 4
RGB = 3
STEM_KERNEL = 3
WIDTH_DECIMALS = 6  # the width multiplier is reported with at most this many decimals


# ------------------------------------------------------------------------------ reading


# A tensor's place in the chain: the graph input, the result of layer k, or the sum a residual
# Add made of layer k's result and something else.
Desc = tuple[str, int]
GRAPH_INPUT: Desc = ("input", -1)


@dataclass
class _BatchNorm:
    node: str
    scale: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    epsilon: float


@dataclass
class Layer:
    """A convolution node and what follows it: BatchNorm, activation."""

    node: str
    transposed: bool
    weight_name: str
    weight: np.ndarray
    bias_name: str | None
    bias: np.ndarray | None
    attrs: dict[str, Any]
    bn: _BatchNorm | None = None
    activation: LastActivation | None = None
    input_desc: Desc = ("input", -1)
    tail: str = ""  # the tensor holding the layer's result so far

    @property
    def out_channels(self) -> int:
        w = self.weight.shape
        return int(w[1] * self.attrs.get("group", 1)) if self.transposed else int(w[0])

    @property
    def in_channels(self) -> int:
        w = self.weight.shape
        return int(w[0]) if self.transposed else int(w[1] * self.attrs.get("group", 1))


@dataclass
class Graph:
    source: Path
    input_name: str
    input_shape: tuple[int | None, ...]
    output_name: str
    layers: list[Layer] = field(default_factory=list)
    adds: dict[int, tuple[str, Desc]] = field(default_factory=dict)  # layer -> (node, skip)
    descs: dict[str, Desc] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # initializers placed as weights
    structural: set[str] = field(default_factory=set)  # initializers consumed as structure
    initializer_names: tuple[str, ...] = ()
    output_desc: Desc | None = None  # None: the output is not a layer's result

    def describe(self, desc: Desc) -> str:
        kind, k = desc
        if kind == "input":
            return f"the graph input {show(self.input_name)}"
        node = self.layers[k].node
        if kind == "layer":
            return f"the result of {show(node)}"
        return f"the residual sum after {show(node)}"


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.op_type})"


def _load_proto(source: Path) -> onnx.ModelProto:
    if not source.is_file():
        raise DataError(source, "ONNX file not found")
    try:
        proto = onnx.load(str(source))
    except onnx.checker.ValidationError as err:  # e.g. external data outside the model's folder
        raise DataError(source, f"refused: {cut(str(err), 200)}") from None
    except (DecodeError, OSError, ValueError, RuntimeError) as err:
        why = cut(str(err), 200)
        raise DataError(source, f"not an ONNX file (cannot parse it: {why})") from None
    if not proto.graph.node:
        raise DataError(source, "not an ONNX model (its graph has no nodes)")
    return proto


class _Reader:
    """Reads the graph's nodes, in their (topological) order, into a chain of layers."""

    def __init__(self, proto: onnx.ModelProto, source: Path) -> None:
        self.source = source
        self.graph = proto.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.arrays: dict[str, np.ndarray] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        self.consumers: Counter[str] = Counter(
            name for node in self.graph.node for name in node.input if name
        )
        for out in self.graph.output:
            self.consumers[out.name] += 1
        self.tails: dict[str, int] = {}  # tensor -> layer whose current result it is
        inputs = [i for i in self.graph.input if i.name not in self.initializers]
        if len(inputs) != 1 or len(self.graph.output) != 1:
            raise self.fail(
                f"expected one image input and one heatmap output, got {len(inputs)} inputs "
                f"and {len(self.graph.output)} outputs"
            )
        dims = inputs[0].type.tensor_type.shape.dim
        self.g = Graph(
            source,
            inputs[0].name,
            tuple(d.dim_value if d.HasField("dim_value") else None for d in dims),
            self.graph.output[0].name,
            initializer_names=tuple(self.initializers),
        )
        self.g.descs[inputs[0].name] = GRAPH_INPUT

    def fail(self, message: str) -> DataError:
        return DataError(self.source, message)

    def resolve(self, name: str) -> str:
        seen = set()
        while name in self.alias and name not in seen:
            seen.add(name)
            name = self.alias[name]
        return name

    def array(self, name: str, node: str, *, structural: bool = False) -> np.ndarray:
        """The value of a constant input (initializer or Constant output), float32."""
        name = self.resolve(name)
        if name in self.constants:
            return self.constants[name]
        tensor = self.initializers.get(name)
        if tensor is None:
            raise self.fail(
                f"node {show(node)} reads {show(name)}, which is neither a weight nor constant"
            )
        if name not in self.arrays:
            try:
                value = numpy_helper.to_array(tensor)
            except (ValueError, TypeError, OSError) as err:
                raise self.fail(f"tensor {show(name)} cannot be read ({err})") from None
            if not np.issubdtype(value.dtype, np.floating):
                raise self.fail(f"tensor {show(name)} holds {value.dtype}, expected floating point")
            self.arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
        (self.g.structural if structural else self.g.used).add(name)
        return self.arrays[name]

    def read(self) -> Graph:
        names = [_node_name(n, i) for i, n in enumerate(self.graph.node)]
        for node, name in zip(self.graph.node, names, strict=True):
            self._read_node(node, name)
        output = self.resolve(self.g.output_name)
        self.g.output_desc = ("layer", self.tails[output]) if output in self.tails else None
        return self.g

    def _attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _desc(self, tensor: str, node: str) -> Desc:
        tensor = self.resolve(tensor)
        if tensor in self.tails:
            return ("layer", self.tails[tensor])
        if tensor in self.g.descs:
            return self.g.descs[tensor]
        raise self.fail(
            f"node {show(node)} reads {show(tensor)}, which is not the result of a layer "
            "(the graph is not a chain of convolution layers with residual additions)"
        )

    def _follow(self, node: onnx.NodeProto, name: str, what: str) -> Layer:
        """The layer whose current result ``node`` reads, to which it appends ``what``."""
        tensor = self.resolve(node.input[0]) if node.input else ""
        k = self.tails.get(tensor)
        if k is None:
            raise self.fail(f"node {show(name)} ({node.op_type}) does not follow a convolution")
        layer = self.g.layers[k]
        if self.consumers[tensor] != 1:
            raise self.fail(
                f"node {show(name)}: the result of {show(layer.node)} feeds other nodes "
                f"besides this {what}; a layer is conv -> BatchNorm -> activation"
            )
        del self.tails[tensor]
        layer.tail = node.output[0]
        self.tails[node.output[0]] = k
        return layer

    def _read_node(self, node: onnx.NodeProto, name: str) -> None:
        op = node.op_type
        attrs = self._attrs(node)
        if op == "Constant":
            if "value" not in attrs:
                raise self.fail(
                    f"node {show(name)}: only tensor-valued Constant nodes are supported"
                )
            self.constants[node.output[0]] = np.asarray(
                numpy_helper.to_array(attrs["value"]), dtype=np.float32
            )
        elif op in ALIAS_OPS:
            if op == "Cast" and attrs.get("to") != onnx.TensorProto.FLOAT:
                raise self.fail(f"node {show(name)}: only Cast to float32 is supported")
            for extra in node.input[1:]:  # Dropout's ratio and training mode
                if extra and self.resolve(extra) in self.initializers:
                    self.g.structural.add(self.resolve(extra))
            if len(node.output) > 1 and any(self.consumers[o] for o in node.output[1:] if o):
                raise self.fail(f"node {show(name)}: its mask output is used")
            self.alias[node.output[0]] = node.input[0]
        elif op in LAYER_OPS:
            self._read_layer(node, name, attrs)
        elif op == "BatchNormalization":
            self._read_batchnorm(node, name, attrs)
        elif op in ACTIVATION_OPS:
            self._read_activation(node, name, attrs)
        else:  # Add
            self._read_add(node, name)

    def _read_layer(self, node: onnx.NodeProto, name: str, attrs: dict[str, Any]) -> None:
        if len(node.input) < 2:
            raise self.fail(f"node {show(name)} has no weight input")
        desc = self._desc(node.input[0], name)
        weight = self.array(node.input[1], name)
        if weight.ndim != CONV_RANK:
            raise self.fail(
                f"node {show(name)}: weight of shape {weight.shape}, expected a 2-D conv"
            )
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = None if bias_name is None else self.array(bias_name, name)
        layer = Layer(
            node=name,
            transposed=node.op_type == "ConvTranspose",
            weight_name=self.resolve(node.input[1]),
            weight=weight,
            bias_name=None if bias_name is None else self.resolve(bias_name),
            bias=bias,
            attrs=attrs,
            input_desc=desc,
            tail=node.output[0],
        )
        if bias is not None and bias.shape != (layer.out_channels,):
            raise self.fail(
                f"node {show(name)}: bias of shape {bias.shape}, expected one per channel"
            )
        self.g.layers.append(layer)
        self.tails[node.output[0]] = len(self.g.layers) - 1

    def _read_batchnorm(self, node: onnx.NodeProto, name: str, attrs: dict[str, Any]) -> None:
        if len(node.input) != 5:
            raise self.fail(f"node {show(name)}: BatchNormalization needs 5 inputs")
        if len(node.output) > 1 and any(self.consumers[o] for o in node.output[1:] if o):
            raise self.fail(f"node {show(name)}: training-mode BatchNormalization is not supported")
        layer = self._follow(node, name, "BatchNormalization")
        if layer.bn is not None or layer.activation is not None:
            raise self.fail(
                f"node {show(name)}: a second BatchNormalization after {show(layer.node)}"
            )
        params = [self.array(i, name) for i in node.input[1:]]
        for tensor, value in zip(node.input[1:], params, strict=True):
            if value.shape != (layer.out_channels,):
                raise self.fail(
                    f"node {show(name)}: {show(tensor)} has shape {value.shape}, expected "
                    f"({layer.out_channels},) (per-channel statistics)"
                )
        scale, bias, mean, var = params
        layer.bn = _BatchNorm(
            name,
            scale,
            bias,
            mean,
            var,
            float(attrs.get("epsilon", TORCH_BN_EPS)),
        )

    def _clip_bound(self, node: onnx.NodeProto, name: str, attrs: dict[str, Any], i: int) -> float:
        key = ("min", "max")[i - 1]
        if len(node.input) > i and node.input[i]:
            value = self.array(node.input[i], name, structural=True)
            if value.size != 1:
                raise self.fail(
                    f"node {show(name)}: Clip bound {show(node.input[i])} is not a scalar"
                )
            return float(value.reshape(()))
        return float(attrs.get(key, -math.inf if i == 1 else math.inf))

    def _read_activation(self, node: onnx.NodeProto, name: str, attrs: dict[str, Any]) -> None:
        kind: LastActivation = "relu"
        if node.op_type == "Clip":
            low, high = (
                self._clip_bound(node, name, attrs, 1),
                self._clip_bound(node, name, attrs, 2),
            )
            if low == 0 and high == RELU6_MAX:
                kind = "relu6"
            elif not (low == 0 and high == math.inf):
                raise self.fail(
                    f"node {show(name)}: Clip to [{low}, {high}]; only ReLU6 ([0, 6]) and ReLU "
                    "([0, inf)) are understood"
                )
        layer = self._follow(node, name, node.op_type)
        if layer.activation is not None:
            raise self.fail(f"node {show(name)}: a second activation after {show(layer.node)}")
        layer.activation = kind

    def _read_add(self, node: onnx.NodeProto, name: str) -> None:
        if len(node.input) != 2:
            raise self.fail(f"node {show(name)}: Add needs two inputs")
        a, b = (self._desc(i, name) for i in node.input)
        # The residual's main path is the later of the two layer results.
        main, skip = (a, b) if a[0] == "layer" and (b[0] != "layer" or a[1] > b[1]) else (b, a)
        if main[0] != "layer":
            raise self.fail(f"node {show(name)}: neither input of this Add is a layer's result")
        k = main[1]
        if k in self.g.adds:
            raise self.fail(f"node {show(name)}: a second Add after {show(self.g.layers[k].node)}")
        self.tails.pop(self.resolve(node.input[0 if main == a else 1]), None)
        self.g.adds[k] = (name, skip)
        self.g.descs[node.output[0]] = ("add", k)


def _check_ops(proto: onnx.ModelProto, source: Path) -> None:
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in SUPPORTED_OPS or node.domain not in ONNX_DOMAINS:
            op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            raise DataError(
                source,
                f"node {show(_node_name(node, i))}: operator {show(op)} is not supported "
                f"(supported: {', '.join(sorted(SUPPORTED_OPS))})",
            )


def read_graph(source: Path) -> Graph:
    """The graph of ``source`` as a chain of layers (checks every operator first)."""
    proto = _load_proto(source)
    _check_ops(proto, source)
    graph = _Reader(proto, source).read()
    if not graph.layers:
        raise DataError(source, "the graph has no convolution")
    return graph
