"""docs/predict_overlay.png: `metapose predict` on a real COCO image, overlay as written.

No pretrained weights exist here, so the model is a small ResNet-18 (128x96) fit for 400 steps to
the three labelled people of COCO val image 000000252219 itself: the picture shows the predict
pipeline (boxes from the annotations, flip test, decoding, drawing by side and confidence), not
accuracy on unseen images. Run from the repository root (needs ../shared/data, ~3 min on 2 cores).
"""

import tempfile
from pathlib import Path

import cv2
import torch

from metapose.checkpoint import save_checkpoint
from metapose.cli import main as cli
from metapose.codec import HeatmapCodec
from metapose.config import ModelConfig, OptimizerConfig, TopDownAugmentConfig, TrainConfig, ResNetConfig
from metapose.data.batches import EpochBatches
from metapose.data.coco import load_coco
from metapose.data.dataset import TopDownDataset, instances_from_coco
from metapose.models import TopDownModel
from metapose.train import train

TINY = Path("../shared/data/coco/tiny")
ANNOTATIONS = TINY / "annotations/person_keypoints_val2017.json"
IMAGE_ID = 252219


def main() -> None:
    gt = load_coco(ANNOTATIONS)
    config = ModelConfig(backbone=ResNetConfig(depth=18), input_size=(96, 128), deconv_channels=(128, 128, 128))
    codec = HeatmapCodec.for_model(config)
    augment = TopDownAugmentConfig(scale_factor=0.15, rotation_factor=15, rotation_prob=0.3)
    people = instances_from_coco(gt, image_ids=[IMAGE_ID])
    dataset = TopDownDataset(people * 4, codec, augment=augment, seed=0, cache_images=True)
    torch.manual_seed(0)
    model = TopDownModel(config)
    schedule = TrainConfig(steps=400, batch_size=12, optimizer=OptimizerConfig(lr=1e-3),
                           lr_milestones=(0.75,))
    train(model, EpochBatches(dataset, 12, seed=0), schedule, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "fit", model)
        image = gt.image_path(IMAGE_ID)
        cli(["predict", str(image), "--checkpoint", str(checkpoint), "--boxes", str(ANNOTATIONS),
             "--out", tmp, "--quiet"])
        overlay = cv2.imread(str(Path(tmp) / "overlays" / f"{image.stem}.png"))
        small = cv2.resize(overlay, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
        cv2.imwrite("docs/predict_overlay.png", small)
    print("wrote docs/predict_overlay.png")


if __name__ == "__main__":
    main()
