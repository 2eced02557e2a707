"""Pose estimators: a heatmap function (a PyTorch model or an ONNX model on onnxruntime) with the
codec that crops for it and decodes its heatmaps, and the skeleton it predicts.

Everything that runs a model on people (:mod:`metapose.inference.predict`,
:func:`metapose.evaluation.evaluate.evaluate`, the experiment) takes one of these, so a model and
its ONNX export go through the same crop, flip test and decode.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from metapose.config import CodecConfig, Normalization, replace
from metapose.data.codec import HeatmapCodec
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.inference.crop_runner import torch_heatmap_fn
from metapose.inference.heatmaps import HeatmapFn
from metapose.inference.onnx_runtime import OnnxHeatmapModel
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint
from metapose.skeleton import COCO17, Skeleton

log = logging.getLogger(__name__)


class PoseEstimator(NamedTuple):
    """A heatmap function with its decode geometry; it takes ImageNet-normalised crops.

    ``flip``: whether its poses are flip-tested by default (a checkpoint's ``codec.flip_test``);
    :class:`~metapose.inference.pose_runner.PredictOptions` ``flip`` overrides it.
    """

    fn: HeatmapFn
    codec: HeatmapCodec
    skeleton: Skeleton
    source: Path
    flip: bool = True


def estimator_from_checkpoint(
    path: str | Path, options: DeviceOptions, *, codec: CodecConfig | None = None
) -> PoseEstimator:
    """A metapose checkpoint (``.safetensors`` + sidecar) on ``options.device``."""
    model = load_checkpoint(path, options.device).model
    _check_keypoints(model.config.num_keypoints, COCO17, Path(path))
    return torch_estimator(model, options, codec=codec)._replace(source=Path(path))


def estimator_from_onnx(
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    normalization: Normalization | None = None,
    threads: int | None = None,
    dark: bool = False,
) -> PoseEstimator:
    """Any top-down heatmap ONNX model on onnxruntime.

    ``normalization`` is what the model expects of its input; it defaults to the file's metapose
    metadata, else to ImageNet's (the convention of SimpleBaseline, HRNet and MMPose models).
    """
    model = OnnxHeatmapModel(
        path, input_size=input_size, normalization=normalization, threads=threads
    )
    _check_keypoints(model.num_keypoints, COCO17, model.path)
    codec = model.codec(dark=dark)
    expected = model.normalization
    if expected is None:
        log.info("%s: no normalisation given or stored; using ImageNet's", model.path)
        expected = Normalization()

    def run(images: np.ndarray) -> np.ndarray:
        # Crops arrive normalised by the codec's normalisation; re-normalise if the model differs.
        return model(codec.normalization.convert(images, expected))

    return PoseEstimator(run, codec, COCO17, model.path)


def _check_keypoints(num_keypoints: int, skeleton: Skeleton, source: Path) -> None:
    if num_keypoints != skeleton.num_keypoints:
        raise DataError(
            source,
            f"the model predicts {num_keypoints} keypoints; the {skeleton.name} skeleton has "
            f"{skeleton.num_keypoints}",
        )


def torch_estimator(
    model: TopDownModel, options: DeviceOptions, *, codec: CodecConfig | None = None
) -> PoseEstimator:
    """A PyTorch model (switched to eval mode, moved to ``options.device``) as an estimator;
    ``codec``: crop, decode and flip-test with this codec instead of the model's own."""
    config = model.config if codec is None else replace(model.config, codec=codec)
    return PoseEstimator(
        torch_heatmap_fn(model, options),
        HeatmapCodec.for_model(config),
        COCO17,
        Path("<model>"),
        flip=config.codec.flip_test,
    )
