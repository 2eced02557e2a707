import numpy as np
import pytest

from metapose.data.dataset import TopDownDataset
from metapose.inference.crop_runner import predict
from metapose.inference.heatmaps import heatmaps_with_flip
from metapose.inference.postprocess import PosePrediction
from metapose.skeleton import COCO17
from tests.helpers import TINY_CODEC, random_instances


def test_perfect_heatmaps_decode_to_the_labels_in_image_pixels() -> None:
    instances = random_instances(5, seed=1)
    dataset = TopDownDataset(instances, TINY_CODEC)
    targets = np.stack([dataset[i].heatmaps.numpy() for i in range(len(dataset))])
    calls = iter([targets[:3], targets[3:]])
    preds = predict(lambda images: next(calls), dataset, flip=False, batch_size=3)
    assert [p.image_id for p in preds] == [1, 2, 3, 4, 5]
    for i, (inst, pred) in enumerate(zip(instances, preds, strict=True)):
        box_w = inst.box[2] * 1.25 if inst.box[2] / inst.box[3] > 0.5 else inst.box[3] * 0.5 * 1.25
        bound = 0.25 * TINY_CODEC.stride * np.sqrt(2) * box_w / TINY_CODEC.input_size[0]
        # Peaks off the heatmap's border pixels (where the quarter offset cannot look both ways).
        mu = dataset[i].keypoints.numpy()[:, :2] / TINY_CODEC.stride
        w, h = TINY_CODEC.heatmap_size
        inside = (
            (mu[:, 0] >= 0.5) & (mu[:, 0] <= w - 1.5) & (mu[:, 1] >= 0.5) & (mu[:, 1] <= h - 1.5)
        )
        assert inside.sum() >= 10
        err = np.linalg.norm(pred.keypoints[:, :2] - inst.keypoints[:, :2], axis=1)
        assert err[inside].max() <= bound + 1e-3
        assert np.array_equal(pred.keypoints[:, 2], targets[i].reshape(17, -1).max(axis=1))


def test_flip_test_averages_with_the_mirrored_prediction() -> None:
    images = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    seen = []

    def fn(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return np.ones((2, 17, 4, 4), np.float32) * (2.0 if len(seen) == 2 else 0.0)

    out = heatmaps_with_flip(fn, images, COCO17.flip_index, TINY_CODEC)
    assert np.array_equal(seen[1], images[..., ::-1])
    assert np.allclose(out, 1.0)


def test_instance_score_uses_confident_keypoints_only() -> None:
    kp = np.zeros((4, 3), np.float32)
    kp[:, 2] = [0.9, 0.1, 0.5, 0.0]
    assert PosePrediction(1, 1, kp, 0.8, 1.0).score == pytest.approx(0.8 * 0.7)
    assert PosePrediction(1, 1, np.zeros((4, 3)), 1.0, 1.0).score == 0.0
