"""Task augmentation: keypoints follow the image content (dot images), determinism, identity,
keypoints leaving the crop, fold-free elastic fields, config validation and the Fig. 2 helper."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metapose.config import ConfigError, from_dict, to_dict
from metapose.config.data import (
    STYLES,
    AffineWarpConfig,
    ElasticWarpConfig,
    PerspectiveWarpConfig,
    TaskAugmentConfig,
)
from metapose.data.augment import (
    MAX_FIELD_LIPSCHITZ,
    TaskAugmenter,
    field_lipschitz,
    invert_displacement,
    sample_elastic,
    sample_field,
    warp,
)
from metapose.data.augment_figure import GAP, augmentation_panels, figure2, tile_panels

WIDTH, HEIGHT = 96, 128  # a small model input (W, H)
DOT_SIGMA = 1.2  # pixels: a dot small against the warps' scale of variation
DOT_RADIUS = 6  # centroid window half-size: ~5 dot sigmas, well under the dot spacing
GRID = (4, 5)  # dots per row, per column: >= 18 px apart after jitter
TOLERANCE = 0.5  # pixels, the brief's bound

# Strong settings so that the dot test is demanding: zoom, shear and rotation well beyond the
# defaults, and an elastic field at the fold-free limit.
STRONG = TaskAugmentConfig(
    styles=STYLES,
    affine=AffineWarpConfig(scale=(0.8, 1.25), rotation=35.0, shear=20.0, translate=0.08),
    elastic=ElasticWarpConfig(alpha=400.0, sigma=12.0),
    perspective=PerspectiveWarpConfig(scale=0.1),
)
ZERO = TaskAugmentConfig(
    styles=STYLES,
    affine=AffineWarpConfig(scale=(1.0, 1.0), rotation=0.0, shear=0.0, translate=0.0),
    elastic=ElasticWarpConfig(alpha=0.0),
    perspective=PerspectiveWarpConfig(scale=0.0),
)


def dot_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bright Gaussian dots at random sub-pixel positions on black, and their keypoints."""
    cols, rows = GRID
    gx, gy = np.meshgrid(
        (np.arange(cols) + 0.5) * WIDTH / cols, (np.arange(rows) + 0.5) * HEIGHT / rows
    )
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.uniform(-3.0, 3.0, (cols * rows, 2))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    intensity = np.zeros((HEIGHT, WIDTH))
    for x, y in centres:
        intensity += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * DOT_SIGMA**2))
    grey = np.clip(np.rint(255 * intensity), 0, 255).astype(np.uint8)
    flags = rng.choice([1.0, 2.0], size=len(centres))
    return np.repeat(grey[..., None], 3, axis=2), np.column_stack([centres, flags]).astype(
        np.float32
    )


def dot_errors(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Distance from each labelled keypoint, clear of the border, to its dot's centroid."""
    grey = image[..., 0].astype(np.float64)
    errors = []
    for x, y, flag in keypoints:
        cx, cy = int(round(x)), int(round(y))
        if flag == 0 or not (
            DOT_RADIUS < cx < WIDTH - 1 - DOT_RADIUS and DOT_RADIUS < cy < HEIGHT - 1 - DOT_RADIUS
        ):
            continue
        window = grey[cy - DOT_RADIUS : cy + DOT_RADIUS + 1, cx - DOT_RADIUS : cx + DOT_RADIUS + 1]
        wy, wx = np.mgrid[
            cy - DOT_RADIUS : cy + DOT_RADIUS + 1, cx - DOT_RADIUS : cx + DOT_RADIUS + 1
        ]
        mass = window.sum()
        assert mass > 0, f"no dot near keypoint ({x:.2f}, {y:.2f})"
        centroid = np.array([(wx * window).sum(), (wy * window).sum()]) / mass
        errors.append(float(np.hypot(*(centroid - (x, y)))))
    return np.asarray(errors)


@pytest.mark.parametrize("style", ["affine", "elastic", "perspective", "composed"])
def test_keypoints_follow_their_dots(style: str) -> None:
    augmenter = TaskAugmenter(STRONG)
    checked = 0
    for seed in range(6):
        image, keypoints = dot_image(np.random.default_rng([seed, 1]))
        out = augmenter.augment(image, keypoints, np.random.default_rng(seed), style=style)
        assert out.warps == {"composed": ("affine", "perspective", "elastic")}.get(style, (style,))
        errors = dot_errors(out.image, out.keypoints)
        assert errors.size and errors.max() < TOLERANCE, (seed, errors.max())
        checked += errors.size
    assert checked >= 6 * np.prod(GRID) // 2  # most dots stayed in view and were checked


def test_dot_check_catches_a_one_pixel_error() -> None:
    """The check has teeth: the first-order inverse x - d(x) misses some dots by > 0.5 px."""
    worst = 0.0
    for seed in range(4):
        image, keypoints = dot_image(np.random.default_rng([seed, 1]))
        field = sample_elastic(STRONG.elastic, (WIDTH, HEIGHT), np.random.default_rng(seed))
        warped, exact = warp(image, keypoints, None, field)
        naive = exact.copy()
        naive[:, :2] = invert_displacement(field, keypoints[:, :2], max_iterations=1)
        naive[exact[:, 2] == 0] = 0.0
        assert dot_errors(warped, exact).max() < TOLERANCE
        worst = max(worst, float(dot_errors(warped, naive).max()))
    assert worst > TOLERANCE


def test_inverse_solves_the_backward_map() -> None:
    rng = np.random.default_rng(3)
    field = sample_elastic(STRONG.elastic, (WIDTH, HEIGHT), rng)
    points = rng.uniform((0, 0), (WIDTH - 1, HEIGHT - 1), (50, 2))
    moved = invert_displacement(field, points)
    # y + d(y) = x, with d sampled bilinearly (what remap shows at y).
    np.testing.assert_allclose(moved + sample_field(field, moved), points, atol=1e-3)


@pytest.mark.parametrize("style", STYLES)
def test_same_seed_same_bytes(style: str) -> None:
    image, keypoints = dot_image(np.random.default_rng(0))
    augmenter = TaskAugmenter(TaskAugmentConfig())
    a = augmenter.augment(image, keypoints, np.random.default_rng(11), style=style)
    b = augmenter.augment(image, keypoints, np.random.default_rng(11), style=style)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.keypoints.tobytes() == b.keypoints.tobytes()
    assert a.warps == b.warps
    c = augmenter.augment(image, keypoints, np.random.default_rng(12), style=style)
    assert (c.image.tobytes() == a.image.tobytes()) == (style == "none")


def test_drawn_style_is_deterministic_too() -> None:
    image, keypoints = dot_image(np.random.default_rng(0))
    augmenter = TaskAugmenter(TaskAugmentConfig(styles=STYLES))
    runs = [augmenter.augment(image, keypoints, np.random.default_rng(5)) for _ in range(2)]
    assert runs[0].image.tobytes() == runs[1].image.tobytes()
    assert runs[0].warps == runs[1].warps


@pytest.mark.parametrize("style", STYLES)
def test_zero_strength_is_identity(style: str) -> None:
    image, keypoints = dot_image(np.random.default_rng(2))
    keypoints[::4, :2] = 0.0
    keypoints[::4, 2] = 0.0  # unlabelled stay (0, 0, 0)
    out = TaskAugmenter(ZERO).augment(image, keypoints, np.random.default_rng(4), style=style)
    np.testing.assert_array_equal(out.image, image)
    np.testing.assert_allclose(out.keypoints, keypoints, atol=1e-4)
    assert out.image is not image  # never the caller's array


def test_keypoints_leaving_the_crop_are_zeroed() -> None:
    zoom = 2.0
    cfg = replace(
        ZERO, affine=AffineWarpConfig(scale=(zoom, zoom), rotation=0.0, shear=0.0, translate=0.0)
    )
    centre = np.array([(WIDTH - 1) / 2, (HEIGHT - 1) / 2])
    keypoints = np.array(
        [
            [2.0, 3.0, 2.0],  # corner: leaves
            [WIDTH - 2.0, HEIGHT / 2, 1.0],  # right edge: leaves
            [centre[0] + 5.25, centre[1] - 7.5, 2.0],  # near the centre: stays, visible
            [centre[0] - 10.0, centre[1] + 20.0, 1.0],  # stays, occluded
            [0.0, 0.0, 0.0],  # unlabelled
        ],
        dtype=np.float32,
    )
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    out = TaskAugmenter(cfg).augment(image, keypoints, np.random.default_rng(0), style="affine")
    np.testing.assert_array_equal(out.keypoints[[0, 1, 4]], 0.0)
    np.testing.assert_allclose(
        out.keypoints[2:4, :2], centre + zoom * (keypoints[2:4, :2] - centre), atol=1e-4
    )
    np.testing.assert_array_equal(out.keypoints[2:4, 2], [2.0, 1.0])


def test_elastic_keypoint_pushed_out_is_zeroed() -> None:
    # A constant backward shift of +10 px in x moves content 10 px to the left.
    field = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    field[..., 0] = 10.0
    keypoints = np.array([[5.0, 50.0, 2.0], [50.0, 50.0, 2.0]], np.float32)
    _, out = warp(np.zeros((HEIGHT, WIDTH, 3), np.uint8), keypoints, None, field)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], [40.0, 50.0, 2.0], atol=1e-3)


def test_elastic_field_is_fold_free_and_scales_with_alpha() -> None:
    size = (WIDTH, HEIGHT)
    wild = sample_elastic(
        ElasticWarpConfig(alpha=5000.0, sigma=6.0), size, np.random.default_rng(0)
    )
    assert field_lipschitz(wild) <= MAX_FIELD_LIPSCHITZ + 1e-4
    # The map y -> y + d(y) keeps orientation everywhere: det(I + grad d) > 0.
    ddx_dx = np.diff(wild[..., 0], axis=1)[:-1]
    ddy_dx = np.diff(wild[..., 1], axis=1)[:-1]
    ddx_dy = np.diff(wild[..., 0], axis=0)[:, :-1]
    ddy_dy = np.diff(wild[..., 1], axis=0)[:, :-1]
    assert ((1 + ddx_dx) * (1 + ddy_dy) - ddx_dy * ddy_dx).min() > 0
    gentle = ElasticWarpConfig(alpha=20.0, sigma=12.0)
    one = sample_elastic(gentle, size, np.random.default_rng(1))
    two = sample_elastic(replace(gentle, alpha=40.0), size, np.random.default_rng(1))
    assert 0 < field_lipschitz(two) < MAX_FIELD_LIPSCHITZ  # not damped
    np.testing.assert_allclose(two, 2 * one, rtol=1e-5, atol=1e-6)


def test_probability_zero_disables_a_warp() -> None:
    cfg = replace(STRONG, affine=replace(STRONG.affine, prob=0.0))
    image, keypoints = dot_image(np.random.default_rng(0))
    out = TaskAugmenter(cfg).augment(image, keypoints, np.random.default_rng(0), style="composed")
    assert out.warps == ("perspective", "elastic")
    out = TaskAugmenter(cfg).augment(image, keypoints, np.random.default_rng(0), style="affine")
    assert out.warps == ()
    np.testing.assert_array_equal(out.image, image)


def test_sample_style_follows_weights() -> None:
    cfg = TaskAugmentConfig(styles=("affine", "elastic", "none"), style_weights=(1.0, 3.0, 0.0))
    augmenter = TaskAugmenter(cfg)
    rng = np.random.default_rng(0)
    drawn = [augmenter.sample_style(rng) for _ in range(4000)]
    assert set(drawn) == {"affine", "elastic"}
    assert abs(drawn.count("elastic") / len(drawn) - 0.75) < 0.03
    assert TaskAugmenter(TaskAugmentConfig()).styles == ("affine", "elastic", "perspective")


@pytest.mark.parametrize(
    "make",
    [
        lambda: AffineWarpConfig(scale=(1.2, 0.8)),
        lambda: AffineWarpConfig(prob=1.5),
        lambda: AffineWarpConfig(shear=90.0),
        lambda: ElasticWarpConfig(sigma=0.0),
        lambda: ElasticWarpConfig(alpha=-1.0),
        lambda: PerspectiveWarpConfig(scale=0.3),
        lambda: TaskAugmentConfig(styles=()),
        lambda: TaskAugmentConfig(styles=("affine", "blur")),  # type: ignore[arg-type]
        lambda: TaskAugmentConfig(styles=("affine", "affine")),
        lambda: TaskAugmentConfig(style_weights=(1.0, 2.0)),
        lambda: TaskAugmentConfig(style_weights=(0.0, 0.0, 0.0)),
    ],
)
def test_config_rejects_bad_values(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        make()


def test_bad_input_is_refused() -> None:
    augmenter = TaskAugmenter(TaskAugmentConfig())
    rng = np.random.default_rng(0)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    with pytest.raises(ValueError, match="keypoints"):
        augmenter.augment(image, np.zeros((17, 2), np.float32), rng)
    with pytest.raises(ValueError, match="uint8"):
        augmenter.augment(image.astype(np.float32), np.zeros((17, 3), np.float32), rng)
    with pytest.raises(ValueError, match="style"):
        augmenter.augment(image, np.zeros((17, 3), np.float32), rng, style="blur")


def test_figure2_shows_each_style() -> None:
    image, keypoints = dot_image(np.random.default_rng(0))
    augmenter = TaskAugmenter(TaskAugmentConfig())
    panels = augmentation_panels(image, keypoints, augmenter, np.random.default_rng(0), per_style=2)
    assert [p.title for p in panels] == ["original"] + [
        f"{s} #{j}" for s in augmenter.styles for j in (1, 2)
    ]
    page = figure2(image, keypoints, augmenter, np.random.default_rng(0), per_style=2, zoom=2)
    single = tile_panels(panels[:1], cols=1, zoom=2)
    assert page.dtype == np.uint8 and page.ndim == 3 and page.shape[2] == 3
    # 4 columns (original + 3 styles) by 2 rows of cells the size of one panel.
    assert page.shape[:2] == (2 * single.shape[0] + GAP, 4 * single.shape[1] + 3 * GAP)
    # Keypoints are drawn in colour on the grey dot image.
    assert (single[..., 0] != single[..., 2]).any()


def test_config_loads_from_a_mapping() -> None:
    cfg = from_dict(
        TaskAugmentConfig,
        {"styles": ["affine", "composed"], "style_weights": [1, 3], "elastic": {"alpha": 100}},
    )
    assert cfg.styles == ("affine", "composed") and cfg.style_weights == (1.0, 3.0)
    assert cfg.elastic == ElasticWarpConfig(alpha=100.0)
    assert from_dict(TaskAugmentConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="elastic.strength"):
        from_dict(TaskAugmentConfig, {"elastic": {"strength": 1.0}})
    with pytest.raises(ConfigError, match="styles"):
        from_dict(TaskAugmentConfig, {"styles": ["blur"]})


def test_no_keypoints() -> None:
    image, _ = dot_image(np.random.default_rng(0))
    out = TaskAugmenter(STRONG).augment(
        image, np.zeros((0, 3), np.float32), np.random.default_rng(0), style="composed"
    )
    assert out.keypoints.shape == (0, 3) and out.image.shape == image.shape
