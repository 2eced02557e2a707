"""A check of labels against a model: are left and right swapped?

A label file whose keypoint names do not say what its columns hold (a tool's own order, a
mirrored convention) trains silently on swapped sides. A pretrained model tells left from right
well enough to notice: for each labelled person, the OKS of the model's pose with the labels is
compared with its OKS with the labels mirrored (left and right exchanged). A person whose
mirrored labels fit clearly better counts as swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from metapose.data.coco import CocoDataset
from metapose.data.dataset import instances_from_coco
from metapose.data.oks import oks
from metapose.inference.estimators import PoseEstimator
from metapose.inference.predict import PredictOptions, predict_instances

# How much better (in OKS, 0-1) mirrored labels must fit for a person to count as swapped: well
# above the jitter of a pose that fits either way (a person seen from the side).
SWAP_MARGIN = 0.1


@dataclass(frozen=True)
class SideCheck:
    people: int  # labelled people with at least one left/right pair labelled
    swapped_image_ids: tuple[int, ...]  # the images of those whose labels fit better mirrored

    @property
    def swapped(self) -> int:
        return len(self.swapped_image_ids)

    @property
    def mostly_swapped(self) -> bool:
        """More than half of the people fit better mirrored: the labels' sides look exchanged."""
        return self.people > 0 and 2 * self.swapped > self.people


def check_sides(
    estimator: PoseEstimator,
    data: CocoDataset,
    options: PredictOptions | None = None,
    *,
    margin: float = SWAP_MARGIN,
) -> SideCheck:
    """Compare each labelled person of ``data`` with ``estimator``'s pose in its box."""
    instances = instances_from_coco(data)
    predictions = predict_instances(estimator, instances, options or PredictOptions())
    by_ann = {a.id: a for a in data.annotations}
    skeleton = data.skeleton
    pairs = [i for pair in skeleton.flip_pairs for i in pair]
    sigmas = skeleton.sigmas_array()
    people, swapped = 0, []
    for p in predictions:
        ann = by_ann[p.annotation_id]
        if not (ann.keypoints[pairs, 2] > 0).any():
            continue
        people += 1
        as_labelled = oks(ann.keypoints, p.keypoints, ann.area, sigmas)
        mirrored = oks(ann.keypoints[skeleton.flip_index], p.keypoints, ann.area, sigmas)
        if mirrored > as_labelled + margin:
            swapped.append(ann.image_id)
    return SideCheck(people, tuple(swapped))
