import numpy as np
import pytest

from metapose.config import CodecConfig, ModelConfig, ResNetConfig, replace
from metapose.data.codec import HeatmapCodec, argmax_2d, flip_back
from metapose.data.crops import CropParams, apply_affine, crop_matrix
from metapose.skeleton import COCO17

MODEL = ModelConfig(backbone=ResNetConfig(depth=18), input_size=(192, 256))


def random_keypoints(rng: np.random.Generator, n: int, margin: float) -> np.ndarray:
    """Keypoints at least ``margin`` heatmap pixels inside the heatmap."""
    codec = HeatmapCodec.for_model(MODEL)
    w, h = codec.heatmap_size
    kp = np.zeros((n, 3))
    kp[:, 0] = rng.uniform(margin, w - 1 - margin, n) * codec.stride
    kp[:, 1] = rng.uniform(margin, h - 1 - margin, n) * codec.stride
    kp[:, 2] = 2
    return kp


def test_sigma_scales_with_heatmap_width() -> None:
    assert HeatmapCodec.for_model(MODEL).sigma == 2.0
    small = HeatmapCodec.for_model(
        ModelConfig(backbone=ResNetConfig(depth=18), input_size=(96, 128))
    )
    assert small.heatmap_size == (24, 32) and small.sigma == 1.0


def test_targets_peak_at_one_and_weight_unlabelled_or_outside() -> None:
    codec = HeatmapCodec.for_model(MODEL)
    kp = np.array([[96.0, 128.0, 2], [50.0, 50.0, 0], [-40.0, 20.0, 2], [20.0, 20.0, 1]])
    enc = codec.encode(kp)
    assert enc.heatmaps.shape == (4, 64, 48)
    assert enc.target_weight.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert enc.heatmaps[0].max() == pytest.approx(1.0) and enc.heatmaps[0, 32, 24] == pytest.approx(
        1.0
    )
    assert enc.heatmaps[1].max() == 0 and enc.heatmaps[2].max() == 0


def test_round_trip_within_a_quarter_heatmap_pixel() -> None:
    """Bound: |error| <= 0.25 heatmap px per axis (stride/4 crop px) for peaks off the border."""
    codec = HeatmapCodec.for_model(MODEL)
    kp = random_keypoints(np.random.default_rng(0), 2000, margin=0.5)
    dec = codec.decode(codec.encode(kp).heatmaps[None])
    err = np.abs(dec.coords[0] - kp[:, :2]) / codec.stride
    assert err.max() <= 0.25 + 1e-4
    assert err.mean() < 0.15  # the offset really helps: plain argmax would average 0.25


def test_dark_is_tighter_than_the_quarter_offset() -> None:
    quarter = HeatmapCodec.for_model(MODEL)
    dark = HeatmapCodec.for_model(replace(MODEL, codec=CodecConfig(dark=True)))
    kp = random_keypoints(np.random.default_rng(1), 500, margin=4)
    hm = quarter.encode(kp).heatmaps[None]
    err_q = np.abs(quarter.decode(hm).coords[0] - kp[:, :2]) / quarter.stride
    err_d = np.abs(dark.decode(hm).coords[0] - kp[:, :2]) / dark.stride
    assert err_d.max() < 0.01 < err_q.max()


def test_round_trip_through_the_crop_affine_in_image_pixels() -> None:
    """Image -> rotated crop -> heatmap -> crop -> image: within stride/4 * sqrt(2) * box/input."""
    codec = HeatmapCodec.for_model(MODEL)
    rng = np.random.default_rng(2)
    params = CropParams(np.array([300.0, 200.0]), np.array([150.0, 200.0]), rotation=25.0)
    fwd = crop_matrix(params, codec.input_size)
    inv = crop_matrix(params, codec.input_size, inverse=True)
    crop_kp = random_keypoints(rng, 300, margin=0.5)
    image_kp = apply_affine(crop_kp[:, :2], inv)
    kp = np.concatenate([apply_affine(image_kp, fwd), crop_kp[:, 2:]], axis=1)
    decoded = apply_affine(
        codec.decode(codec.encode(kp).heatmaps[None]).coords[0].astype(np.float64), inv
    )
    zoom = params.scale[0] / codec.input_size[0]
    bound = 0.25 * codec.stride * np.sqrt(2) * zoom
    assert np.linalg.norm(decoded - image_kp, axis=1).max() <= bound + 1e-3


def test_argmax_score_is_the_peak_value() -> None:
    hm = np.zeros((1, 2, 4, 5), np.float32)
    hm[0, 0, 1, 3] = 0.7
    hm[0, 1, 2, 0] = 0.2
    coords, scores = argmax_2d(hm)
    assert coords[0].tolist() == [[3, 1], [0, 2]] and scores[0].tolist() == pytest.approx(
        [0.7, 0.2]
    )


def test_flip_back_swaps_sides_mirrors_and_shifts() -> None:
    rng = np.random.default_rng(3)
    hm = rng.random((2, 17, 8, 6)).astype(np.float32)
    back = flip_back(hm, COCO17.flip_index, shift=False)
    assert np.array_equal(back[:, 5], hm[:, 6, :, ::-1])  # left shoulder <- mirrored right shoulder
    assert np.array_equal(back[:, 0], hm[:, 0, :, ::-1])
    shifted = flip_back(hm, COCO17.flip_index)
    assert np.array_equal(shifted[..., 1:], back[..., :-1])
    assert np.array_equal(flip_back(back, COCO17.flip_index, shift=False), hm)


UDP = replace(MODEL, codec=CodecConfig(crop="udp", encoding="udp", dark=True))


def test_udp_round_trip_with_dark_is_sub_hundredth_pixel() -> None:
    codec = HeatmapCodec.for_model(UDP)
    assert codec.udp and codec.heatmap_per_input == pytest.approx((47 / 191, 63 / 255))
    kp = random_keypoints(np.random.default_rng(4), 500, margin=4)
    dec = codec.decode(codec.encode(kp).heatmaps[None])
    err = np.abs(dec.coords[0] - kp[:, :2]) * np.array(codec.heatmap_per_input)
    assert err.max() < 0.01


def test_udp_crop_maps_the_box_onto_the_first_and_last_pixel_centres() -> None:
    codec = HeatmapCodec.for_model(UDP)
    w, h = codec.input_size
    params = CropParams(np.array([100.0, 80.0]), np.array([60.0, 80.0]))
    corners = np.array([[70.0, 40.0], [130.0, 120.0], [100.0, 80.0]])
    mapped = apply_affine(corners, codec.crop_matrix(params))
    np.testing.assert_allclose(mapped, [[0, 0], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]])
    paddle = HeatmapCodec.for_model(replace(MODEL, codec=CodecConfig(crop="udp")))
    np.testing.assert_allclose(apply_affine(corners, paddle.crop_matrix(params)), mapped)
    plain = HeatmapCodec.for_model(MODEL)
    np.testing.assert_allclose(
        apply_affine(corners[2:], plain.crop_matrix(params)), [[w / 2, h / 2]]
    )


@pytest.mark.parametrize(("config", "exact"), [(UDP, True), (MODEL, False)])
def test_udp_flip_back_is_exact_and_the_shifted_one_is_not(
    config: ModelConfig, exact: bool
) -> None:
    """Targets of the mirrored crop, flipped back, equal the targets of the crop (UDP only)."""
    codec = HeatmapCodec.for_model(config)
    kp = random_keypoints(np.random.default_rng(5), 17, margin=3)
    mirrored = kp[COCO17.flip_index].copy()
    mirrored[:, 0] = codec.input_size[0] - 1 - mirrored[:, 0]
    back = codec.flip_back(codec.encode(mirrored).heatmaps[None], COCO17.flip_index)[0]
    diff = float(np.abs(back - codec.encode(kp).heatmaps).max())
    assert (diff < 1e-5) == exact
