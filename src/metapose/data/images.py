"""Reading any image file as 8-bit RGB: grayscale, RGBA, 16-bit and float (thermal) alike."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from metapose.errors import DataError
from metapose.files import write_bytes_atomic

# The files a folder of images is read for (predict, unlabelled images).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
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


# Images with more pixels are refused before decoding (a 16384 x 16384 RGB image is 0.8 GB, and
# decoding needs several copies); OpenCV itself refuses 2**30 pixels, with an exception.
MAX_IMAGE_PIXELS = 2**28
MAX_IMAGE_SIDE = 2**16  # JPEG's own limit is 65535
# Pixel coordinates (boxes, keypoints) beyond this in magnitude cannot belong to an image read
# here: a box of 1e30 would otherwise give crops and poses at 1e30 without a word.
MAX_COORDINATE = 4 * MAX_IMAGE_SIDE
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the image size): C0-CF but DHT (C4), JPG (C8), DAC (CC).
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` read from a PNG or JPEG header without decoding, or None (other
    formats, or a header not understood: the decoder then judges the file)."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(JPEG_START):
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in JPEG_FRAMES:  # length (2), precision (1), height (2), width (2)
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            return int.from_bytes(data[i + 7 : i + 9], "big"), height
        if marker == JPEG_SCAN[1]:
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def check_pixels(path: Path, data: bytes) -> None:
    """Raise DataError (as for an unreadable image, so folder runs skip it) when the header of
    ``data`` announces more than MAX_IMAGE_PIXELS pixels."""
    size = header_size(data)
    if size is not None and (size[0] * size[1] > MAX_IMAGE_PIXELS or max(size) > MAX_IMAGE_SIDE):
        raise DataError(
            path,
            f"image too large: {size[0]} x {size[1]} pixels (at most {MAX_IMAGE_PIXELS:,} "
            f"pixels and {MAX_IMAGE_SIDE} a side are read)",
        )


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
    check_pixels(path, data)
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error as err:  # e.g. beyond OpenCV's own pixel limit in a format not checked above
        message = " ".join(str(err).split())[-120:]
        raise DataError(path, f"cannot decode image ({message})") from None
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
