"""docs/lspet_overlay.png: LSPet labels after the import to COCO-17, drawn on their photos.

Run from the repository root (needs ../shared/data/lspet). The person's left is drawn orange and
their right blue (metapose.data.viz); LSP's neck and head top are not COCO keypoints and are not drawn.
"""

import tempfile
from pathlib import Path

import cv2
import numpy as np

from metapose.data.coco import load_coco
from metapose.data.images import read_rgb, write_rgb
from metapose.data.lsp import import_lsp
from metapose.data.viz import draw_box, draw_pose

LSPET = Path("../shared/data/lspet")
IMAGE_IDS = (1, 2, 3, 7, 11, 16)
TILE_HEIGHT = 240


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        coco = load_coco(import_lsp(LSPET / "joints.mat", LSPET / "images", Path(tmp) / "lspet.json"),
                         LSPET / "images")
    tiles = []
    for image_id in IMAGE_IDS:
        image = read_rgb(coco.image_path(image_id))
        ann = coco.annotations_by_image[image_id][0]
        zoom = TILE_HEIGHT / image.shape[0]
        big = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
        kp = ann.keypoints.astype(np.float64).copy()
        kp[:, :2] = (kp[:, :2] + 0.5) * zoom - 0.5
        box = tuple(v * zoom for v in ann.bbox)
        tiles.append(draw_box(draw_pose(big, kp, kind="flags"), box, (255, 220, 0), label=f"im{image_id:05d}"))
    write_rgb("docs/lspet_overlay.png", np.concatenate(tiles, axis=1))
    print("wrote docs/lspet_overlay.png")


if __name__ == "__main__":
    main()
