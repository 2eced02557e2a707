"""Importing published weights, on two independent axes.

Containers (how tensors are stored): safetensors, ``.pth`` read without unpickling code, ONNX
graphs with their initializers, ncnn ``.param``/``.bin``. Name layouts (how tensors are named):
torchvision, the SimpleBaseline release, MMPose (:mod:`.layouts`), and graph order for ONNX and
ncnn files, which carry no PyTorch names (:mod:`.onnx_graph`, :mod:`.ncnn`). Every import builds
the architecture the file describes and reports each tensor it could not place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, get_args

from torch import Tensor

from metapose.config import CodecConfig, ModelConfig, Normalization
from metapose.errors import DataError
from metapose.models.topdown import TopDownModel
from metapose.models.weights.layouts import ImportReport, import_layout
from metapose.models.weights.unfold import folded_batchnorms, unfold_batchnorm

ImportFormat = Literal["torchvision", "simplebaseline", "mmpose", "onnx", "ncnn"]
IMPORT_FORMATS: tuple[str, ...] = get_args(ImportFormat)
# Formats a file's suffix tells; a PyTorch or safetensors file needs its name layout said.
SUFFIX_FORMATS: dict[str, ImportFormat] = {".onnx": "onnx", ".param": "ncnn", ".bin": "ncnn"}


def guess_format(path: str | Path) -> ImportFormat:
    """The format of ``path`` from its suffix, where the suffix tells it."""
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            path,
            "cannot tell the weights' layout from the file name: give --format "
            f"({', '.join(IMPORT_FORMATS)})",
        )
    return fmt


def import_weights(
    path: str | Path,
    fmt: ImportFormat | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    codec: CodecConfig | None = None,
    normalization: Normalization | None = None,
    strict: bool = True,
    init_seed: int = 0,
) -> tuple[TopDownModel, ImportReport]:
    """A TopDownModel holding the weights of ``path``, and what the import placed.

    ``fmt`` defaults to the one the suffix tells (``.onnx``, ``.param``/``.bin``). ``codec`` and
    ``normalization`` record how the weights were trained (a file rarely says); they default to
    SimpleBaseline's codec and ImageNet's statistics. ``input_size`` (``(width, height)``) applies
    to name layouts; graph files fix their own.
    """
    path = Path(path)
    fmt = fmt or guess_format(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if fmt == "ncnn":
        from metapose.models.weights.ncnn import import_ncnn

        param = path.with_suffix(".param")
        model, report = import_ncnn(param, param.with_suffix(".bin"), init_seed=init_seed)
    elif fmt == "onnx":
        from metapose.models.weights.onnx_graph import import_onnx

        model, report = import_onnx(path, init_seed=init_seed)
    else:
        model, report = import_layout(
            path, fmt, input_size=input_size, strict=strict, init_seed=init_seed
        )
    if codec is not None or normalization is not None:
        model.config = dataclasses.replace(
            model.config,
            codec=codec or model.config.codec,
            normalization=normalization or model.config.normalization,
        )
        report = dataclasses.replace(report, config=model.config)
    return model, report


def import_checkpoint(
    path: str | Path,
    fmt: ImportFormat | None,
    out: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    codec: CodecConfig | None = None,
    normalization: Normalization | None = None,
    strict: bool = True,
    init_seed: int = 0,
    compact: bool = False,
    calibration: Callable[[ModelConfig], Iterable[Tensor]] | None = None,
    origin: dict[str, Any] | None = None,
) -> tuple[Path, ImportReport, int]:
    """:func:`import_weights`, unfold folded BatchNorm, then write a one-file checkpoint.

    ``calibration`` gives, for the imported model's config, the images whose statistics folded
    BatchNorm layers get back (:func:`~metapose.models.weights.unfold.unfold_batchnorm`); it is
    called only when the file folded some. Returns the path, the report and the number of
    BatchNorm layers unfolded.
    """
    from metapose.models.checkpoint import save_checkpoint

    model, report = import_weights(
        path,
        fmt,
        input_size=input_size,
        codec=codec,
        normalization=normalization,
        strict=strict,
        init_seed=init_seed,
    )
    unfolded = 0
    if calibration is not None and folded_batchnorms(model):
        unfolded = unfold_batchnorm(model, calibration(model.config))
    written = save_checkpoint(
        out,
        model,
        extra={"imported_from": report.to_dict(), "batchnorm_unfolded": unfolded},
        compact=compact,
        origin=origin,
    )
    return written, report, unfolded


__all__ = ["IMPORT_FORMATS", "ImportFormat", "import_checkpoint", "import_weights", "guess_format"]
