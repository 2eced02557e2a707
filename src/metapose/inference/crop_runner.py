"""Top-down inference over datasets: batches of person crops -> heatmaps (with flip test) ->
keypoints in image pixels, through the one path of :mod:`metapose.inference.heatmaps`.

Model-agnostic: anything that maps a ``(B, 3, H, W)`` float32 batch to ``(B, K, h, w)`` heatmaps
(a PyTorch model, an onnxruntime session) runs through the same crop, flip test and decode, so a
PyTorch model and its ONNX export are scored by identical code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from metapose.data.batches import collate, worker_init
from metapose.data.codec import HeatmapCodec
from metapose.data.crops import BOX_PADDING
from metapose.data.dataset import Sample, TopDownDataset, crop_params_of
from metapose.device import DeviceOptions
from metapose.inference.heatmaps import HeatmapFn, heatmaps_with_flip, to_image_keypoints
from metapose.inference.postprocess import PosePrediction
from metapose.models.topdown import forward_on
from metapose.skeleton import COCO17, Skeleton


def torch_heatmap_fn(model: nn.Module, options: DeviceOptions) -> HeatmapFn:
    """Wrap a PyTorch model (switched to eval mode) as a numpy heatmap function."""
    model.eval()
    options.prepare(model)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return forward_on(model, torch.from_numpy(images), options).float().cpu().numpy()

    return run


def decode_batch(heatmaps: np.ndarray, batch: Sample, codec: HeatmapCodec) -> np.ndarray:
    """``(B, K, h, w)`` heatmaps of a collated batch -> ``(B, K, 3)`` image-space keypoints."""
    inverses = np.stack(
        [codec.crop_matrix(crop_params_of(batch, i), inverse=True) for i in range(len(heatmaps))]
    )
    return to_image_keypoints(heatmaps, inverses, codec)


def predict_batches(
    fn: HeatmapFn,
    batches: Iterable[Sample],
    codec: HeatmapCodec,
    *,
    flip: bool = True,
    skeleton: Skeleton = COCO17,
    on_batch: Callable[[int], None] | None = None,
) -> list[PosePrediction]:
    """Predict every crop of un-augmented, collated ``batches``."""
    flip_index = skeleton.flip_index if flip else None
    out: list[PosePrediction] = []
    for batch in batches:
        heatmaps = heatmaps_with_flip(fn, batch.image.numpy(), flip_index, codec)
        keypoints = decode_batch(heatmaps, batch, codec)
        fields: Any = batch  # collated: every field is a tensor with a batch axis
        for i in range(keypoints.shape[0]):
            area = float(fields.area[i])
            if area <= 0:  # no GT person (a detection): the unpadded box stands in
                area = float(fields.scale[i].prod()) / BOX_PADDING**2
            out.append(
                PosePrediction(
                    image_id=int(fields.image_id[i]),
                    annotation_id=int(fields.annotation_id[i]),
                    keypoints=keypoints[i],
                    box_score=float(fields.box_score[i]),
                    area=area,
                )
            )
        if on_batch is not None:
            on_batch(int(batch.image.shape[0]))
    return out


def eval_batches(
    dataset: TopDownDataset, *, batch_size: int = 32, num_workers: int = 0
) -> DataLoader[Sample]:
    """The crops of ``dataset`` (which must not augment) in order, collated."""
    if dataset.augment is not None or dataset.crop_transform is not None:
        raise ValueError("prediction needs a dataset without augmentation")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init,
    )


def predict(
    fn: HeatmapFn,
    dataset: TopDownDataset,
    *,
    flip: bool = True,
    skeleton: Skeleton = COCO17,
    batch_size: int = 32,
    num_workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> list[PosePrediction]:
    """Predict every instance of ``dataset`` (which must not augment)."""
    batches = eval_batches(dataset, batch_size=batch_size, num_workers=num_workers)
    return predict_batches(
        fn, batches, dataset.codec, flip=flip, skeleton=skeleton, on_batch=on_batch
    )


def predictions_by_image(predictions: Sequence[PosePrediction]) -> dict[int, list[PosePrediction]]:
    out: dict[int, list[PosePrediction]] = {}
    for p in predictions:
        out.setdefault(p.image_id, []).append(p)
    return out
