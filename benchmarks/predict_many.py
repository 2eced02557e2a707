"""``metapose predict`` on thousands of photos with the defaults: peak memory, disk written, time.

Builds ``--images`` JPEG photos under ``--work`` by copying the real COCO photos beside the
repository (``../shared/data/coco``, every split) round-robin into sub-folders of 500, then runs
``metapose predict FOLDER --recursive --checkpoint CKPT --out OUT`` under ``/usr/bin/time -v``
(peak resident memory of the whole process) and sums the bytes it wrote. Run:
``OMP_NUM_THREADS=1 python benchmarks/predict_many.py [--images 5000] [--checkpoint NAME]``.
Everything is written under ``--work`` (default: a folder in /tmp), removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COCO = REPO.parent / "shared" / "data" / "coco"
PER_FOLDER = 500


def build_photos(folder: Path, count: int) -> int:
    sources = sorted(COCO.glob("*/*2017/*.jpg"))
    if not sources:
        raise SystemExit(f"no COCO photos under {COCO} (../shared/data beside the repository)")
    size = 0
    for i in range(count):
        target = folder / f"part{i // PER_FOLDER:02d}" / f"photo_{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i % len(sources)], target)
        size += target.stat().st_size
    return size


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--checkpoint", default="pp-tinypose-128x96")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("extra", nargs="*", help="more predict options (after --)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="metapose-many-"))
    photos, out = work / "photos", work / "out"
    try:
        size = build_photos(photos, args.images)
        print(f"{args.images} photos ({size / 2**20:.0f} MB) in {photos}")
        metapose = Path(sys.executable).parent / "metapose"
        command = [
            "/usr/bin/time", "-v", str(metapose), "predict", str(photos), "--recursive",
            "--checkpoint", args.checkpoint, "--out", str(out), "--quiet", *args.extra,
        ]  # fmt: skip
        print("$", " ".join(command[2:]))
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        print(run.stdout.strip())
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
        wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", run.stderr)
        written = folder_bytes(out)
        overlays = folder_bytes(out / "overlays") if (out / "overlays").exists() else 0
        results = (out / "results.json").stat().st_size
        print(
            f"peak RSS {int(peak.group(1)) / 1024:.0f} MB" if peak else "peak RSS: not reported",
            f"| wall {wall.group(1) if wall else '?'}",
            f"| written {written / 2**20:.0f} MB (overlays {overlays / 2**20:.0f} MB, "
            f"{overlays / max(args.images, 1) / 1024:.0f} KB each; results.json "
            f"{results / 2**20:.1f} MB)",
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
