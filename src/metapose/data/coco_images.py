"""The images of a COCO file: file names resolved under the image folder, sizes read where the
file omits them, every image checked to exist or decode; labels checked to lie near their image.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from metapose.data.images import read_rgb
from metapose.data.label_formats import resolve_file_name
from metapose.errors import DataError, cut

if TYPE_CHECKING:
    from metapose.data.coco import Annotation, CocoDataset, CocoImage

ImageCheck = Literal["none", "exists", "decode"]


# A labelled keypoint or box corner farther outside its image than this many image widths
# (heights) is a unit or sign mistake, not a person partly out of frame.
MAX_OUTSIDE = 2.0


def check_near_image(path: Path, ann: Annotation, image: CocoImage) -> None:
    """Refuse labelled keypoints (flag > 0) and box corners more than MAX_OUTSIDE image sizes
    outside ``image``: kept, ``(1e6, -1e6)`` would train and score as a real label."""
    w, h = image.width, image.height
    x0, y0 = -MAX_OUTSIDE * w, -MAX_OUTSIDE * h
    x1, y1 = (1 + MAX_OUTSIDE) * w, (1 + MAX_OUTSIDE) * h
    labelled = ann.keypoints[ann.keypoints[:, 2] > 0]
    bx, by, bw, bh = ann.bbox
    points = [(float(x), float(y), "keypoints") for x, y in labelled[:, :2]]
    points += [(bx, by, "bbox"), (bx + bw, by + bh, "bbox")]
    for x, y, key in points:
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise DataError(
                path,
                f"({x:.6g}, {y:.6g}) lies more than {MAX_OUTSIDE:g} image sizes outside its "
                f"{w} x {h} image",
                field=key,
                annotation_id=ann.id,
            )


def is_file(path: Path) -> bool:
    """``path.is_file()``, False too for a name the file system refuses (e.g. too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def locate_images(
    path: Path, image_dir: Path, images: tuple[CocoImage, ...]
) -> tuple[CocoImage, ...]:
    """``images`` with file names resolved under ``image_dir`` (a prefix such as ``images/``
    dropped where only that finds the file) and missing sizes read from the files."""
    out = []
    for img in images:
        found = resolve_file_name(image_dir, img.file_name)
        if found is not None and found != img.file_name:
            img = replace(img, file_name=found)
        if img.width == 0 or img.height == 0:
            file = image_dir / img.file_name
            if not is_file(file):
                raise DataError(
                    path,
                    f"no width/height and no image file to read them from: {cut(str(file), 200)}",
                    field="images[].width",
                    image_id=img.id,
                )
            height, width = read_rgb(file).shape[:2]
            img = replace(img, width=int(width), height=int(height))
        out.append(img)
    return tuple(out)


def check_image_files(dataset: CocoDataset, mode: ImageCheck) -> None:
    """Check every image exists (``"exists"``) or also decodes at its size (``"decode"``)."""
    if mode == "none":
        return
    for img in dataset.images:
        file = dataset.image_dir / img.file_name
        if not is_file(file):
            raise DataError(
                dataset.annotation_file,
                f"image file not found: {cut(str(file), 200)}",
                field="file_name",
                image_id=img.id,
            )
        if mode == "decode":
            pixels = read_rgb(file)
            if pixels.shape[:2] != (img.height, img.width):
                raise DataError(
                    dataset.annotation_file,
                    f"{file} is {pixels.shape[1]}x{pixels.shape[0]} but the annotation says "
                    f"{img.width}x{img.height}",
                    field="width/height",
                    image_id=img.id,
                )
