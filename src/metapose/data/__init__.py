"""Data: COCO-format reading and writing, images, top-down crops, augmentation, task samplers."""
