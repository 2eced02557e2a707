"""ONNX export of a TopDownModel, checked by ``onnx.checker`` and onnxruntime (as timm does).

The graph takes ``images`` ``(N, 3, H, W)`` ImageNet-normalised RGB with a dynamic batch axis and
returns ``heatmaps`` ``(N, K, H/stride, W/stride)``; the decode stays outside the graph, in numpy
(:mod:`metapose.inference.onnx_runtime`). The file carries
:class:`~metapose.inference.onnx_runtime.ModelMetadata`
(input and heatmap size, keypoint names, flip index, normalisation) so an application needs
nothing else to run it.

Exporter: torch >= 2.9 defaults to the ``torch.export``-based exporter, which needs the
``onnxscript`` package (not a metapose dependency); the TorchScript exporter (``dynamo=False``)
exports this all-convolutional network exactly and writes opsets up to :data:`MAX_OPSET`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch

from metapose.config import ConfigError
from metapose.data.coco import CocoDataset
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import TopDownDataset, instances_from_coco
from metapose.errors import CheckFailed, DataError
from metapose.files import atomic_write
from metapose.inference.onnx_runtime import METADATA_KEY, ModelMetadata, OnnxHeatmapModel
from metapose.models import TopDownModel
from metapose.progress import Progress
from metapose.skeleton import COCO17, Skeleton

log = logging.getLogger(__name__)

# Opset 17 (2022) is read by every onnxruntime since 1.13 and by the common edge runtimes;
# nothing in a ResNet + deconvolution network needs a newer one.
DEFAULT_OPSET = 17
# The range torch's TorchScript exporter writes; every opset in it exports this network with
# heatmaps identical to PyTorch's (checked with torch 2.13 and onnxruntime 1.32).
MIN_OPSET = 7
MAX_OPSET = 20
INPUT_NAME = "images"
OUTPUT_NAME = "heatmaps"
BATCH_AXIS = "batch"
PARITY_TOLERANCE = 1e-4  # max |heatmap difference| allowed between PyTorch and onnxruntime
PARITY_BATCH = 4  # random crops per parity check


class ExportReport(NamedTuple):
    """An exported file and its measured parity with the PyTorch model."""

    path: Path
    opset: int
    max_abs_diff_random: float
    max_abs_diff_real: float | None  # None when no real crops were given


class ParityError(CheckFailed):
    """onnxruntime's heatmaps differ from PyTorch's by more than the tolerance."""


def model_metadata(model: TopDownModel, skeleton: Skeleton = COCO17) -> ModelMetadata:
    config = model.config
    if config.num_keypoints != skeleton.num_keypoints:
        raise ValueError(
            f"the model predicts {config.num_keypoints} keypoints, "
            f"skeleton {skeleton.name!r} has {skeleton.num_keypoints}"
        )
    return ModelMetadata(
        input_size=config.input_size,
        heatmap_size=config.heatmap_size,
        keypoints=skeleton.keypoints,
        flip_index=tuple(int(i) for i in skeleton.flip_index),
        normalization=config.normalization,
    )


def export_onnx(
    model: TopDownModel,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    skeleton: Skeleton = COCO17,
) -> Path:
    """Write ``model`` (an eval-mode, float32 CPU copy of it) to ``path`` and check the file.

    The batch axis is dynamic; height and width are fixed at the model's input size. The file is
    written through a temporary name, so ``path`` never holds a half-written model.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        _write_onnx(model, tmp, opset, skeleton)
    log.info("exported %s (opset %d)", path, opset)
    return path


def _write_onnx(model: TopDownModel, file: Path, opset: int, skeleton: Skeleton) -> None:
    """Export ``model`` into ``file`` with its metadata and run ``onnx.checker`` on it."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"--opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    metadata = model_metadata(model, skeleton)
    # A copy, so the caller's model keeps its device, dtype and train/eval mode.
    network = copy.deepcopy(model).to("cpu", torch.float32).eval()
    width, height = model.config.input_size
    example = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated; it is the one that works without
        # onnxscript (see the module docstring), so the warning says nothing actionable here.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            network,
            (example,),
            str(file),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
            do_constant_folding=True,
        )
    proto = onnx.load(str(file))
    onnx.helper.set_model_props(proto, {METADATA_KEY: metadata.to_json()})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(file))


def check_parity(model: TopDownModel, onnx_path: str | Path, inputs: np.ndarray) -> float:
    """Max absolute difference between the heatmaps of ``model`` and of onnxruntime.

    ``inputs`` ``(B, 3, H, W)`` float32, normalised as the model expects.
    """
    network = copy.deepcopy(model).to("cpu", torch.float32).eval()
    return _parity(network, OnnxHeatmapModel(onnx_path), inputs)


def _parity(network: TopDownModel, runtime: OnnxHeatmapModel, inputs: np.ndarray) -> float:
    """:func:`check_parity` of an eval-mode float32 CPU ``network`` and a loaded ``runtime``."""
    batch = np.ascontiguousarray(inputs, dtype=np.float32)
    with torch.inference_mode():
        expected = network(torch.from_numpy(batch)).numpy()
    actual = runtime(batch)
    if actual.shape != expected.shape:
        raise ParityError(f"onnxruntime gives {actual.shape}, PyTorch {expected.shape}")
    if not (np.isfinite(expected).all() and np.isfinite(actual).all()):
        # max(nan, ...) > tol is false: a NaN model would otherwise pass the check.
        raise ParityError("the model gives NaN or infinite heatmaps (are its weights finite?)")
    return float(np.abs(actual - expected).max())


def coco_crops(
    dataset: CocoDataset, codec: HeatmapCodec, limit: int, *, progress: Progress | None = None
) -> np.ndarray:
    """The first ``limit`` labelled people of ``dataset`` as normalised crops ``(B, 3, H, W)``."""
    instances = instances_from_coco(dataset)[:limit]
    if not instances:
        raise DataError(dataset.annotation_file, "no labelled person to crop")
    crops = TopDownDataset(instances, codec, targets=False)
    advance = progress.stage("crop check images", len(crops)) if progress is not None else None
    images = []
    for i in range(len(crops)):
        images.append(crops[i].image.numpy())
        if advance is not None:
            advance(1)
    if progress is not None:
        progress.close_stage()
    return np.stack(images)


def export_checked(
    model: TopDownModel,
    path: str | Path,
    rng: np.random.Generator,
    *,
    opset: int = DEFAULT_OPSET,
    real_crops: np.ndarray | None = None,
    tolerance: float = PARITY_TOLERANCE,
    progress: Progress | None = None,
) -> ExportReport:
    """:func:`export_onnx`, then :func:`check_parity` on random and (when given) real crops.

    The file is exported and checked under a temporary name and renamed to ``path`` only once
    it passed, so ``path`` never holds an unchecked model (an earlier file there stays as it was
    when the export fails or is interrupted). Raises :class:`ParityError` when a difference
    exceeds ``tolerance``.
    ``progress`` gets two stages: the export (one step), then the parity checks (one step per
    crop, checked ``PARITY_BATCH`` at a time).
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        # Exported and checked under a temporary name: ``path`` gets a checked file or nothing.
        advance = progress.stage("export ONNX", 1) if progress is not None else None
        _write_onnx(model, tmp, opset, COCO17)
        if advance is not None:
            advance(1)
        if progress is not None:
            progress.close_stage()
        try:
            diff_random, diff_real = _checked_parity(
                model, tmp, rng, real_crops, tolerance, progress
            )
        except ParityError as err:
            raise ParityError(f"{path}: {err}; nothing written") from None
    log.info("exported %s; parity: max |diff| %.3g random, %s real", path, diff_random, diff_real)
    return ExportReport(path, opset, diff_random, diff_real)


def _checked_parity(
    model: TopDownModel,
    onnx_file: Path,
    rng: np.random.Generator,
    real_crops: np.ndarray | None,
    tolerance: float,
    progress: Progress | None,
) -> tuple[float, float | None]:
    """Max |difference| on random and real crops; ParityError beyond ``tolerance``."""
    width, height = model.config.input_size
    random_crops = rng.standard_normal((PARITY_BATCH, 3, height, width)).astype(np.float32)
    total = len(random_crops) + (0 if real_crops is None else len(real_crops))
    advance = progress.stage("parity checks", total) if progress is not None else None
    network = copy.deepcopy(model).to("cpu", torch.float32).eval()
    runtime = OnnxHeatmapModel(onnx_file)

    def checked(crops: np.ndarray) -> float:
        worst = 0.0
        for start in range(0, len(crops), PARITY_BATCH):
            chunk = crops[start : start + PARITY_BATCH]
            worst = max(worst, _parity(network, runtime, chunk))
            if advance is not None:
                advance(len(chunk))
        return worst

    diff_random = checked(random_crops)
    diff_real = None if real_crops is None else checked(real_crops)
    if progress is not None:
        progress.close_stage()
    worst = max(diff_random, diff_real or 0.0)
    if not worst <= tolerance:
        raise ParityError(f"onnxruntime differs from PyTorch by {worst:.3g} (> {tolerance:g})")
    return diff_random, diff_real
