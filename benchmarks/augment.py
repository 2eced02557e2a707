"""Speed of task augmentation (metapose.data.augment): milliseconds per crop, per style and size.

Augmentation runs on the fly in the data loader, so one crop must take well under the ~2 ms a
training step can spare per image on 2 CPU cores. Run: ``python benchmarks/augment.py``.
albumentations' own Affine / Perspective / ElasticTransform on the same crop are timed for
reference (their keypoint handling is not what metapose uses; see the module docstring).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import albumentations as A
import cv2
import numpy as np

from metapose.config.data import STYLES, TaskAugmentConfig
from metapose.data.augment import TaskAugmenter

SIZES = ((96, 128), (192, 256))  # (W, H): a fast CPU input and the paper's input


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches (OpenCV kernels, the pixel grid)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (loader workers: 1)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    rng = np.random.default_rng(0)
    augmenter = TaskAugmenter(TaskAugmentConfig(styles=STYLES))
    print(f"OpenCV threads: {args.threads}; median of {args.repeats} crops; 17 keypoints")
    for width, height in SIZES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        keypoints = np.column_stack(
            [rng.uniform(0, width, 17), rng.uniform(0, height, 17), np.full(17, 2.0)]
        ).astype(np.float32)
        print(f"\ncrop {width}x{height}")
        for style in STYLES:
            run = partial(augmenter.augment, image, keypoints, rng, style=style)
            print(f"  metapose {style:<12s} {median_ms(run, args.repeats):7.3f} ms")
        xy = [tuple(p) for p in keypoints[:, :2]]
        reference = {
            "Affine": A.Affine(scale=(0.85, 1.15), rotate=(-20, 20), shear=(-12, 12), p=1.0),
            "Perspective": A.Perspective(scale=(0.05, 0.1), p=1.0),
            "ElasticTransform": A.ElasticTransform(alpha=250.0, sigma=20.0, p=1.0),
        }
        for name, transform in reference.items():
            keypoint_params = A.KeypointParams(format="xy", remove_invisible=False)
            pipeline = A.Compose([transform], keypoint_params=keypoint_params, seed=0)
            run = partial(pipeline, image=image, keypoints=xy)
            print(f"  albumentations {name:<16s} {median_ms(run, args.repeats):7.3f} ms")


if __name__ == "__main__":
    main()
