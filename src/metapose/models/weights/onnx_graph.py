"""Importing a MobileNetV2 SimpleBaseline from an ONNX graph, by graph order.

An ONNX file carries no PyTorch names, so its weights are placed by structure: the graph is read
as a chain of *layers*, each a ``Conv`` or ``ConvTranspose`` optionally followed by a
``BatchNormalization`` and a ``Clip`` (ReLU6) or ``Relu``, with residual ``Add`` nodes between
them; the architecture is inferred from the file (see :func:`import_onnx`); a
:class:`~metapose.models.TopDownModel` is built from it and its layers, in forward order, are
matched one to one with the graph's. Every node's attributes (kernel, stride, padding, groups,
dilation, output padding), every weight's shape, every activation and every residual connection
must agree, so that the imported model computes what the graph computes; anything else is a
:class:`~metapose.errors.DataError` naming the file and the node. Nothing is written to disk.

Supported operators: ``Conv``, ``ConvTranspose``, ``BatchNormalization``, ``Clip`` (bounds 0
and 6, or 0 and none: ReLU6 and ReLU, as attributes before opset 11 and as inputs from it),
``Relu``, ``Add``, and the trivial ``Identity``, ``Dropout`` (inference: identity), ``Cast`` (to
float32) and ``Constant``. That covers Ultralight-Nano-SimplePose (opset 8, exported from
MXNet/Gluon; licence: none, so it is only ever read from where the user keeps it) and metapose's
own exports of MobileNetV2 models (:mod:`metapose.inference.export`).

Placement rules, all exact in inference:

- ``Conv``/``ConvTranspose`` weights keep their layout (ONNX and PyTorch agree on
  ``(out, in / groups, kh, kw)`` and ``(in, out / groups, kh, kw)``).
- A convolution with a bias where the model has a bias-free convolution followed by BatchNorm:
  ``BN(conv(x) + b)`` equals ``BN'(conv(x))`` with ``running_mean' = running_mean - b``, so the
  bias is folded into the BatchNorm's running mean.
- A convolution with no BatchNorm after it where the model has one (an export with BatchNorm
  folded into the convolutions): the BatchNorm becomes the identity plus the bias (weight 1,
  bias ``b`` or 0, running mean 0, running variance ``1 - eps``), and counts as loaded.
- A model convolution with a bias (the 1x1 heatmap layer) whose node has none: zero, ONNX's
  default for the optional bias input; it counts as loaded.
- BatchNorm's epsilon is the file's; where it differs from PyTorch's 1e-5 (beyond float32
  rounding) the module's ``eps`` is set to it. ``momentum`` and opset 8's ``spatial`` only
  matter in training and are ignored (the statistics must be per channel).

The returned :class:`~metapose.models.weights.layouts.ImportReport` lists every model tensor
filled (``loaded``) and not filled (``missing``), every initializer placed nowhere
(``unexpected``) and the initializers consumed as graph structure rather than weights
(``dropped``: Clip bounds, Dropout ratios).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metapose.config import ConfigError, MobileNetV2Config, ModelConfig
from metapose.errors import DataError
from metapose.files import show
from metapose.models import TopDownModel, seeded_model
from metapose.models.backbones.mobilenet_v2 import (
    STAGES,
    STEM_CHANNELS,
    InvertedResidual,
    LastActivation,
    block_specs,
    scaled_channels,
)
from metapose.models.weights.layouts import BN_COUNTER, ImportReport
from metapose.models.weights.onnx_reader import (
    EPS_REL_TOL,
    FORMAT,
    GRAPH_INPUT,
    INPUT_RANK,
    RGB,
    STEM_KERNEL,
    WIDTH_DECIMALS,
    Desc,
    Graph,
    Layer,
    read_graph,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ config inference


def _fit_width(pairs: list[tuple[int, int]]) -> float | None:
    """The simplest width multiplier ``w`` with ``scaled_channels(base, w) == actual`` for all."""
    low = max((actual / base for base, actual in pairs if actual > 1), default=0.0)
    high = min((actual + 1) / base for base, actual in pairs)
    if low >= high:
        return None
    scales = [10.0**d for d in range(1, WIDTH_DECIMALS + 1)]
    candidates = [math.ceil(low * scale - 1e-9) / scale for scale in scales]
    for width in [*candidates, (low + high) / 2]:
        if width > 0 and all(scaled_channels(base, width) == actual for base, actual in pairs):
            return width
    return None


def _backbone_layer_count() -> int:
    _, blocks = block_specs(1.0)
    return 1 + sum(2 if b.expansion == 1 else 3 for b in blocks) + 1


def _infer_config(
    layers: list[Layer],
    input_shape: tuple[int | None, ...],
    source: Path,
    *,
    input_size: tuple[int, int] | None = None,
) -> tuple[ModelConfig, LastActivation]:
    """The ModelConfig of a graph read as layers, and the backbone's closing activation.

    Width multiplier: the simplest (fewest decimals) value that reproduces the stem's and every
    block's output channels under :func:`~metapose.models.backbones.mobilenet_v2.
    scaled_channels`. ``last_channels``: the closing 1x1 convolution's. Head: depthwise
    transposed convolutions each followed by a 1x1 convolution are ``deconv_separable``; the
    channels, kernel and keypoints come from the weights. Input size: the graph input's static
    height and width, else ``input_size``. Normalisation and codec: metapose's defaults
    (ImageNet mean/std, SimpleBaseline encoding), which nothing in a graph records.
    """
    n_backbone = _backbone_layer_count()
    if len(layers) < n_backbone + 1:
        raise DataError(
            source,
            f"the graph has {len(layers)} convolutions; a MobileNetV2 SimpleBaseline has at "
            f"least {n_backbone + 1} (not a MobileNetV2 SimpleBaseline this importer understands)",
        )
    stem = layers[0]
    if stem.transposed or stem.weight.shape[1:] != (RGB, STEM_KERNEL, STEM_KERNEL):
        raise DataError(
            source,
            f"node {show(stem.node)}: weight {stem.weight.shape}, expected MobileNetV2's 3x3 stem "
            "over RGB (not a MobileNetV2 SimpleBaseline this importer understands)",
        )
    pairs = [(STEM_CHANNELS, stem.out_channels)]
    _, blocks = block_specs(1.0)
    k = 0
    for spec in blocks:
        k += 2 if spec.expansion == 1 else 3
        pairs.append((spec.out_channels, layers[k].out_channels))
    width = _fit_width(pairs)
    if width is None:
        found = [a for _, a in pairs]
        raise DataError(
            source,
            f"stem and block channels {found} fit no MobileNetV2 width multiplier (base "
            f"{[STEM_CHANNELS] + [s.channels for s in STAGES for _ in range(s.repeats)]})",
        )
    last = layers[n_backbone - 1]
    if last.activation is None:
        raise DataError(
            source, f"node {show(last.node)}: MobileNetV2's closing conv has no activation"
        )
    head, final = layers[n_backbone:-1], layers[-1]
    channels: tuple[int, ...] = ()
    kernel = ModelConfig().deconv_kernel
    separable = False
    if head:
        first = head[0]
        kernel = int(first.weight.shape[2])
        separable = first.transposed and first.attrs.get("group", 1) == first.in_channels > 1
        if separable:
            channels = tuple(layer.out_channels for layer in head[1::2])
        else:
            channels = tuple(layer.out_channels for layer in head)
    h, w = input_shape[2:4] if len(input_shape) == INPUT_RANK else (None, None)
    if w is not None and h is not None:
        if input_size is not None and input_size != (w, h):
            raise DataError(
                source, f"the graph's input is {w}x{h} (WxH), not {input_size[0]}x{input_size[1]}"
            )
        size = (w, h)
    elif input_size is not None:
        size = input_size
    else:
        raise DataError(source, "the graph's input height and width are dynamic; pass input_size")
    backbone = MobileNetV2Config(
        width_mult=width, last_channels=last.out_channels, last_activation=last.activation
    )
    try:
        config = ModelConfig(
            backbone=backbone,
            num_keypoints=final.out_channels,
            input_size=size,
            deconv_channels=channels,
            deconv_kernel=kernel,
            deconv_separable=separable,
        )
    except ConfigError as err:
        raise DataError(
            source, f"not a MobileNetV2 SimpleBaseline this importer understands: {err}"
        ) from None
    return config, last.activation


# ------------------------------------------------------------------------------ the model's side


@dataclass
class _ModelLayer:
    name: str  # TopDownModel module name
    conv: nn.Conv2d | nn.ConvTranspose2d
    bn_name: str | None = None
    bn: nn.BatchNorm2d | None = None
    activation: LastActivation | None = None


def _model_layers(model: TopDownModel) -> tuple[list[_ModelLayer], dict[int, int]]:
    """The model's layers in forward order, and its residuals (last layer -> first layer).

    Forward order is registration order for every module here (``nn.Sequential`` throughout,
    backbone before head).
    """
    layers: list[_ModelLayer] = []
    residuals: dict[int, int] = {}
    blocks: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            layers.append(_ModelLayer(name, module))
        elif isinstance(module, nn.BatchNorm2d):
            layers[-1].bn_name, layers[-1].bn = name, module
        elif isinstance(module, nn.ReLU6):
            layers[-1].activation = "relu6"
        elif isinstance(module, nn.ReLU):
            layers[-1].activation = "relu"
        elif isinstance(module, InvertedResidual) and module.use_res_connect:
            blocks.append(name)
    for block in blocks:
        inside = [k for k, layer in enumerate(layers) if layer.name.startswith(block + ".")]
        residuals[max(inside)] = min(inside)
    return layers, residuals


def _expected_inputs(n: int, residuals: dict[int, int]) -> list[Desc]:
    """What each layer reads: the graph input, the previous layer's result or a residual sum."""
    expected: list[Desc] = [GRAPH_INPUT]
    for k in range(1, n):
        expected.append(("add", k - 1) if k - 1 in residuals else ("layer", k - 1))
    return expected


def _pair(value: Any, default: int, count: int = 2) -> tuple[int, ...]:
    if value is None:
        return (default,) * count
    return tuple(int(v) for v in value)


def _check_layer(graph: Graph, layer: Layer, mine: _ModelLayer, expected: Desc) -> None:
    """Raise unless the graph's layer computes what the model's layer does."""
    conv, attrs = mine.conv, layer.attrs

    def fail(what: str) -> DataError:
        return DataError(
            graph.source,
            f"node {show(layer.node)}: {what}, where the MobileNetV2 SimpleBaseline inferred from "
            f"the graph has {mine.name} (not a graph this importer understands)",
        )

    transposed = isinstance(conv, nn.ConvTranspose2d)
    if layer.transposed != transposed:
        kind = "ConvTranspose" if layer.transposed else "Conv"
        raise fail(f"a {kind}")
    if layer.weight.shape != tuple(conv.weight.shape):
        raise fail(f"weight {show(layer.weight_name)} of shape {layer.weight.shape}")
    pads = _pair(attrs.get("pads"), 0, 4)
    checks: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = [
        ("strides", _pair(attrs.get("strides"), 1), tuple(conv.stride)),
        ("dilations", _pair(attrs.get("dilations"), 1), tuple(conv.dilation)),
        ("group", (int(attrs.get("group", 1)),), (conv.groups,)),
        ("pads", pads, (*conv.padding, *conv.padding)),
    ]
    if "kernel_shape" in attrs:
        checks.append(("kernel_shape", _pair(attrs["kernel_shape"], 1), tuple(conv.kernel_size)))
    if isinstance(conv, nn.ConvTranspose2d):
        checks.append(
            ("output_padding", _pair(attrs.get("output_padding"), 0), tuple(conv.output_padding))
        )
        if "output_shape" in attrs:
            checks.append(("output_shape", (1,), (0,)))
    for key, theirs, ours in checks:
        if theirs != ours:
            raise fail(f"{key} {list(theirs)} (expected {list(ours)})")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET"):
        raise fail(f"auto_pad {show(auto_pad)} (expected explicit pads)")
    if layer.bn is not None and mine.bn is None:
        raise fail(f"BatchNormalization {show(layer.bn.node)} after it")
    if layer.bias is not None and conv.bias is None and mine.bn is None:
        raise fail(f"a bias {show(layer.bias_name)}")
    if layer.activation != mine.activation:
        raise fail(
            f"activation {layer.activation or 'none'} (expected {mine.activation or 'none'})"
        )
    if layer.input_desc != expected:
        raise fail(
            f"input {graph.describe(layer.input_desc)} (expected {graph.describe(expected)})"
        )


def _check_structure(graph: Graph, mine: list[_ModelLayer], residuals: dict[int, int]) -> None:
    if len(graph.layers) != len(mine):
        raise DataError(
            graph.source,
            f"the graph has {len(graph.layers)} convolution layers, the MobileNetV2 "
            f"SimpleBaseline inferred from it {len(mine)} (not a graph this importer understands)",
        )
    expected = _expected_inputs(len(mine), residuals)
    for layer, own, want in zip(graph.layers, mine, expected, strict=True):
        _check_layer(graph, layer, own, want)
    for k, (node, skip) in graph.adds.items():
        skip_from: Desc | None = expected[residuals[k]] if k in residuals else None
        if skip_from is None or skip != skip_from:
            raise DataError(
                graph.source,
                f"node {show(node)}: a residual Add of {graph.describe(('layer', k))} and "
                f"{graph.describe(skip)}, which MobileNetV2 does not have",
            )
    for k in residuals:
        if k not in graph.adds:
            raise DataError(
                graph.source,
                f"no residual Add after {show(graph.layers[k].node)}, where MobileNetV2 has one",
            )
    last = ("layer", len(mine) - 1)
    if graph.output_desc != last:
        raise DataError(
            graph.source,
            f"the graph's output {show(graph.output_name)} is not {graph.describe(last)}",
        )


# ------------------------------------------------------------------------------ placement


@dataclass
class _Placement:
    loaded: list[str] = field(default_factory=list)


def _copy(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(np.asarray(value, dtype=np.float32)))


def _place(layer: Layer, mine: _ModelLayer, placed: _Placement) -> None:
    conv = mine.conv
    _copy(conv.weight, layer.weight)
    placed.loaded.append(f"{mine.name}.weight")
    bias = layer.bias
    if conv.bias is not None:
        # An absent bias input is ONNX's zero bias.
        _copy(conv.bias, bias if bias is not None else np.zeros(conv.out_channels, np.float32))
        placed.loaded.append(f"{mine.name}.bias")
        bias = None
    bn = mine.bn
    if bn is None or mine.bn_name is None:
        return
    assert bn.running_mean is not None and bn.running_var is not None
    shift = bias if bias is not None else np.zeros(bn.num_features, np.float32)
    if layer.bn is None:
        # Folded into the convolution: the identity (up to float32 rounding), plus the bias.
        _copy(bn.weight, np.ones(bn.num_features, np.float32))
        _copy(bn.bias, shift)
        _copy(bn.running_mean, np.zeros(bn.num_features, np.float32))
        _copy(bn.running_var, np.full(bn.num_features, 1.0 - bn.eps, np.float32))
    else:
        file_bn = layer.bn
        if not math.isclose(file_bn.epsilon, bn.eps, rel_tol=EPS_REL_TOL):
            bn.eps = file_bn.epsilon
        _copy(bn.weight, file_bn.scale)
        _copy(bn.bias, file_bn.bias)
        # BN(conv(x) + b) with mean m is BN(conv(x)) with mean m - b.
        _copy(bn.running_mean, file_bn.mean - shift)
        _copy(bn.running_var, file_bn.var)
    placed.loaded += [f"{mine.bn_name}.{p}" for p in ("weight", "bias", "running_mean")]
    placed.loaded.append(f"{mine.bn_name}.running_var")


# ------------------------------------------------------------------------------ import


def import_onnx(
    path: str | Path,
    *,
    init_seed: int = 0,
    input_size: tuple[int, int] | None = None,
) -> tuple[TopDownModel, ImportReport]:
    """A TopDownModel computing what the ONNX graph in ``path`` computes, and what was loaded.

    The architecture is inferred from the graph: the width multiplier is the simplest (fewest
    decimals) value whose channel rule reproduces the stem's and every block's output channels;
    ``last_channels`` and the closing activation (ReLU6 or ReLU) are the closing 1x1
    convolution's; depthwise transposed convolutions each followed by a 1x1 convolution make a
    separable head; deconvolution channels and kernel and the number of keypoints come from the
    weights; the input size from the graph input's static height and width. ``input_size``
    ``(width, height)`` is only needed where those are dynamic. Normalisation (ImageNet) and
    codec are metapose's defaults: a graph does not record them.

    The model is built under ``init_seed`` (every tensor is then overwritten from the file) and
    returned in training mode, as :func:`~metapose.models.weights.layouts.import_weights` does.
    Raises :class:`~metapose.errors.DataError` for a file that is not ONNX, an operator outside
    :data:`SUPPORTED_OPS` (naming the node) or a graph that is not a MobileNetV2 SimpleBaseline.
    """
    source = Path(path)
    graph = read_graph(source)
    config, last_activation = _infer_config(
        graph.layers, graph.input_shape, source, input_size=input_size
    )
    backbone_config = config.backbone
    assert isinstance(backbone_config, MobileNetV2Config)
    model = seeded_model(config, init_seed)
    mine, residuals = _model_layers(model)
    _check_structure(graph, mine, residuals)
    placed = _Placement()
    for layer, own in zip(graph.layers, mine, strict=True):
        _place(layer, own, placed)
    loaded = set(placed.loaded)
    own_keys = [k for k in model.state_dict() if not k.endswith(BN_COUNTER)]
    consumed = graph.used | graph.structural
    report = ImportReport(
        source=source,
        format=FORMAT,
        config=config,
        loaded=tuple(k for k in own_keys if k in loaded),
        missing=tuple(k for k in own_keys if k not in loaded),
        unexpected=tuple(n for n in graph.initializer_names if n not in consumed),
        shape_mismatches=(),
        fresh=(),
        dropped=tuple(n for n in graph.initializer_names if n in graph.structural - graph.used),
    )
    log.info(
        "onnx graph %s: MobileNetV2 x%g (last %d, %s), deconv %s%s k%d, %d keypoints, input "
        "%dx%d; loaded %d tensors, %d missing, %d initializers unused",
        source,
        backbone_config.width_mult,
        backbone_config.last_channels,
        last_activation,
        list(config.deconv_channels),
        " separable" if config.deconv_separable else "",
        config.deconv_kernel,
        config.num_keypoints,
        *config.input_size,
        len(report.loaded),
        len(report.missing),
        len(report.unexpected),
    )
    return model, report
