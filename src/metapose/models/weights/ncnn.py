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
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metapose.config import ConfigError, ModelConfig
from metapose.errors import DataError
from metapose.models import TopDownModel, seeded_model
from metapose.models.backbones.lite_hrnet import ConvNorm
from metapose.models.weights.layouts import ImportReport, ShapeMismatch
from metapose.models.weights.ncnn_match import LiteHRNetMatcher, not_understood
from metapose.models.weights.ncnn_reader import (
    NUM_BATCHES_TRACKED,
    PP_TINYPOSE_CODEC,
    NcnnLayer,
    read_ncnn,
)

log = logging.getLogger(__name__)

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
    matcher = LiteHRNetMatcher(graph)
    try:
        backbone, keypoints, input_size, _ = matcher.walk()
    except DataError:
        raise
    except ValueError as err:  # a parameter of the wrong kind
        raise not_understood(graph.param_path, str(err)) from None
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
    model = seeded_model(config, init_seed)
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
