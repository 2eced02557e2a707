"""``metapose predict`` on a 10 s video: frames in the JSON, the overlay video read back, time.

Builds a 10 s, 25 fps, 640x480 mp4v clip from a real COCO photo with two people
(``../shared/data/coco/mini`` val 000000214753) by a slow pan and zoom (so that the people move
across the frame), runs ``metapose predict CLIP --checkpoint CKPT --out OUT`` (the bundled
detector finds the people) and reads the outputs back with OpenCV: frames in ``results.json``,
frames, size and rate of ``overlay.mp4``. Run: ``OMP_NUM_THREADS=1 python
benchmarks/predict_video.py [--checkpoint NAME] [--frame-stride N]``. The clip and the output go
to a folder in /tmp (``--work``), removed unless ``--keep``; nothing is committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from metapose.cli import main as metapose

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "coco" / "mini" / "val2017" / "000000214753.jpg"
SIZE = (640, 480)
FPS = 25.0
SECONDS = 10


def build_clip(path: Path) -> int:
    photo = cv2.imread(str(PHOTO))
    if photo is None:
        raise SystemExit(f"{PHOTO} not found (../shared/data beside the repository)")
    height, width = photo.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, SIZE)
    frames = int(FPS * SECONDS)
    for i in range(frames):
        t = i / (frames - 1)
        zoom = 1.0 + 0.4 * np.sin(np.pi * t)  # in and out again
        shift = (t - 0.5) * 0.3 * width  # pan left to right
        centre = (width / 2 + shift, height / 2)
        matrix = cv2.getRotationMatrix2D(centre, 0.0, zoom)
        matrix[:, 2] += (SIZE[0] / 2 - centre[0], SIZE[1] / 2 - centre[1])
        writer.write(cv2.warpAffine(photo, matrix, SIZE, borderValue=(114, 114, 114)))
    writer.release()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="pp-tinypose-128x96")
    parser.add_argument("--frame-stride", type=int, default=1)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="metapose-video-"))
    clip, out = work / "clip.mp4", work / "out"
    try:
        frames = build_clip(clip)
        print(f"{clip}: {frames} frames, {SECONDS} s at {FPS:g} fps, {SIZE[0]}x{SIZE[1]}")
        argv = ["predict", str(clip), "--checkpoint", args.checkpoint, "--out", str(out)]
        argv += ["--frame-stride", str(args.frame_stride), "--quiet"]
        print("$ metapose", " ".join(argv))
        if metapose(argv) != 0:
            raise SystemExit("predict failed")
        results = json.loads((out / "results.json").read_text())
        in_json = sorted({r["frame"] for r in results})
        people = np.bincount([r["frame"] for r in results], minlength=frames)
        print(
            f"results.json: {len(results)} poses on {len(in_json)} frames "
            f"(frames {in_json[0]}..{in_json[-1]}); people per frame: "
            f"min {people.min()}, median {int(np.median(people))}, max {people.max()}"
        )
        video = cv2.VideoCapture(str(out / "overlay.mp4"))
        read = 0
        while video.read()[0]:
            read += 1
        width, height = (
            int(video.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT)
        )
        size_mb = (out / "overlay.mp4").stat().st_size / 2**20
        print(
            f"overlay.mp4 read back with OpenCV: {read} frames "
            f"(container says {int(video.get(cv2.CAP_PROP_FRAME_COUNT))}), {width}x{height} "
            f"at {video.get(cv2.CAP_PROP_FPS):g} fps, {size_mb:.1f} MB"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
