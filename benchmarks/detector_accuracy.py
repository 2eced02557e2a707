"""Pose AP from detected people beside ground-truth boxes, both zoo models, and the time each
stage takes per image.

On the 79 images of ``../shared/data/coco/mini`` val: the bundled YOLOX-Nano finds the people
(score threshold ``EVALUATION_SCORE_THRESHOLD``, as ``evaluate --detect``, or
``--det-threshold``; the other :class:`~metapose.inference.detector.DetectorOptions` defaults),
each zoo model (flip test, its own codec) estimates their poses, SimpleBaseline rescoring and
OKS-NMS follow, and pycocotools scores them; the same model with the ground-truth boxes is the
reference. Times are wall clock on this machine per image: the detector (reading and decoding
the JPEG included) and the pose stage (crops, forward passes with flip, decoding). Run:
``OMP_NUM_THREADS=1 python benchmarks/detector_accuracy.py [--threads 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from metapose.data.coco import load_coco
from metapose.device import DeviceOptions
from metapose.evaluation.evaluate import detect_people, evaluate
from metapose.inference.detector import (
    EVALUATION_SCORE_THRESHOLD,
    DetectorOptions,
    PersonDetector,
)
from metapose.inference.estimators import estimator_from_checkpoint
from metapose.inference.predict import PredictOptions
from metapose.models.zoo import ZOO

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "data" / "coco" / "mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    parser.add_argument("--det-threshold", type=float, default=EVALUATION_SCORE_THRESHOLD)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gt = load_coco(MINI / "annotations" / "person_keypoints_val2017.json", MINI / "val2017")
    images = len(gt.images)
    detector = PersonDetector(
        options=DetectorOptions(score_threshold=args.det_threshold), threads=args.threads
    )
    detector.detect(np.zeros((32, 32, 3), np.uint8))  # warm-up
    people = detect_people(detector, gt)
    found = sum(len(v) for v in people.detections.values())
    print(
        f"detector: {found} people on {images} images, "
        f"{1000 * people.seconds / images:.1f} ms/image (reading included)"
    )
    rows = []
    for name in ZOO:
        # float32, as zoo_accuracy.py measures the GT-box numbers of the README.
        estimator = estimator_from_checkpoint(name, DeviceOptions(torch.device("cpu"), amp=False))
        options = PredictOptions()
        started = time.perf_counter()
        detected = evaluate(estimator, gt, boxes=people.detections, options=options)
        pose_ms = 1000 * (time.perf_counter() - started) / images
        with_gt = evaluate(estimator, gt, options=options)
        rows.append(
            {
                "model": name,
                "ap_detected": detected.ap,
                "ap50_detected": detected.ap50,
                "ar_detected": detected.ar,
                "ap_gt": with_gt.ap,
                "ap50_gt": with_gt.ap50,
                "ar_gt": with_gt.ar,
                "detector_ms_per_image": 1000 * people.seconds / images,
                "pose_ms_per_image": pose_ms,
            }
        )
    print(
        "| model | AP, detected boxes | AP, GT boxes | AP50 det / GT | AR det / GT "
        "| detector ms/image | pose ms/image |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['model']}` | {r['ap_detected']:.3f} | {r['ap_gt']:.3f} "
            f"| {r['ap50_detected']:.3f} / {r['ap50_gt']:.3f} "
            f"| {r['ar_detected']:.3f} / {r['ar_gt']:.3f} "
            f"| {r['detector_ms_per_image']:.0f} | {r['pose_ms_per_image']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
