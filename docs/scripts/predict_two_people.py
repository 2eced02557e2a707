"""docs/predict_two_people.jpg: `metapose predict` on a raw photo with no boxes given: the bundled
YOLOX-Nano detector finds the two riders of COCO val2017 000000192699 (a photo the pose model
never trained on) and PP-TinyPose 256x192 estimates both poses; the overlay as the command writes
it by default (JPEG). Run from the repository root (needs ../shared/data; a few seconds):

    python docs/scripts/predict_two_people.py
"""

import shutil
import tempfile
from pathlib import Path

from metapose.cli import main as cli

IMAGE = Path("../shared/data/coco/mini/val2017/000000192699.jpg")
TARGET = Path("docs/predict_two_people.jpg")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pred"
        argv = ["predict", str(IMAGE), "--checkpoint", "pp-tinypose-256x192", "--out", str(out)]
        assert cli([*argv, "--quiet"]) == 0
        shutil.copyfile(out / "overlays" / f"{IMAGE.stem}.jpg", TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
