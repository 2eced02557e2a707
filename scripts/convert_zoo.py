"""Convert the PP-TinyPose ncnn release into metapose's bundled zoo checkpoints.

    python scripts/convert_zoo.py [--models ../shared/models] [--out src/metapose/models/zoo_data]

Reads ``pp_tinypose/tinypose_{128x96,256x192}.{param,bin}`` (PaddleDetection's PP-TinyPose,
Apache-2.0, in the ncnn conversion described in the models' README), imports each by graph order
(:func:`metapose.models.weights.import_weights`), records how PaddleDetection trained it (UDP
crop affine, heatmap targets at ``x / stride`` with sigma 1 per 24 heatmap pixels = 2 per 48,
DARK decoding, ImageNet normalisation) and writes one compact checkpoint per model. The output
depends only on the source files and this code: running it again writes the same bytes, which
``tests/test_zoo.py`` checks against ``metapose.models.zoo.ZOO``'s checksums.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from metapose.checkpoint import save_checkpoint
from metapose.models.weights import import_weights
from metapose.models.weights.ncnn import PP_TINYPOSE_CODEC
from metapose.models.zoo import ZOO, ZooModel

SOURCES = {
    "pp-tinypose-128x96": "pp_tinypose/tinypose_128x96.param",
    "pp-tinypose-256x192": "pp_tinypose/tinypose_256x192.param",
}
ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(entry: ZooModel, param: Path, out_dir: Path) -> Path:
    model, report = import_weights(param, "ncnn", codec=PP_TINYPOSE_CODEC)
    if not report.complete:
        raise SystemExit(f"{param}: import incomplete:\n{report.summary()}")
    origin = {
        "converted_by": "scripts/convert_zoo.py",
        "source": entry.source,
        "licence": entry.licence,
        "files": {
            p.name: sha256(p) for p in (param, param.with_suffix(".bin"))
        },
    }
    return save_checkpoint(
        out_dir / entry.file,
        model,
        metrics={"coco_val2017_ap_published": entry.published_ap},
        origin=origin,
        compact=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "src/metapose/models/zoo_data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, relative in SOURCES.items():
        path = convert(ZOO[name], args.models / relative, args.out)
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.2f} MB) sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
