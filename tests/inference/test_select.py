"""``metapose select``: diverse images by k-center / k-means, the least confident, and
pre-annotations that CVAT (COCO keypoints) and Label Studio (tasks with predictions) import and
that metapose reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.cli import main
from metapose.data.coco import load_coco
from metapose.inference.selection import ImageFeatures, k_center, k_means, select_images
from metapose.models import TopDownModel
from metapose.models.checkpoint import save_checkpoint
from tests.conftest import COCO_TINY, TINY_MODEL, require


def clusters() -> np.ndarray:
    """Three tight clusters of unequal size far apart: 30, 5 and 2 points."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = (30, 5, 2)
    return np.concatenate(
        [c + 0.1 * rng.standard_normal((n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )


def cluster_of(i: int) -> int:
    return 0 if i < 30 else 1 if i < 35 else 2


def test_diversity_covers_every_cluster() -> None:
    points = clusters()
    assert sorted(cluster_of(i) for i in k_center(points, 3)) == [0, 1, 2]
    assert sorted(cluster_of(i) for i in k_means(points, 3, np.random.default_rng(1))) == [0, 1, 2]
    assert len(set(k_means(points, 10, np.random.default_rng(1)))) == 10  # distinct images


def test_uncertain_and_random() -> None:
    features = ImageFeatures(
        (11, 12, 13, 14), np.eye(4, dtype=np.float32), np.array([0.9, 0.2, 0.5, 0.1], np.float32)
    )
    rng = np.random.default_rng(0)
    assert select_images(features, 2, "uncertain", rng) == [14, 12]
    assert sorted(select_images(features, 4, "random", rng)) == [11, 12, 13, 14]
    with pytest.raises(ValueError, match="cannot choose 5 of 4"):
        select_images(features, 5, "kcenter", rng)


def test_select_writes_pre_annotations_that_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = require(COCO_TINY / "val2017")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", TopDownModel(TINY_MODEL))
    out = tmp_path / "to_label.json"
    assert (
        main(
            [
                "select",
                str(images),
                "--k",
                "4",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "4 of 50 images to label (kcenter)" in printed
    coco = load_coco(out, images)
    tasks = json.loads(out.with_name("to_label.label_studio.json").read_text())
    assert tasks[0]["predictions"][0]["result"][0]["type"] == "keypointlabels"
    # A labeller who accepts every predicted point as it is: Label Studio exports it as labels.
    for task in tasks:
        task["annotations"] = [{"id": 1, "result": task.pop("predictions")[0]["result"]}]
    accepted = tmp_path / "accepted.json"
    accepted.write_text(json.dumps(tasks))
    studio = load_coco(accepted, images)
    assert len(coco.images) == 4 == len(coco.annotations)
    assert [i.id for i in coco.images] == [i.id for i in studio.images]
    for a, b in zip(coco.annotations, studio.annotations, strict=True):
        np.testing.assert_allclose(a.keypoints[:, :2], b.keypoints[:, :2], atol=0.01)
