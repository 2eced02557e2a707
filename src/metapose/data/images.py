"""Reading any image file as 8-bit RGB: grayscale, RGBA, 16-bit and float (thermal) alike."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from metapose.errors import DataError
from metapose.files import write_bytes_atomic

# Radiometric (16-bit or float) images are stretched per image between these percentiles, so a
# few saturated hot pixels do not flatten the rest of the scene to black.
STRETCH_PERCENTILES = (0.5, 99.5)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Stretch a single-image radiometric array to uint8 over its robust intensity range."""
    if image.dtype == np.uint8:
        return image
    data = image.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0
    scaled = (np.nan_to_num(data, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


JPEG_START = b"\xff\xd8"  # start-of-image marker
JPEG_SCAN = b"\xff\xda"  # start-of-scan marker
JPEG_END = b"\xff\xd9"  # end-of-image marker (never inside entropy-coded data)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read ``path`` as ``(H, W, 3)`` uint8 RGB, whatever its channels and bit depth.

    Pixels are taken as stored (EXIF orientation is not applied), which is how COCO-format
    annotations are made.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read image: {err.strerror or err}") from None
    if data.startswith(JPEG_START) and data.rfind(JPEG_END) < data.rfind(JPEG_SCAN):
        # libjpeg decodes a truncated file with only a warning on stderr (the missing part
        # grey): refuse it rather than train or score on it.
        raise DataError(path, "truncated JPEG (no end-of-image marker after the last scan)")
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if raw is None or raw.size == 0:
        raise DataError(path, "cannot decode image (corrupt or unsupported file)")
    if raw.ndim == 2:
        return cv2.cvtColor(to_uint8(raw), cv2.COLOR_GRAY2RGB)
    channels = raw.shape[2]
    if channels == 1:
        return cv2.cvtColor(to_uint8(raw[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(to_uint8(raw), cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(to_uint8(raw), cv2.COLOR_BGRA2RGB)
    raise DataError(path, f"unsupported number of channels: {channels}")


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the suffix: .png, .jpg, ...), atomically."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode an image of this kind")
    write_bytes_atomic(path, encoded.tobytes())
