"""COCO OKS AP of the bundled models through metapose's pipeline, codec by codec, and of the
original ncnn release through the very same pipeline.

For each zoo model on ``../shared/data/coco/mini`` val (79 images, GT boxes): the checkpoint with
its native codec (UDP crop affine, ``x / stride`` heatmaps, DARK), with full UDP (heatmaps at
``x (w-1)/(W-1)`` too), with SimpleBaseline's codec (SimpleBaseline crop, quarter offset), and the
original ncnn files run by the ``ncnn`` package in place of PyTorch with the native codec; each
with and without the flip test. Crops, normalisation, decoding and scoring are shared, so the rows
differ only in what they name. Run: ``python benchmarks/zoo_accuracy.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ncnn
import numpy as np
import torch

from metapose.config import CodecConfig, replace
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.device import DeviceOptions
from metapose.evaluation.evaluate import evaluate
from metapose.inference.crop_runner import torch_heatmap_fn
from metapose.inference.estimators import PoseEstimator
from metapose.inference.heatmaps import HeatmapFn
from metapose.inference.predict import PredictOptions
from metapose.models.checkpoint import load_checkpoint
from metapose.models.zoo import ZOO
from metapose.skeleton import COCO17

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
NCNN_FILES = {
    "pp-tinypose-128x96": "models/pp_tinypose/tinypose_128x96",
    "pp-tinypose-256x192": "models/pp_tinypose/tinypose_256x192",
}
NCNN_INPUT, NCNN_OUTPUT = "image", "save_infer_model/scale_0.tmp_1"
SIMPLEBASELINE = CodecConfig()


def ncnn_heatmap_fn(stem: Path) -> HeatmapFn:
    """The ncnn release as a heatmap function (ncnn's default options, one crop at a time)."""
    net = ncnn.Net()
    net.load_param(str(stem.with_suffix(".param")))
    net.load_model(str(stem.with_suffix(".bin")))

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        for image in images:
            extractor = net.create_extractor()
            extractor.input(NCNN_INPUT, ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)))
            _, heatmaps = extractor.extract(NCNN_OUTPUT)
            out.append(np.array(heatmaps))
        return np.stack(out)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data/coco/mini")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    gt = load_coco(
        args.data / "annotations/person_keypoints_val2017.json",
        args.data / "val2017",
        require_trainable=False,
    )
    options = DeviceOptions(torch.device("cpu"))
    rows = []
    for name, entry in ZOO.items():
        model = load_checkpoint(name).model
        native = model.config
        variants = {
            "native (UDP crop + DARK)": (torch_heatmap_fn(model, options), native),
            "full UDP + DARK": (
                torch_heatmap_fn(model, options),
                replace(native, codec=replace(native.codec, encoding="udp")),
            ),
            "SimpleBaseline codec": (
                torch_heatmap_fn(model, options),
                replace(native, codec=SIMPLEBASELINE),
            ),
            "ncnn release, native codec": (ncnn_heatmap_fn(SHARED / NCNN_FILES[name]), native),
        }
        for variant, (fn, config) in variants.items():
            estimator = PoseEstimator(fn, HeatmapCodec.for_model(config), COCO17, entry.path)
            for flip in (False, True):
                score = evaluate(estimator, gt, options=PredictOptions(flip=flip))
                row = {
                    "model": name,
                    "variant": variant,
                    "flip": flip,
                    **{k: round(v, 4) for k, v in score.as_dict().items()},
                }
                rows.append(row)
                print(
                    f"{name:20s} {variant:28s} flip={flip!s:5s} AP {row['ap']:.3f} "
                    f"AP50 {row['ap50']:.3f} AR {row['ar']:.3f}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
