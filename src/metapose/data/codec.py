"""Keypoints <-> heatmaps: Gaussian targets, quarter-offset (or DARK) decoding, flip test.

Follows SimpleBaseline (Xiao et al., 2018): a keypoint at crop pixel ``x`` sits at heatmap pixel
``x / stride``; targets are unnormalised Gaussians (peak 1) centred there with sub-pixel precision;
decoding takes the argmax and moves it a quarter pixel per axis towards the larger neighbour.
UDP (Huang et al., "The Devil is in the Details", CVPR 2020) measures both sides in pixel-centre
spacings instead: crop pixel ``x`` sits at heatmap pixel ``x * (w - 1) / (W - 1)``, the crop
affine maps the box onto ``0 .. W-1`` (:func:`metapose.data.crops.crop_matrix`), and flipped
heatmaps need no shift.
DARK (Zhang et al., "Distribution-Aware Coordinate Representation", CVPR 2020) optionally replaces
the quarter offset by a second-order Taylor step on the log of the (re-blurred) heatmap.

Decoding is plain numpy so an application needs neither torch nor metapose's model to use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from metapose.config import CodecConfig, ModelConfig, Normalization
from metapose.data.crops import CropParams, crop_matrix

REFERENCE_HEATMAP_WIDTH = 48  # sigma is given for a 48-pixel-wide heatmap and scales with width
QUARTER = 0.25
LOG_FLOOR = 1e-10


class Encoded(NamedTuple):
    heatmaps: np.ndarray  # (K, h, w) float32
    target_weight: np.ndarray  # (K,) float32: 1 where labelled and inside the heatmap


class Decoded(NamedTuple):
    coords: np.ndarray  # (N, K, 2) float32, crop pixels (x, y)
    scores: np.ndarray  # (N, K) float32, heatmap maxima


@dataclass(frozen=True)
class HeatmapCodec:
    """How a model's inputs are cut and normalised and its heatmaps encoded and decoded.

    ``stride`` = input size / heatmap size.
    """

    input_size: tuple[int, int]  # (width, height)
    heatmap_size: tuple[int, int]  # (width, height)
    sigma: float
    dark: bool = False
    udp: bool = False  # UDP heatmap encoding (else crop pixel / stride)
    udp_crop: bool = False  # UDP crop affine (else SimpleBaseline's)
    normalization: Normalization = Normalization()

    def __post_init__(self) -> None:
        (iw, ih), (hw, hh) = self.input_size, self.heatmap_size
        if iw % hw or ih % hh or iw // hw != ih // hh:
            raise ValueError(
                f"input {self.input_size} is not an integer multiple of heatmap {self.heatmap_size}"
            )

    @classmethod
    def for_model(cls, model: ModelConfig) -> HeatmapCodec:
        """The codec a model was built (or trained) with: ``model.codec``, its normalisation."""
        return cls.for_sizes(model.input_size, model.heatmap_size, model.codec, model.normalization)

    @classmethod
    def for_sizes(
        cls,
        input_size: tuple[int, int],
        heatmap_size: tuple[int, int],
        config: CodecConfig | None = None,
        normalization: Normalization | None = None,
    ) -> HeatmapCodec:
        """The codec of ``config`` (default: the default codec) for these sizes, for crops
        normalised by ``normalization`` (default ImageNet's); sigma scales with the heatmap's
        width."""
        config = config or CodecConfig()
        sigma = config.sigma_at_48 * heatmap_size[0] / REFERENCE_HEATMAP_WIDTH
        return cls(
            input_size,
            heatmap_size,
            sigma,
            dark=config.dark,
            udp=config.encoding == "udp",
            udp_crop=config.crop == "udp",
            normalization=normalization or Normalization(),
        )

    @property
    def stride(self) -> int:
        return self.input_size[0] // self.heatmap_size[0]

    @property
    def heatmap_per_input(self) -> tuple[float, float]:
        """Heatmap pixels per crop pixel along ``(x, y)``."""
        (iw, ih), (hw, hh) = self.input_size, self.heatmap_size
        if self.udp:
            return ((hw - 1) / (iw - 1), (hh - 1) / (ih - 1))
        return (1.0 / self.stride, 1.0 / self.stride)

    def crop_matrix(self, params: CropParams, *, inverse: bool = False) -> np.ndarray:
        """The ``(2, 3)`` image -> crop affine of ``params`` (or back) for this codec."""
        return crop_matrix(params, self.input_size, inverse=inverse, udp=self.udp_crop)

    # ------------------------------------------------------------------------------ encode

    def encode(self, keypoints: np.ndarray) -> Encoded:
        """Targets for ``(K, 3)`` crop-space keypoints ``(x, y, flag)``."""
        w, h = self.heatmap_size
        mu = keypoints[:, :2].astype(np.float64) * np.array(self.heatmap_per_input)  # (K, 2)
        labelled = keypoints[:, 2] > 0
        # A centre within half a pixel of the grid still puts its peak on the heatmap.
        inside = (
            (mu[:, 0] >= -0.5) & (mu[:, 0] < w - 0.5) & (mu[:, 1] >= -0.5) & (mu[:, 1] < h - 0.5)
        )
        weight = (labelled & inside).astype(np.float32)
        xs = np.arange(w, dtype=np.float64)
        ys = np.arange(h, dtype=np.float64)
        gx = np.exp(-((xs[None, :] - mu[:, :1]) ** 2) / (2 * self.sigma**2))  # (K, w)
        gy = np.exp(-((ys[None, :] - mu[:, 1:]) ** 2) / (2 * self.sigma**2))  # (K, h)
        heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
        heatmaps *= weight[:, None, None]
        return Encoded(heatmaps, weight)

    # ------------------------------------------------------------------------------ decode

    def decode(self, heatmaps: np.ndarray) -> Decoded:
        """``(N, K, h, w)`` heatmaps -> crop-pixel coordinates and scores."""
        coords, scores = argmax_2d(heatmaps)
        if self.dark:
            coords = dark_refine(heatmaps, coords, self.sigma)
        else:
            coords = quarter_offset(heatmaps, coords)
        return Decoded((coords / np.array(self.heatmap_per_input)).astype(np.float32), scores)

    def flip_back(self, heatmaps: np.ndarray, flip_index: np.ndarray) -> np.ndarray:
        """:func:`flip_back` for this codec: UDP heatmaps mirror exactly, with no shift."""
        return flip_back(heatmaps, flip_index, shift=not self.udp)


def argmax_2d(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak ``(N, K, 2)`` (x, y) and its value ``(N, K)``."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    coords = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    return coords, scores.astype(np.float32)


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each integer peak a quarter pixel per axis towards its larger neighbour."""
    n, k, h, w = heatmaps.shape
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    out = coords.copy()
    has_x = (px > 0) & (px < w - 1)
    has_y = (py > 0) & (py < h - 1)
    xr, xl = np.clip(px + 1, 0, w - 1), np.clip(px - 1, 0, w - 1)
    yd, yu = np.clip(py + 1, 0, h - 1), np.clip(py - 1, 0, h - 1)
    dx = heatmaps[ni, ki, py, xr] - heatmaps[ni, ki, py, xl]
    dy = heatmaps[ni, ki, yd, px] - heatmaps[ni, ki, yu, px]
    out[..., 0] += np.where(has_x, np.sign(dx) * QUARTER, 0.0)
    out[..., 1] += np.where(has_y, np.sign(dy) * QUARTER, 0.0)
    return out


def _modulate(heatmaps: np.ndarray, sigma: float) -> np.ndarray:
    """DARK's distribution modulation: re-blur each map with the target Gaussian, keep its peak."""
    ksize = 2 * int(np.ceil(3 * sigma)) + 1
    out = np.empty_like(heatmaps, dtype=np.float32)
    n, k = heatmaps.shape[:2]
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j].astype(np.float32)
            peak = hm.max()
            blurred = cv2.GaussianBlur(hm, (ksize, ksize), sigma, borderType=cv2.BORDER_CONSTANT)
            bmax = blurred.max()
            out[i, j] = blurred * (peak / bmax) if bmax > 0 else blurred
    return out


def dark_refine(
    heatmaps: np.ndarray, coords: np.ndarray, sigma: float, *, modulate: bool = True
) -> np.ndarray:
    """Sub-pixel peak by a Newton step on the log-heatmap at the integer argmax (DARK)."""
    hm = _modulate(heatmaps, sigma) if modulate else heatmaps.astype(np.float32)
    logm = np.log(np.maximum(hm, LOG_FLOOR)).astype(np.float64)
    n, k, h, w = logm.shape
    out = coords.copy()
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    ok = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    pxc, pyc = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)

    def at(dx: int, dy: int) -> np.ndarray:
        return logm[ni, ki, pyc + dy, pxc + dx]

    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2 * at(0, 0) + at(-1, 0)
    hyy = at(0, 1) - 2 * at(0, 0) + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    # A Newton step is meaningful only at a proper maximum (negative-definite Hessian).
    valid = ok & (det > 1e-12) & (hxx < 0)
    safe = np.where(valid, det, 1.0)
    off_x = -(hyy * gx - hxy * gy) / safe
    off_y = -(hxx * gy - hxy * gx) / safe
    # A step of more than a pixel means the local quadratic model is wrong; keep the argmax.
    valid &= (np.abs(off_x) <= 1) & (np.abs(off_y) <= 1)
    out[..., 0] += np.where(valid, off_x, 0.0)
    out[..., 1] += np.where(valid, off_y, 0.0)
    return out


def flip_back(heatmaps: np.ndarray, flip_index: np.ndarray, *, shift: bool = True) -> np.ndarray:
    """Heatmaps of a horizontally flipped input, mapped back onto the original.

    Mirrors the maps, swaps left/right channels and (SimpleBaseline) shifts them one pixel to the
    right, which compensates the half-pixel misalignment of mirroring a stride-s heatmap.
    """
    back = heatmaps[:, flip_index, :, ::-1].copy()
    if shift:
        back[..., 1:] = back[..., :-1].copy()
    return back
