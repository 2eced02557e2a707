"""Leeds Sports Pose importers: LSP, LSPet and the LSP-extended release to COCO-format JSON.

Johnson & Everingham, BMVC 2010 (LSP, 2,000 images, ``joints`` 3x14xN) and CVPR 2011 (LSPet,
10,000 images, ``joints`` 14x3xN). Both label 14 joints of one person per image, "right" being the
person's right as in COCO. Twelve joints map onto COCO-17 slots; COCO's face keypoints stay
unlabelled and LSP's neck and head top are kept as extra annotation fields (``lsp_neck``,
``lsp_head_top``: ``[x, y, v]``).

Flags. A joint whose flag is 0 and whose coordinates are not inside the image is unlabelled
(v = 0). Otherwise it is labelled: flag 1 -> v = 2 (visible); flag 0 inside the image -> v = 1
(labelled, not marked visible). OKS and PCK treat v = 1 and v = 2 alike.

Box and area. The box is the extent of the labelled joints (all 14, head top included) grown by
:data:`BOX_MARGIN` of its larger side on every side and clipped to the image. OKS needs the
person's segmentation area, which LSP does not have: it is taken as :data:`AREA_PER_JOINT_BOX`
times the area of the (unpadded) joint extent, the median ratio of segmentation area to joint
extent measured on COCO people with 12 or more labelled keypoints (0.64-0.85 across the COCO
files shipped beside metapose).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from metapose.data.coco import Annotation, CocoImage
from metapose.data.coco_writer import write_coco_payload
from metapose.data.images import read_rgb
from metapose.errors import DataError
from metapose.progress import Progress
from metapose.skeleton import COCO17

log = logging.getLogger(__name__)

LSP_JOINTS = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "neck",
    "head_top",
)
NUM_LSP_JOINTS = len(LSP_JOINTS)
# LSP joint index -> COCO-17 index, matched by name (same person-centric sides).
LSP_TO_COCO = {
    i: COCO17.index(name) for i, name in enumerate(LSP_JOINTS) if name in COCO17.keypoints
}
LSP_EXTRA = {"neck": "lsp_neck", "head_top": "lsp_head_top"}

BOX_MARGIN = 0.1
AREA_PER_JOINT_BOX = 0.75
MIN_EXTENT = 8.0  # pixels: a floor for people with (nearly) collinear joints

_IMAGE_NUMBER = re.compile(r"(\d+)")


def read_lsp_joints(path: str | Path) -> np.ndarray:
    """``joints`` of an LSP/LSPet ``joints.mat`` as ``(N, 14, 3)``, whatever its layout."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise DataError(path, f"not a readable MATLAB (.mat) file: {err}") from None
    if "joints" not in mat:
        raise DataError(path, "missing variable", field="joints")
    raw = np.asarray(mat["joints"])
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise DataError(path, f"must be an array of numbers, got {raw.dtype}", field="joints")
    joints = raw.astype(np.float64)
    if not np.isfinite(joints).all():
        raise DataError(path, "holds NaN or infinite values", field="joints")
    if joints.ndim != 3:
        raise DataError(path, f"must be 3-dimensional, got shape {joints.shape}", field="joints")
    if joints.shape[:2] == (NUM_LSP_JOINTS, 3):  # LSPet: 14 x 3 x N
        return joints.transpose(2, 0, 1)
    if joints.shape[:2] == (3, NUM_LSP_JOINTS):  # LSP: 3 x 14 x N
        return joints.transpose(2, 1, 0)
    raise DataError(path, f"expected 14x3xN or 3x14xN, got {joints.shape}", field="joints")


def lsp_person(
    joints: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, dict[str, Any], tuple[float, float, float, float], float]:
    """One person's ``(14, 3)`` LSP joints -> COCO keypoints, extra fields, box and area."""
    x, y, flag = joints[:, 0], joints[:, 1], joints[:, 2]
    inside = (x >= 0) & (y >= 0) & (x <= width - 1) & (y <= height - 1)
    v = np.where(flag > 0, 2, np.where(inside, 1, 0))
    keypoints = np.zeros((COCO17.num_keypoints, 3), np.float32)
    for lsp, coco in LSP_TO_COCO.items():
        if v[lsp] > 0:
            keypoints[coco] = (x[lsp], y[lsp], v[lsp])
    extra = {
        field: ([float(x[i]), float(y[i]), int(v[i])] if v[i] > 0 else [0.0, 0.0, 0])
        for i, name in enumerate(LSP_JOINTS)
        if (field := LSP_EXTRA.get(name))
    }
    labelled = v > 0
    if not labelled.any():
        return keypoints, extra, (0.0, 0.0, 0.0, 0.0), 0.0
    x0, y0 = x[labelled].min(), y[labelled].min()
    w = max(x[labelled].max() - x0, MIN_EXTENT)
    h = max(y[labelled].max() - y0, MIN_EXTENT)
    area = AREA_PER_JOINT_BOX * w * h
    margin = BOX_MARGIN * max(w, h)
    bx0, by0 = max(x0 - margin, 0.0), max(y0 - margin, 0.0)
    bx1, by1 = min(x0 + w + margin, width), min(y0 + h + margin, height)
    return (
        keypoints,
        extra,
        (float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)),
        float(area),
    )


def image_number(path: Path) -> int:
    """The running number in ``im00042.jpg`` (LSPet) or ``im0042.jpg`` (LSP): 42."""
    match = _IMAGE_NUMBER.search(path.stem)
    if match is None:
        raise DataError(path, "image name has no number (expected im<digits>.jpg)")
    return int(match.group(1))


def import_lsp(
    joints_file: str | Path,
    image_dir: str | Path,
    out: str | Path,
    *,
    progress: Progress | None = None,
) -> Path:
    """Write a COCO keypoint JSON for the LSP/LSPet images present in ``image_dir``.

    Image ``im<n>`` gets image id ``n`` and is matched to column ``n - 1`` of ``joints``; joints of
    images that are not in the folder are skipped (the shared copy of LSPet holds 5,000 of 10,000).
    Every image is decoded (for its size): ``progress`` gets a stage of one step per image.
    """
    image_dir = Path(image_dir)
    joints = read_lsp_joints(joints_file)
    files = sorted(
        p for p in image_dir.glob("im*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if not files:
        raise DataError(image_dir, "no im*.jpg images in this folder")
    images, annotations, extras = [], [], {}
    advance = progress.stage("import LSP images", len(files)) if progress is not None else None
    for file in files:
        if advance is not None:
            advance(1)
        n = image_number(file)
        if not 1 <= n <= len(joints):
            raise DataError(
                joints_file,
                f"has {len(joints)} people but the folder holds {file.name}",
                field="joints",
            )
        height, width = read_rgb(file).shape[:2]
        keypoints, extra, bbox, area = lsp_person(joints[n - 1], width, height)
        images.append(CocoImage(n, file.name, width, height))
        if area <= 0:
            log.warning("%s: no labelled joint; image kept without a person", file.name)
            continue
        annotations.append(Annotation(n, n, bbox, keypoints, area, iscrowd=False))
        extras[n] = extra
    if progress is not None:
        progress.close_stage()
    skipped = len(joints) - len(images)
    if skipped:
        log.info("%d people of %s have no image in %s", skipped, joints_file, image_dir)
    out = Path(out)
    write_coco_payload(out, images, annotations, COCO17, extra_fields=extras)
    return out
