"""PCK of a model that ignores the pixels: the pool's median pose placed in each test box.

A floor to read a target's K-curve against: a fine-tuned model that does not beat this has
learned where joints usually are in a box, not where they are in the image. Usage (the LSPet
split of ``configs/lspet_cpu.yaml``; the annotations are the converted ``joints.mat`` that the
experiment writes to ``<run>/data/lspet/annotations.json``)::

    python benchmarks/mean_pose.py runs/lspet_cpu/data/lspet/annotations.json \\
        --images ../shared/data/lspet/images --pool 1 4000 --test 4001 4400
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metapose.data.coco import Annotation, load_coco
from metapose.evaluation.pck import pck, torso_diameter
from metapose.skeleton import COCO17


def box_frame(annotation: Annotation) -> tuple[np.ndarray, float]:
    """Centre and longer side of the annotation's box."""
    x, y, w, h = annotation.bbox
    return np.array([x + w / 2, y + h / 2]), max(w, h)


def median_pose(pool: list[Annotation], num_keypoints: int) -> np.ndarray:
    """Per-joint median of the labelled joints, in box-relative units."""
    rel = np.stack([(a.keypoints[:, :2] - box_frame(a)[0]) / box_frame(a)[1] for a in pool])
    labelled = np.stack([a.keypoints[:, 2] > 0 for a in pool])
    out = np.zeros((num_keypoints, 2))
    for j in range(num_keypoints):
        if labelled[:, j].any():
            out[j] = np.median(rel[labelled[:, j], j], axis=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--pool", type=int, nargs=2, required=True, metavar=("FIRST", "LAST"))
    parser.add_argument("--test", type=int, nargs=2, required=True, metavar=("FIRST", "LAST"))
    parser.add_argument("--alpha", type=float, default=0.2)
    args = parser.parse_args()
    gt = load_coco(args.annotations, args.images)
    people = [a for a in gt.annotations if a.num_keypoints > 0]
    pool = [a for a in people if args.pool[0] <= a.image_id <= args.pool[1]]
    test = [a for a in people if args.test[0] <= a.image_id <= args.test[1]]
    pose = median_pose(pool, len(COCO17.keypoints))
    pred = np.stack([pose * box_frame(a)[1] + box_frame(a)[0] for a in test])
    truth = np.stack([a.keypoints for a in test])
    result = pck(pred, truth, torso_diameter(truth, COCO17), args.alpha)
    print(
        f"median pose of {len(pool)} pool people in {len(test)} test boxes: "
        f"PCK@{args.alpha:g} = {result.overall:.3f}"
    )


if __name__ == "__main__":
    main()
