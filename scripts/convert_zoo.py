"""Convert the PP-TinyPose ncnn release into metapose's bundled zoo checkpoints.

    python scripts/convert_zoo.py [--models ../shared/models] [--out src/metapose/models/zoo_data]

Reads ``pp_tinypose/tinypose_{128x96,256x192}.{param,bin}`` (PaddleDetection's PP-TinyPose,
Apache-2.0, in the ncnn conversion described in the models' README), imports each by graph order
(:func:`metapose.models.weights.import_checkpoint`), records how PaddleDetection trained it (UDP
crop affine, heatmap targets at ``x / stride`` with sigma 1 per 24 heatmap pixels = 2 per 48,
DARK decoding, ImageNet normalisation), gives the BatchNorm layers the ncnn file folded away the
statistics of real COCO train people (so the model trains like the original:
:mod:`metapose.models.weights.unfold`) and writes one compact checkpoint per model. The output
depends only on the source files and this code: running it again on one machine writes the same
bytes (``metapose.models.zoo.ZOO``'s checksums); on another CPU the BatchNorm statistics may differ
in their last float32 bits, so ``tests/models/test_zoo.py`` compares the tensors within that noise.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from metapose.config import CocoFolderConfig
from metapose.data.codec import HeatmapCodec
from metapose.models.weights import import_checkpoint
from metapose.models.weights.ncnn_reader import PP_TINYPOSE_CODEC
from metapose.models.zoo import ZOO, ZooModel
from metapose.training.sources import calibration_batches

SOURCES = {
    "pp-tinypose-128x96": "pp_tinypose/tinypose_128x96.param",
    "pp-tinypose-256x192": "pp_tinypose/tinypose_256x192.param",
}
ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(entry: ZooModel, param: Path, coco: list[CocoFolderConfig], out_dir: Path) -> Path:
    origin = {
        "converted_by": "scripts/convert_zoo.py",
        "source": entry.source,
        "licence": entry.licence,
        "files": {p.name: sha256(p) for p in (param, param.with_suffix(".bin"))},
        "batchnorm_statistics": [Path(c.annotations).name for c in coco],
        "coco_val2017_ap_published": entry.published_ap,
    }
    path, report, unfolded = import_checkpoint(
        param,
        "ncnn",
        out_dir / entry.file,
        codec=PP_TINYPOSE_CODEC,
        compact=True,
        calibration=lambda config: calibration_batches(HeatmapCodec.for_model(config), coco),
        origin=origin,
    )
    if not report.complete or not unfolded:
        raise SystemExit(f"{param}: import incomplete:\n{report.summary()}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco")
    parser.add_argument("--out", type=Path, default=ROOT / "src/metapose/models/zoo_data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # BatchNorm statistics from the real COCO people of the train splits beside the repository
    # (tiny, then mini: 256 crops at most), one thread so that the sums come out the same.
    torch.set_num_threads(1)
    coco = [
        CocoFolderConfig(str(root / "annotations/person_keypoints_train2017.json"),
                         str(root / "train2017"))
        for root in (args.data / "tiny", args.data / "mini")
    ]
    for name, relative in SOURCES.items():
        path = convert(ZOO[name], args.models / relative, coco, args.out)
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.2f} MB) sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
