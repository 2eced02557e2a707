"""docs/predict_overlay.png: `metapose predict` with the bundled PP-TinyPose 256x192 on a real
COCO val2017 photo (000000252219, which the model never trained on), the people's boxes taken
from the image's annotations, overlay as the command writes it. Run from the repository root
(needs ../shared/data; a few seconds):

    python docs/scripts/predict_overlay.py
"""

import shutil
import tempfile
from pathlib import Path

from metapose.cli import main as cli

TINY = Path("../shared/data/coco/tiny")
ANNOTATIONS = TINY / "annotations/person_keypoints_val2017.json"
IMAGE = TINY / "val2017/000000252219.jpg"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        code = cli(
            [
                "predict",
                str(IMAGE),
                "--checkpoint",
                "pp-tinypose-256x192",
                "--boxes",
                str(ANNOTATIONS),
                "--overlay-format",
                "png",
                "--out",
                tmp,
                "--quiet",
            ]
        )
        assert code == 0
        overlay = next((Path(tmp) / "overlays").glob("*.png"))
        shutil.copyfile(overlay, "docs/predict_overlay.png")
    print("wrote docs/predict_overlay.png")


if __name__ == "__main__":
    main()
