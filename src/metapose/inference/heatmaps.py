"""The top-down path every model runs through, torch-free: crop people -> heatmaps -> flip test ->
decode to image pixels.

A model is any ``HeatmapFn``: a function from a ``(B, 3, H, W)`` float32 batch of normalised
crops to ``(B, K, h, w)`` heatmaps (a PyTorch model through
:func:`metapose.inference.crop_runner.torch_heatmap_fn`, an onnxruntime session through
:class:`metapose.inference.onnx_runtime.OnnxHeatmapModel`). The crops are the SimpleBaseline (or
UDP) crops of :mod:`metapose.data.crops`; the codec (:mod:`metapose.data.codec`) says how they
are cut and normalised and how heatmaps decode, so a PyTorch model and its ONNX export give the
same keypoints. This module imports numpy and metapose's numpy modules only, so the ONNX
application path stays free of torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from metapose.config import RGB_CHANNELS
from metapose.data.codec import HeatmapCodec
from metapose.data.crops import CropParams, apply_affine, box_to_center_scale, warp_crop

HeatmapFn = Callable[[np.ndarray], np.ndarray]


def crop_people(
    image: np.ndarray, boxes: np.ndarray, codec: HeatmapCodec
) -> tuple[np.ndarray, np.ndarray]:
    """The crops of ``(N, 4)`` ``(x, y, w, h)`` boxes of an ``(H, W, 3)`` RGB image.

    Returns the crops normalised by ``codec.normalization`` ``(N, 3, height, width)`` and the
    ``(N, 2, 3)`` affines taking crop pixels back to image pixels.
    """
    width, height = codec.input_size
    crops = np.empty((len(boxes), RGB_CHANNELS, height, width), np.float32)
    inverses = np.empty((len(boxes), 2, 3), np.float64)
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        center, scale = box_to_center_scale(box, width / height)
        params = CropParams(center, scale)
        crops[i] = codec.normalization.apply(
            warp_crop(image, codec.crop_matrix(params), codec.input_size)
        )
        inverses[i] = codec.crop_matrix(params, inverse=True)
    return crops, inverses


def heatmaps_with_flip(
    fn: HeatmapFn, images: np.ndarray, flip_index: np.ndarray | None, codec: HeatmapCodec
) -> np.ndarray:
    """Heatmaps of ``images``, averaged with those of their mirror images when ``flip_index``
    is given (SimpleBaseline's flip test)."""
    heatmaps = fn(images)
    if flip_index is None:
        return heatmaps
    mirrored = fn(np.ascontiguousarray(images[..., ::-1]))
    return 0.5 * (heatmaps + codec.flip_back(mirrored, flip_index))


def to_image_keypoints(
    heatmaps: np.ndarray, inverses: np.ndarray, codec: HeatmapCodec
) -> np.ndarray:
    """``(N, K, h, w)`` heatmaps -> ``(N, K, 3)`` image pixels ``(x, y)`` and peak scores, given
    each crop's ``(N, 2, 3)`` crop -> image affine."""
    decoded = codec.decode(heatmaps)
    out = np.empty((*decoded.coords.shape[:2], 3), np.float32)
    for i in range(heatmaps.shape[0]):
        out[i, :, :2] = apply_affine(decoded.coords[i].astype(np.float64), inverses[i])
        out[i, :, 2] = decoded.scores[i]
    return out
