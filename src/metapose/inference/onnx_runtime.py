"""Top-down heatmap models on onnxruntime: the application side of a deployed pose estimator.

Runs an ONNX model exported by :mod:`metapose.inference.export` (or any top-down heatmap model:
input ``(N, 3, H, W)`` normalised RGB, output ``(N, K, h, w)`` heatmaps, as MMPose and the original
SimpleBaseline export them) and turns its heatmaps into image keypoints through the top-down path
every metapose model runs (:mod:`metapose.inference.heatmaps`): the SimpleBaseline crop
(:mod:`metapose.data.crops`, OpenCV's ``warpAffine``), the flip test and the quarter-offset
decode (:mod:`metapose.data.codec`).

This module never imports torch: an application needs numpy, OpenCV, onnxruntime and
metapose's numpy modules (``inference.heatmaps``, ``data.codec``, ``data.topdown``, ``config``,
``skeleton``; ``config`` brings PyYAML). :func:`estimate_poses` is the whole pipeline for one
image.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from metapose.config import RGB_CHANNELS, CodecConfig, Normalization
from metapose.config.model import MAX_INPUT_SIDE, MAX_KEYPOINTS
from metapose.data.codec import HeatmapCodec
from metapose.errors import DataError, cut
from metapose.files import parse_json, show
from metapose.inference.heatmaps import crop_people, heatmaps_with_flip, to_image_keypoints

log = logging.getLogger(__name__)

# The ONNX ``metadata_props`` key under which metapose stores what an application needs to know.
METADATA_KEY = "metapose"
INPUT_RANK = 4  # (N, 3, H, W) in, (N, K, h, w) out


@dataclass(frozen=True)
class ModelMetadata:
    """What :mod:`metapose.inference.export` writes into an ONNX file beside the graph."""

    input_size: tuple[int, int]  # (width, height)
    heatmap_size: tuple[int, int]  # (width, height)
    keypoints: tuple[str, ...]
    flip_index: tuple[int, ...]
    normalization: Normalization

    def to_json(self) -> str:
        return json.dumps(
            {
                "input_size": list(self.input_size),
                "heatmap_size": list(self.heatmap_size),
                "keypoints": list(self.keypoints),
                "flip_index": list(self.flip_index),
                "mean": list(self.normalization.mean),
                "std": list(self.normalization.std),
            }
        )

    @classmethod
    def from_json(cls, text: str, source: Path) -> ModelMetadata:
        raw = parse_json(text, source, field=METADATA_KEY)
        try:
            sizes = [*raw["input_size"][:2], *raw["heatmap_size"][:2]]
            if not all(isinstance(v, int) and 1 <= v <= MAX_INPUT_SIDE for v in sizes):
                raise ValueError(f"sizes must be 1 to {MAX_INPUT_SIDE} pixels, got {show(sizes)}")
            if not 1 <= len(raw["keypoints"]) <= MAX_KEYPOINTS:
                raise ValueError(f"{len(raw['keypoints'])} keypoints")
            return cls(
                input_size=(int(raw["input_size"][0]), int(raw["input_size"][1])),
                heatmap_size=(int(raw["heatmap_size"][0]), int(raw["heatmap_size"][1])),
                keypoints=tuple(str(k) for k in raw["keypoints"]),
                flip_index=tuple(int(i) for i in raw["flip_index"]),
                normalization=Normalization(
                    mean=(float(raw["mean"][0]), float(raw["mean"][1]), float(raw["mean"][2])),
                    std=(float(raw["std"][0]), float(raw["std"][1]), float(raw["std"][2])),
                ),
            )
        except (KeyError, IndexError, TypeError, ValueError) as err:
            why = cut(str(err), 120)
            raise DataError(source, f"malformed metadata ({why})", field=METADATA_KEY) from None


def _static_dim(value: Any) -> int | None:
    """An ONNX dimension as an int, or None when it is symbolic (``"batch"``) or unknown."""
    return value if isinstance(value, int) and value > 0 else None


class OnnxHeatmapModel:
    """An onnxruntime session as a heatmap function: ``(B, 3, H, W)`` float32 -> ``(B, K, h, w)``.

    The input size comes from the graph's static input shape, else from ``input_size``, else
    from metapose's metadata; where the graph fixes it, a different ``input_size`` or metadata
    size is a :class:`~metapose.errors.DataError`. The heatmap size comes from the graph's
    output shape, else from one run on a blank batch. ``normalization`` (else the metadata's) is
    what the model expects of its input; it is None for a foreign model when not given.

    A graph whose batch axis is fixed (Ultralight-SimplePose and many MXNet or Caffe exports fix
    it to 1) runs any batch in chunks of that size (``batch_size``; None where the axis is
    dynamic), the last chunk padded with zeros and the padding's heatmaps dropped.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_size: tuple[int, int] | None = None,
        normalization: Normalization | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "ONNX model not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=list(providers)
            )
        except Exception as err:  # onnxruntime raises its own untyped errors for bad files
            raise DataError(self.path, f"onnxruntime cannot load the model: {err}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise DataError(
                self.path, f"expected one input and an output, got {len(inputs)} / {len(outputs)}"
            )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        in_shape, out_shape = inputs[0].shape, outputs[0].shape
        if len(in_shape) != INPUT_RANK or len(out_shape) != INPUT_RANK:
            raise DataError(
                self.path,
                f"expected (N, 3, H, W) in and (N, K, h, w) out, got {in_shape} and {out_shape}",
                field=self.input_name,
            )
        if _static_dim(in_shape[1]) not in (None, RGB_CHANNELS):
            raise DataError(
                self.path, f"input has {in_shape[1]} channels, expected 3", field=self.input_name
            )
        self.input_shape: tuple[int | None, ...] = tuple(_static_dim(d) for d in in_shape)
        self.batch_size = self.input_shape[0]
        if self.batch_size is not None:
            log.info(
                "%s: the graph's batch axis is fixed to %d; running batches in chunks of %d",
                self.path,
                self.batch_size,
                self.batch_size,
            )
        self.metadata = self._read_metadata()
        self.input_size = self._input_size(in_shape, input_size)
        if not 1 <= min(self.input_size) <= max(self.input_size) <= MAX_INPUT_SIDE:
            raise DataError(
                self.path,
                f"input size {show(self.input_size)} is not 1 to {MAX_INPUT_SIDE} pixels a side",
                field=self.input_name,
            )
        self.normalization = normalization or (
            self.metadata.normalization if self.metadata else None
        )
        self.num_keypoints, self.heatmap_size = self._output_geometry(out_shape)

    def _read_metadata(self) -> ModelMetadata | None:
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            return None
        return ModelMetadata.from_json(props[METADATA_KEY], self.path)

    def _input_size(self, shape: Sequence[Any], given: tuple[int, int] | None) -> tuple[int, int]:
        height, width = _static_dim(shape[2]), _static_dim(shape[3])
        if width is not None and height is not None:
            if given is not None and given != (width, height):
                raise DataError(
                    self.path,
                    f"the graph's input is {width}x{height} (WxH), not {given[0]}x{given[1]}",
                    field=self.input_name,
                )
            if self.metadata is not None and self.metadata.input_size != (width, height):
                meta_w, meta_h = self.metadata.input_size
                raise DataError(
                    self.path,
                    f"the graph's input is {width}x{height} (WxH) but its metadata says "
                    f"{meta_w}x{meta_h}",
                    field=self.input_name,
                )
            return (width, height)
        if given is not None:
            return given
        if self.metadata is not None:
            return self.metadata.input_size
        raise DataError(
            self.path,
            "the input's height and width are dynamic; pass the input size",
            field=self.input_name,
        )

    def _output_geometry(self, shape: Sequence[Any]) -> tuple[int, tuple[int, int]]:
        k, h, w = (_static_dim(d) for d in shape[1:])
        if k is None or h is None or w is None:
            width, height = self.input_size
            probe = self(np.zeros((1, RGB_CHANNELS, height, width), np.float32))
            k, h, w = probe.shape[1:]
        return k, (w, h)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(images, dtype=np.float32)
        self._check_images(batch)
        size = self.batch_size
        if size is None or len(batch) == size:
            return self._run(batch)
        chunks = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            if len(chunk) < size:
                padding = np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)
                chunks.append(self._run(np.concatenate([chunk, padding]))[: len(chunk)])
            else:
                chunks.append(self._run(chunk))
        if not chunks:  # an empty batch
            width, height = self.heatmap_size
            return np.zeros((0, self.num_keypoints, height, width), np.float32)
        return np.concatenate(chunks)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch})
        return np.asarray(out[0], dtype=np.float32)

    def _check_images(self, images: np.ndarray) -> None:
        """One clear error where onnxruntime would raise INVALID_ARGUMENT on the shape."""
        fixed = [
            (axis, want) for axis, want in enumerate(self.input_shape[1:], 1) if want is not None
        ]
        if images.ndim != INPUT_RANK or any(images.shape[a] != want for a, want in fixed):
            expected = ", ".join(str(d) if d is not None else "?" for d in self.input_shape[1:])
            raise DataError(
                self.path,
                f"images of shape {images.shape}; the model takes (N, {expected})",
                field=self.input_name,
            )

    def codec(
        self, *, dark: bool = False, normalization: Normalization | None = None
    ) -> HeatmapCodec:
        """The decode geometry (input and heatmap sizes) of this model; ``normalization``: of
        the crops it is given (default ImageNet's)."""
        return HeatmapCodec.for_sizes(
            self.input_size, self.heatmap_size, CodecConfig(dark=dark), normalization
        )


# ------------------------------------------------------------------------------ app pipeline


def estimate_poses(
    model: OnnxHeatmapModel,
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    flip_index: Sequence[int] | np.ndarray | None = None,
    dark: bool = False,
) -> np.ndarray:
    """Keypoints ``(N, K, 3)`` of the people in ``(N, 4)`` ``boxes`` of an RGB ``image``.

    With ``flip_index`` (a metapose export carries it in its metadata) the heatmaps are averaged
    with those of the mirrored crops, SimpleBaseline's flip test.
    """
    if model.normalization is None:
        raise ValueError(f"{model.path}: no input normalization in the model; pass one")
    if len(boxes) == 0:
        return np.zeros((0, model.num_keypoints, 3), np.float32)
    codec = model.codec(dark=dark, normalization=model.normalization)
    crops, inverses = crop_people(image, boxes, codec)
    flips = None if flip_index is None else np.asarray(flip_index)
    return to_image_keypoints(heatmaps_with_flip(model, crops, flips, codec), inverses, codec)
