"""docs/coco_gt_crops.png: real COCO people cropped the top-down way, their GT keypoints drawn.

Run from the repository root: ``python docs/scripts/coco_gt_crops.py`` (needs ../shared/data).
Each crop is what the model sees (box grown to 3:4 and padded by 1.25, warped to 192x256), with
the keypoints mapped by the same affine: if the crop geometry were wrong, joints would miss limbs.
"""

from pathlib import Path

import numpy as np

from metapose.config import ModelConfig, ResNetConfig
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import TopDownDataset, instances_from_coco
from metapose.data.images import write_rgb
from metapose.data.viz import draw_pose

COCO = Path("../shared/data/coco/mini/annotations/person_keypoints_val2017.json")
COLUMNS = 6


def main() -> None:
    gt = load_coco(COCO)
    codec = HeatmapCodec.for_model(ModelConfig(backbone=ResNetConfig(depth=18), input_size=(192, 256)))
    people = [i for i in instances_from_coco(gt) if (i.keypoints[:, 2] > 0).sum() >= 10]
    dataset = TopDownDataset(people[:COLUMNS * 2], codec)
    tiles = []
    for i in range(len(dataset)):
        sample = dataset[i]
        crop = codec.normalization.invert(sample.image.numpy())
        tiles.append(draw_pose(crop, sample.keypoints.numpy(), kind="flags"))
    rows = [np.concatenate(tiles[r * COLUMNS : (r + 1) * COLUMNS], axis=1) for r in range(2)]
    grid = np.concatenate(rows, axis=0)
    write_rgb("docs/coco_gt_crops.png", grid[::2, ::2].copy())  # half size for the repository
    print("wrote docs/coco_gt_crops.png")


if __name__ == "__main__":
    main()
