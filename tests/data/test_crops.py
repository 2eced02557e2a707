import cv2
import numpy as np
import pytest

from metapose.config import ModelConfig, ResNetConfig, TopDownAugmentConfig
from metapose.data.codec import HeatmapCodec
from metapose.data.crops import (
    BOX_PADDING,
    CropParams,
    apply_affine,
    box_to_center_scale,
    crop_keypoints,
    crop_matrix,
    sample_crop_params,
)
from metapose.data.dataset import Instance, TopDownDataset, make_sample
from metapose.skeleton import COCO17

CODEC = HeatmapCodec.for_model(ModelConfig(backbone=ResNetConfig(depth=18), input_size=(96, 128)))


def simplebaseline_affine(center, scale_w, rot, out):  # noqa: ANN001, ANN201 - reference transcription
    """SimpleBaseline's get_affine_transform (three points), with scale in pixels."""

    def rotate(p, r):  # noqa: ANN001, ANN202
        sn, cs = np.sin(r), np.cos(r)
        return np.array([p[0] * cs - p[1] * sn, p[0] * sn + p[1] * cs])

    def third(a, b):  # noqa: ANN001, ANN202
        d = a - b
        return b + np.array([-d[1], d[0]])

    r = np.pi * rot / 180
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + rotate([0, -0.5 * scale_w], r)
    dst[0] = [out[0] * 0.5, out[1] * 0.5]
    dst[1] = dst[0] + np.array([0, -0.5 * out[0]])
    src[2] = third(src[0], src[1])
    dst[2] = third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def test_box_is_grown_to_the_aspect_ratio_and_padded() -> None:
    center, scale = box_to_center_scale((10, 20, 30, 100), aspect_ratio=0.75)
    assert center.tolist() == [25, 70]
    assert scale.tolist() == pytest.approx([75 * BOX_PADDING, 100 * BOX_PADDING])
    _, wide = box_to_center_scale((0, 0, 300, 100), aspect_ratio=0.75)
    assert wide.tolist() == pytest.approx([300 * BOX_PADDING, 400 * BOX_PADDING])


@pytest.mark.parametrize("rotation", [0.0, 30.0, -70.0])
def test_crop_matrix_matches_simplebaseline(rotation: float) -> None:
    params = CropParams(np.array([120.0, 90.0]), np.array([60.0, 80.0]), rotation)
    ours = crop_matrix(params, (96, 128))
    ref = simplebaseline_affine(params.center, 60.0, rotation, (96, 128))
    assert np.allclose(ours, ref, atol=1e-3)
    inv = crop_matrix(params, (96, 128), inverse=True)
    pts = np.random.default_rng(0).uniform(0, 200, (10, 2))
    assert np.allclose(apply_affine(apply_affine(pts, ours), inv), pts)


def test_flipped_crop_swaps_left_and_right() -> None:
    kp = np.zeros((17, 3), np.float32)
    kp[5] = [40, 50, 2]  # left shoulder, on the image's left
    kp[6] = [80, 50, 2]  # right shoulder
    params = CropParams(np.array([60.0, 60.0]), np.array([96.0, 128.0]), 0.0, flip=True)
    out = crop_keypoints(kp, crop_matrix(params, (96, 128)), params, COCO17)
    # The mirrored picture shows a person whose left is the original right: the point that was
    # labelled left shoulder (image left) lands on the crop's right and is now the right shoulder.
    plain = CropParams(params.center, params.scale, 0.0, flip=False)
    unflipped = crop_keypoints(kp, crop_matrix(plain, (96, 128)), plain, COCO17)
    assert out[6, 0] == pytest.approx(95 - unflipped[5, 0]) and out[6, 1] == pytest.approx(
        unflipped[5, 1]
    )
    assert out[5, 0] == pytest.approx(95 - unflipped[6, 0])
    assert out[6, 0] > out[5, 0] and out[5, 2] == 2 and out[6, 2] == 2


def dot_image(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    for x, y in points:
        cv2.circle(
            img,
            (int(round(x * 16)), int(round(y * 16))),
            2 * 16,
            (255, 255, 255),
            -1,
            cv2.LINE_AA,
            4,
        )
    return img


def centroid(gray: np.ndarray, near: np.ndarray, radius: int = 6) -> np.ndarray:
    x0, y0 = int(near[0]) - radius, int(near[1]) - radius
    patch = gray[max(y0, 0) : y0 + 2 * radius + 1, max(x0, 0) : x0 + 2 * radius + 1].astype(
        np.float64
    )
    ys, xs = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]]
    return np.array(
        [
            (xs * patch).sum() / patch.sum() + max(x0, 0),
            (ys * patch).sum() / patch.sum() + max(y0, 0),
        ]
    )


def test_sample_keypoints_follow_the_image_content_under_augmentation() -> None:
    rng = np.random.default_rng(5)
    # Dots on a 3x2 grid, 30 px apart, so no dot falls in another's centroid window.
    grid = np.array([[70, 70], [100, 70], [130, 70], [70, 110], [100, 110], [130, 110]], float)
    pts = grid + rng.uniform(-3, 3, grid.shape)
    image = dot_image(pts, (200, 200))
    kp = np.zeros((17, 3), np.float32)
    kp[[0, 5, 6, 9, 11, 15], :2] = pts
    kp[[0, 5, 6, 9, 11, 15], 2] = 2
    inst = Instance(image=image, box=(50, 50, 100, 100), keypoints=kp)
    aug = TopDownAugmentConfig(rotation_prob=1.0, flip_prob=0.5)
    for seed in range(4):
        s = make_sample(image, inst, CODEC, augment=aug, rng=np.random.default_rng(seed))
        crop = CODEC.normalization.invert(s.image.numpy())[:, :, 0]
        for x, y, v in s.keypoints.numpy():
            if v > 0 and 6 < x < 90 and 6 < y < 122:
                assert np.linalg.norm(centroid(crop, np.array([x, y])) - [x, y]) < 0.5


def test_augmentation_parameters_stay_in_their_ranges() -> None:
    aug = TopDownAugmentConfig()
    kp = np.zeros((17, 3))
    rots, scales = [], []
    for seed in range(300):
        p = sample_crop_params((0, 0, 75, 100), kp, 0.75, aug, np.random.default_rng(seed))
        rots.append(p.rotation)
        scales.append(p.scale[1] / (100 * BOX_PADDING))
    rots_a = np.array(rots)
    assert np.abs(rots_a).max() <= 80 and 0.3 < (rots_a == 0).mean() < 0.5
    assert min(scales) >= 0.7 - 1e-9 and max(scales) <= 1.3 + 1e-9


def test_dataset_is_deterministic_per_seed_epoch_and_index() -> None:
    image = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    kp = np.zeros((17, 3), np.float32)
    kp[0] = [50, 30, 2]
    inst = [Instance(image=image, box=(20, 10, 60, 100), keypoints=kp)] * 2
    ds = TopDownDataset(inst, CODEC, augment=TopDownAugmentConfig(), seed=7)
    a, b = ds[0], ds[0]
    assert np.array_equal(a.image.numpy(), b.image.numpy())
    ds.set_epoch(1)
    assert not np.array_equal(a.image.numpy(), ds[0].image.numpy())
    plain = TopDownDataset(inst, CODEC)
    assert plain[0].rotation == 0.0 and not plain[0].flip


def test_a_dataset_without_targets_cuts_the_same_crops_and_encodes_nothing() -> None:
    image = np.random.default_rng(1).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    kp = np.zeros((17, 3), np.float32)
    kp[0] = [50, 30, 2]
    inst = [Instance(image=image, box=(20, 10, 60, 100), keypoints=kp)]
    with_targets = TopDownDataset(inst, CODEC)[0]
    without = TopDownDataset(inst, CODEC, targets=False)[0]
    assert np.array_equal(with_targets.image.numpy(), without.image.numpy())
    assert np.array_equal(with_targets.center.numpy(), without.center.numpy())
    assert np.array_equal(with_targets.keypoints.numpy(), without.keypoints.numpy())
    assert with_targets.heatmaps.abs().sum() > 0
    assert without.heatmaps.shape == (17, 0, 0) and not without.target_weight.any()


def test_preload_decodes_each_image_file_once_with_progress(tmp_path) -> None:  # noqa: ANN001
    from dataclasses import replace

    from tests.helpers import RecordingProgress, random_instances

    instances = []
    for i, person in enumerate(random_instances(3)):
        assert isinstance(person.image, np.ndarray)
        path = tmp_path / f"im{i}.png"
        cv2.imwrite(str(path), person.image[:, :, ::-1])
        instances.append(replace(person, image=path))
    instances.append(replace(instances[0], annotation_id=9))  # a second person of image 0
    dataset = TopDownDataset(instances, CODEC, cache_images=True)
    progress = RecordingProgress()
    assert dataset.preload(progress) == 3
    assert progress.finished() == [("cache images", 3)]
    for path in tmp_path.glob("im*.png"):
        path.unlink()  # served from the cache from now on
    assert np.array_equal(dataset.load_image(instances[1]), random_instances(3)[1].image)
    with pytest.raises(ValueError, match="cache_images"):
        TopDownDataset(instances, CODEC).preload()
