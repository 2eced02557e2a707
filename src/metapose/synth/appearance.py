"""Appearance styles: what people and rooms are made of, and how the camera turns it into pixels.

A style supplies per-person looks (skin, hair, clothing with colours and textures, face
features), the materials of floors, walls and furniture, the light, the native resolution of the
sensor, and the finishing step from the rendered buffer to an 8-bit RGB image. Two styles ship:

* :class:`RGBStyle`: colour photographs. Skin tones span the Fitzpatrick range (sRGB values
  after Chardon et al., "Skin colour typology", 1991), clothing colours favour the muted and dark
  garments that dominate street photographs, with stripes, checks and fabric noise.
* :class:`ThermalStyle`: an uncooled microbolometer (long-wave infrared). The renderer carries one
  channel, a surface temperature in deg C: skin hottest, clothing cooler by its insulation
  (ISO 9920's clothing insulation idea, as a share of the skin-to-air difference), hair cool, a
  cool room with a few warm appliances. The finish models the sensor: low native resolution,
  optical blur, fixed-pattern column and gain noise, temporal noise (NETD), automatic gain
  control, an optional detail enhancement, a palette (white-hot, black-hot, ironbow) and
  upscaling to the output size. No colour texture survives.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from metapose.synth.body import Clothing
from metapose.synth.draws import weighted_choice, weighted_index
from metapose.synth.raster import CHECKS, NOISY, STRIPES, Face, Light, Pattern

MIN_SCALE_STEPS = 8  # native_scale() rounds only when gcd(W, H) allows this many steps

# Palette slots of a person's look.
SKIN, HAIR, EYE, LIPS, TOP, TOP_ALT, BOTTOM, BOTTOM_ALT, SHOES, SHOES_ALT = range(10)
PALETTE_SIZE = 10


class PersonLook(NamedTuple):
    """How one person is dressed and coloured.

    ``sleeve`` and ``legs`` measure garments along a limb: 0 bare, 1 to the elbow / knee, 2 to
    the wrist / ankle. ``palette`` is ``(PALETTE_SIZE, C)`` float32 in the style's units.
    """

    palette: np.ndarray
    top_pattern: Pattern
    bottom_pattern: Pattern
    sleeve: float
    legs: float
    long_hair: bool
    face: Face
    barefoot: bool
    top_bulk: float = 0.0  # metres of girth the top adds
    bottom_bulk: float = 0.0

    def clothing(self) -> Clothing:
        return Clothing(self.top_bulk, self.bottom_bulk, self.sleeve, self.legs, self.long_hair)


class SurfaceLook(NamedTuple):
    """A background material: two colours and a procedural pattern (see background.py)."""

    base: np.ndarray
    alt: np.ndarray
    pattern: str  # plain, noise, tiles, planks, bricks, stripes, checks, skyline
    period: float  # metres


SURFACE_KINDS = (
    "floor",
    "wall",
    "ground",
    "sky",
    "skyline",
    "furniture",
    "appliance",
    "window",
    "decor",
)


class AppearanceStyle(Protocol):
    """What a domain's pixels look like; see the module docstring."""

    @property
    def name(self) -> str: ...

    @property
    def channels(self) -> int:
        """Channels the renderer carries (3: RGB albedo, 1: temperature)."""
        ...

    @property
    def outdoor_share(self) -> float:
        """The share of scenes outdoors."""
        ...

    def resolution(self, rng: np.random.Generator) -> float:
        """The sensor's native sampling relative to the output image (1 = full resolution)."""
        ...

    def person(self, rng: np.random.Generator) -> PersonLook: ...

    def surface(self, kind: str, rng: np.random.Generator) -> SurfaceLook: ...

    def light(self, rng: np.random.Generator) -> Light:
        """A light whose direction is in the world frame (y up)."""
        ...

    def finish(
        self, buffer: np.ndarray, rng: np.random.Generator, size: tuple[int, int], scale: float
    ) -> np.ndarray:
        """``(C, h, w)`` float32 render at ``scale`` -> ``(H, W, 3)`` uint8 RGB, ``size=(W, H)``.

        May overwrite ``buffer``.
        """
        ...


def upsample(image: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """Resample a render made at ``scale`` to the output ``size = (W, H)``.

    Output pixel ``x`` looks up native ``(x + 0.5) * scale - 0.5``: the pixel-centre convention
    of :meth:`Camera.resized`, so labels projected with the output camera stay exact.
    """
    h, w = image.shape[:2]
    if (w, h) == size and scale == 1.0:
        return image
    if abs(w - size[0] * scale) < 1e-6 and abs(h - size[1] * scale) < 1e-6:
        # Whole native pixels: cv2.resize uses the same pixel-centre mapping, and is faster.
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    offset = 0.5 * scale - 0.5
    matrix = np.array([[scale, 0.0, offset], [0.0, scale, offset]])
    return cv2.warpAffine(
        image,
        matrix,
        size,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def native_scale(scale: float, size: tuple[int, int]) -> float:
    """``scale`` rounded so that the native grid has whole pixels along both sides of ``size``.

    With ``g = gcd(W, H)`` the scale becomes a multiple of ``1 / g`` (at least ``1 / g``); for
    sizes with a small ``g`` it is left as it is and resampling takes the slower exact path.
    """
    step = math.gcd(*size)
    if scale >= 1.0 or step < MIN_SCALE_STEPS:
        return scale
    return max(1, round(scale * step)) / step


def _rgb(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32) / 255.0


def _palette(*colours: tuple[int, int, int]) -> np.ndarray:
    """``(N, 3)`` float32 colours in [0, 1] from 8-bit RGB triples."""
    return np.array(colours, dtype=np.float32) / 255.0


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


# ----------------------------------------------------------------------------------- RGB

SKIN_TONES = _palette(
    (255, 224, 200),
    (241, 194, 160),
    (224, 172, 128),
    (198, 134, 90),
    (160, 100, 62),
    (118, 72, 42),
    (82, 50, 32),
)
HAIR_COLOURS = _palette(
    (20, 16, 14),
    (45, 30, 22),
    (80, 55, 35),
    (120, 85, 50),
    (185, 150, 95),
    (140, 60, 30),
    (150, 150, 150),
    (220, 215, 205),
)
HAIR_WEIGHTS = (0.34, 0.24, 0.16, 0.08, 0.07, 0.04, 0.05, 0.02)
EYE_COLOUR = _rgb(38, 28, 24)
NEUTRAL_GARMENTS = _palette(
    (25, 25, 28),
    (45, 45, 50),
    (90, 90, 95),
    (160, 160, 160),
    (235, 235, 230),
    (30, 40, 70),
    (60, 80, 120),
    (180, 165, 135),
    (95, 75, 55),
    (60, 70, 45),
)


def random_face(rng: np.random.Generator, *, brows: bool = True) -> tuple[Face, bool]:
    """A hairstyle (bald, short or long) and where its hairline lies; ``True`` for long hair."""
    hair_kind = weighted_choice(rng, ("bald", "short", "long"), (0.05, 0.55, 0.40))
    bald = hair_kind == "bald"
    face = Face(
        skin=SKIN,
        hair=HAIR,
        eye=EYE,
        lips=LIPS,
        hairline_front=float(rng.uniform(0.25, 0.5)) if not bald else 2.0,
        hairline_back=float(rng.uniform(-0.75, -0.4)) if not bald else 2.0,
        brows=brows,
    )
    return face, hair_kind == "long"


def garment_colour(rng: np.random.Generator) -> np.ndarray:
    """Mostly neutral and dark clothes, sometimes saturated colours."""
    if rng.random() < 0.55:
        base = NEUTRAL_GARMENTS[int(rng.integers(len(NEUTRAL_GARMENTS)))]
        return np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3), 0, 1).astype(
            np.float32
        )
    return _hsv(rng.random(), rng.uniform(0.35, 0.95), rng.uniform(0.25, 0.95))


def garment_pattern(rng: np.random.Generator, plain_share: float = 0.6) -> Pattern:
    if rng.random() < plain_share:
        # Plain cloth still has a faint weave.
        return Pattern(
            NOISY,
            period=rng.uniform(0.05, 0.2),
            phase=rng.uniform(0, 64),
            threshold=rng.uniform(0.75, 0.9),
        )
    kind = weighted_choice(rng, (STRIPES, CHECKS, NOISY), (0.5, 0.3, 0.2))
    return Pattern(
        int(kind),
        period=rng.uniform(0.025, 0.12),
        phase=rng.uniform(0, 2 * np.pi),
        threshold=rng.uniform(0.4, 0.6),
    )


@dataclass(frozen=True)
class RGBStyle:
    """Colour photographs of dressed people indoors and outdoors.

    ``barefoot_share`` and ``bare_arms_share`` let sports and dance domains dress people lightly;
    ``tight_clothes_share`` replaces patterns by plain leggings and leotards.
    """

    name: str = "rgb"
    channels: int = 3
    outdoor_share: float = 0.3
    barefoot_share: float = 0.03
    bare_arms_share: float = 0.15
    shorts_share: float = 0.2
    tight_clothes_share: float = 0.0
    noise_sd: tuple[float, float] = (0.0, 0.025)
    blur_share: float = 0.3

    def __post_init__(self) -> None:
        for field_name in (
            "outdoor_share",
            "barefoot_share",
            "bare_arms_share",
            "shorts_share",
            "tight_clothes_share",
            "blur_share",
        ):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RGBStyle.{field_name} must be in [0, 1], got {value}")

    def resolution(self, rng: np.random.Generator) -> float:
        return 1.0

    def person(self, rng: np.random.Generator) -> PersonLook:
        palette = np.zeros((PALETTE_SIZE, 3), np.float32)
        tone = rng.uniform(0, len(SKIN_TONES) - 1)
        lo = int(tone)
        hi = min(lo + 1, len(SKIN_TONES) - 1)
        skin = SKIN_TONES[lo] + (tone - lo) * (SKIN_TONES[hi] - SKIN_TONES[lo])
        palette[SKIN] = np.clip(skin * rng.uniform(0.92, 1.05), 0, 1)
        hair = HAIR_COLOURS[weighted_index(rng, HAIR_WEIGHTS)]
        palette[HAIR] = np.clip(hair * rng.uniform(0.85, 1.15), 0, 1)
        palette[EYE] = EYE_COLOUR
        palette[LIPS] = np.clip(palette[SKIN] * np.array([0.85, 0.62, 0.62]), 0, 1)
        tight = rng.random() < self.tight_clothes_share
        palette[TOP] = garment_colour(rng)
        palette[TOP_ALT] = garment_colour(rng) if rng.random() < 0.7 else palette[TOP] * 0.75
        palette[BOTTOM] = garment_colour(rng)
        palette[BOTTOM_ALT] = palette[BOTTOM] * rng.uniform(0.7, 0.9)
        palette[SHOES] = garment_colour(rng) * rng.uniform(0.5, 1.0)
        palette[SHOES_ALT] = _rgb(230, 230, 225)
        top_pattern = garment_pattern(rng, 1.0 if tight else 0.6)
        bottom_pattern = garment_pattern(rng, 1.0 if tight else 0.85)
        if rng.random() < self.bare_arms_share:
            sleeve = 0.0
        else:
            sleeve = float(weighted_choice(rng, (0.5, 1.0, 2.0), (0.45, 0.1, 0.45)))
            sleeve += float(rng.uniform(-0.1, 0.05))
        legs = float(rng.uniform(0.35, 0.9)) if rng.random() < self.shorts_share else 2.0
        barefoot = bool(rng.random() < self.barefoot_share)
        if barefoot:
            palette[SHOES] = palette[SKIN]
        face, long_hair = random_face(rng)
        loose = 0.3 if tight else 1.0
        return PersonLook(
            palette,
            top_pattern,
            bottom_pattern,
            sleeve,
            legs,
            long_hair,
            face,
            barefoot,
            top_bulk=float(rng.uniform(0.004, 0.025)) * loose,
            bottom_bulk=float(rng.uniform(0.003, 0.02)) * loose,
        )

    def surface(self, kind: str, rng: np.random.Generator) -> SurfaceLook:
        if kind == "floor":
            choice = weighted_choice(
                rng, ("planks", "tiles", "noise", "checks"), (0.4, 0.3, 0.22, 0.08)
            )
            if choice == "planks":
                base = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.8))
                return SurfaceLook(base, base * 0.7, "planks", float(rng.uniform(0.1, 0.2)))
            if choice == "tiles":
                base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.2), rng.uniform(0.5, 0.95))
                return SurfaceLook(base, base * 0.6, "tiles", float(rng.uniform(0.3, 0.8)))
            if choice == "checks":  # gym mats
                base = _hsv(rng.uniform(0, 1), rng.uniform(0.4, 0.8), rng.uniform(0.4, 0.8))
                return SurfaceLook(base, base * 0.75, "checks", float(rng.uniform(1.0, 2.0)))
            base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.35), rng.uniform(0.25, 0.7))
            return SurfaceLook(base, base * 0.8, "noise", float(rng.uniform(0.2, 1.0)))
        if kind == "wall":
            choice = weighted_choice(
                rng, ("plain", "stripes", "bricks", "tiles"), (0.6, 0.15, 0.15, 0.1)
            )
            if choice == "bricks":
                base = _hsv(rng.uniform(0.0, 0.08), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.7))
                return SurfaceLook(base, _rgb(190, 185, 175), "bricks", 0.075)
            base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.25), rng.uniform(0.55, 0.95))
            alt = base * rng.uniform(0.8, 0.95)
            return SurfaceLook(base, alt, str(choice), float(rng.uniform(0.1, 0.6)))
        if kind == "ground":
            choice = weighted_choice(
                rng, ("grass", "asphalt", "sand", "pavement"), (0.35, 0.3, 0.1, 0.25)
            )
            if choice == "grass":
                base = _hsv(rng.uniform(0.2, 0.3), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6))
                return SurfaceLook(base, base * 0.7, "noise", 0.15)
            if choice == "pavement":
                base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.15), rng.uniform(0.45, 0.7))
                return SurfaceLook(base, base * 0.8, "tiles", float(rng.uniform(0.3, 0.6)))
            grey = rng.uniform(0.3, 0.5) if choice == "asphalt" else rng.uniform(0.6, 0.8)
            base = _hsv(0.1, 0.05 if choice == "asphalt" else 0.3, grey)
            return SurfaceLook(base, base * 0.85, "noise", 0.1)
        if kind == "sky":
            # Deeper blue overhead (base), paler at the horizon (alt).
            base = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.25, 0.6), rng.uniform(0.7, 0.95))
            pale = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.95))
            return SurfaceLook(base, pale, "plain", 1.0)
        if kind == "skyline":
            # Distant trees and buildings, hazy: their tops fade towards the sky's colour.
            base = _hsv(rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.45))
            haze = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.05, 0.2), rng.uniform(0.6, 0.8))
            return SurfaceLook(base, haze, "skyline", float(rng.uniform(4.0, 12.0)))
        if kind == "window":
            return SurfaceLook(_rgb(200, 220, 240), _rgb(240, 240, 235), "plain", 1.0)
        if kind == "appliance":
            base = _hsv(0, 0, rng.uniform(0.1, 0.9))
            return SurfaceLook(base, base, "plain", 1.0)
        # furniture and decor
        if rng.random() < 0.4:
            base = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.7))
        else:
            base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.15, 0.95))
        return SurfaceLook(base, base * 0.8, "noise", 0.3)

    def light(self, rng: np.random.Generator) -> Light:
        elevation = np.deg2rad(rng.uniform(25, 80))
        azimuth = rng.uniform(0, 2 * np.pi)
        direction = np.array(
            [
                np.cos(elevation) * np.cos(azimuth),
                np.sin(elevation),
                np.cos(elevation) * np.sin(azimuth),
            ]
        )
        return Light(direction, float(rng.uniform(0.45, 0.7)), float(rng.uniform(0.35, 0.65)))

    def finish(
        self, buffer: np.ndarray, rng: np.random.Generator, size: tuple[int, int], scale: float
    ) -> np.ndarray:
        # Planar (C, H, W) float32 throughout, in place: per-pixel noise then adds to whole
        # planes, and one merge interleaves the channels at the end.
        image = buffer
        if scale != 1.0 or image.shape[2] != size[0] or image.shape[1] != size[1]:
            image = np.stack([upsample(plane, scale, size) for plane in image])
        if rng.random() < self.blur_share:
            sigma = float(rng.uniform(0.4, 0.9))
            image = np.stack([cv2.GaussianBlur(plane, (0, 0), sigma) for plane in image])
        gain = rng.uniform(0.85, 1.15) * (1.0 + rng.normal(0.0, 0.04, 3))
        image *= (gain * 255.0).astype(np.float32)[:, None, None]
        noise = float(rng.uniform(*self.noise_sd))
        if noise > 0:
            # Luminance noise, uniform with the wanted standard deviation (uniform numbers are
            # several times cheaper to draw than Gaussian ones).
            grain = rng.random(image.shape[1:], dtype=np.float32)
            grain -= 0.5
            grain *= noise * 255.0 * np.sqrt(12.0)
            image += grain
        image += 0.5
        np.clip(image, 0, 255, out=image)
        planes = image.astype(np.uint8)
        return cv2.merge(list(planes))


# ----------------------------------------------------------------------------------- thermal


def _ironbow() -> np.ndarray:
    """The ironbow palette as a ``(256, 3)`` uint8 table (black, purple, red, orange, white)."""
    anchors = np.array([0.0, 0.15, 0.35, 0.55, 0.75, 0.9, 1.0])
    colours = np.array(
        [
            (0, 0, 10),
            (35, 0, 95),
            (140, 10, 150),
            (225, 60, 45),
            (250, 150, 0),
            (255, 220, 60),
            (255, 255, 235),
        ],
        dtype=np.float64,
    )
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, anchors, colours[:, c]) for c in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


PALETTES: dict[str, np.ndarray] = {
    "white_hot": np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1),
    "black_hot": np.repeat(np.arange(255, -1, -1, dtype=np.uint8)[:, None], 3, axis=1),
    "ironbow": _ironbow(),
}
SKIN_TEMPERATURE = (33.0, 35.5)  # deg C, face; hands and feet run cooler
AIR_TEMPERATURE = (14.0, 24.0)


@dataclass(frozen=True)
class ThermalStyle:
    """Long-wave infrared images of people (see the module docstring).

    ``native`` is the sensor's sampling relative to the output (0.3: a 640x480 output from a
    ~190x145 sensor); ``palettes`` and their ``palette_weights`` pick the colour map per image.
    """

    name: str = "thermal"
    channels: int = 1
    outdoor_share: float = 0.35
    native: tuple[float, float] = (0.3, 0.6)
    palettes: tuple[str, ...] = ("white_hot", "black_hot", "ironbow")
    palette_weights: tuple[float, ...] = (0.5, 0.2, 0.3)
    netd: tuple[float, float] = (0.05, 0.25)  # temporal noise, deg C
    column_noise: tuple[float, float] = (0.0, 0.25)  # fixed-pattern column offsets, deg C
    gain_noise: float = 0.01  # per-pixel responsivity spread
    blur: tuple[float, float] = (0.5, 1.1)  # optics, native pixels

    def __post_init__(self) -> None:
        if not 0 < self.native[0] <= self.native[1] <= 1:
            raise ValueError(f"ThermalStyle.native must be within (0, 1], got {self.native}")
        unknown = [p for p in self.palettes if p not in PALETTES]
        if unknown or len(self.palettes) != len(self.palette_weights) or not self.palettes:
            raise ValueError(
                f"ThermalStyle.palettes must name some of {sorted(PALETTES)} with one weight "
                f"each, got {self.palettes} / {self.palette_weights}"
            )

    def resolution(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(*self.native))

    def person(self, rng: np.random.Generator) -> PersonLook:
        air = np.mean(AIR_TEMPERATURE)
        skin = rng.uniform(*SKIN_TEMPERATURE)

        def garment() -> float:
            # Surface temperature: the insulation keeps a share of the skin-air difference out.
            return float(air + (skin - air) * rng.uniform(0.35, 0.75))

        palette = np.zeros((PALETTE_SIZE, 1), np.float32)
        palette[SKIN] = skin
        palette[HAIR] = air + (skin - air) * rng.uniform(0.3, 0.6)
        palette[EYE] = skin + rng.uniform(0.3, 1.0)  # the inner canthus is the warmest spot
        palette[LIPS] = skin - rng.uniform(0.0, 1.0)
        palette[TOP] = garment()
        palette[TOP_ALT] = palette[TOP] + rng.normal(0.0, 0.4)
        palette[BOTTOM] = garment()
        palette[BOTTOM_ALT] = palette[BOTTOM] + rng.normal(0.0, 0.4)
        palette[SHOES] = air + rng.uniform(1.0, 4.0)
        palette[SHOES_ALT] = palette[SHOES]
        # Folds and seams show as faint warm and cool blotches, not as printed patterns.
        fabric = Pattern(
            NOISY,
            period=float(rng.uniform(0.2, 0.5)),
            phase=float(rng.uniform(0, 64)),
            threshold=float(rng.uniform(0.55, 0.75)),
        )
        sleeve = float(weighted_choice(rng, (0.0, 0.5, 2.0), (0.15, 0.4, 0.45)))
        legs = float(rng.uniform(0.4, 0.9)) if rng.random() < 0.2 else 2.0
        face, long_hair = random_face(rng, brows=False)
        return PersonLook(
            palette,
            fabric,
            fabric,
            sleeve,
            legs,
            long_hair,
            face,
            False,
            top_bulk=float(rng.uniform(0.004, 0.025)),
            bottom_bulk=float(rng.uniform(0.003, 0.02)),
        )

    def surface(self, kind: str, rng: np.random.Generator) -> SurfaceLook:
        air = rng.uniform(*AIR_TEMPERATURE)

        def temps(base: float, spread: float, pattern: str, period: float) -> SurfaceLook:
            return SurfaceLook(
                np.array([base], np.float32),
                np.array([base + rng.normal(0.0, spread)], np.float32),
                pattern,
                period,
            )

        if kind in ("floor", "ground"):
            return temps(air + rng.uniform(-3, 4), 1.0, "noise", float(rng.uniform(0.3, 1.5)))
        if kind == "wall":
            return temps(air + rng.uniform(-1, 2), 0.6, "plain", 1.0)
        if kind == "sky":
            return temps(rng.uniform(-25, 0), 3.0, "plain", 1.0)
        if kind == "skyline":
            return temps(air + rng.uniform(-4, 6), 2.0, "skyline", float(rng.uniform(4, 12)))
        if kind == "window":
            return temps(air - rng.uniform(3, 10), 1.0, "plain", 1.0)
        if kind == "appliance":  # radiators, screens, lamps: the few warm things in a room
            return temps(float(rng.uniform(30, 60)), 2.0, "plain", 1.0)
        return temps(air + rng.uniform(-1.5, 2.0), 0.5, "noise", 0.5)

    def light(self, rng: np.random.Generator) -> Light:
        # Emission falls off at grazing angles (emissivity), so light the surfaces "from the
        # camera" with a weak directional term instead of a lamp.
        return Light(np.array([0.0, 0.0, -1.0]), 0.94, 0.08, headlight=True)

    def finish(
        self, buffer: np.ndarray, rng: np.random.Generator, size: tuple[int, int], scale: float
    ) -> np.ndarray:
        temp = cv2.GaussianBlur(buffer[0], (0, 0), float(rng.uniform(*self.blur)))
        h, w = temp.shape
        columns = rng.normal(0.0, rng.uniform(*self.column_noise), (1, w)).astype(np.float32)
        # Per-pixel gain and temporal noise as uniform numbers with the wanted standard
        # deviations (much cheaper to draw than Gaussian ones, and as good to the eye).
        spread = np.float32(np.sqrt(12.0))
        gain = rng.random((h, w), dtype=np.float32) - np.float32(0.5)
        gain *= spread * self.gain_noise
        gain += 1.0
        temporal = rng.random((h, w), dtype=np.float32) - np.float32(0.5)
        temporal *= spread * float(rng.uniform(*self.netd))
        temp *= gain
        temp += columns
        temp += temporal
        # Automatic gain control over the scene's robust range.
        lo, hi = (float(v) for v in np.percentile(temp, (1.0, 99.5)))
        hi = max(hi, lo + 2.0)
        level = (temp - lo) * (1.0 / (hi - lo))
        if rng.random() < 0.5:  # detail enhancement: an unsharp mask, with its halos
            level += float(rng.uniform(0.3, 1.0)) * (level - cv2.GaussianBlur(level, (0, 0), 2.0))
        # Resample the levels, then colour them: the palette is applied at full resolution.
        level = upsample(level, scale, size)
        level *= 255.0
        level += 0.5
        np.clip(level, 0, 255, out=level)
        codes = level.astype(np.uint8)
        palette = PALETTES[self.palettes[weighted_index(rng, self.palette_weights)]]
        return cv2.LUT(cv2.merge([codes, codes, codes]), palette[None])
