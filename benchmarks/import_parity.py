"""Parity of every import against its original runtime, and of its ONNX export, on real crops.

For PP-TinyPose 128x96 and 256x192 (ncnn files, run by the ``ncnn`` package) and
Ultralight-Nano-SimplePose (an ONNX file, run by onnxruntime), on every labelled, non-crowd person
of ``../shared/data/coco/mini`` val (GT boxes, cropped by the model's codec, normalised by its
statistics): the original runtime's heatmaps beside (a) metapose's imported PyTorch model and (b)
that model exported by ``metapose.inference.export.export_onnx`` and run by onnxruntime. Prints the
max |heatmap difference| and the share of keypoints whose heatmap peak (argmax) is the same pixel.
Run: ``python benchmarks/import_parity.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import ncnn
import numpy as np
import onnxruntime as ort
import torch

from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import TopDownDataset, instances_from_coco
from metapose.inference.export import export_onnx
from metapose.models.weights import import_weights

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MINI = SHARED / "data" / "coco" / "mini"
HeatmapFn = Callable[[np.ndarray], np.ndarray]


def ncnn_fn(param: Path) -> HeatmapFn:
    net = ncnn.Net()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.load_param(str(param))
    net.load_model(str(param.with_suffix(".bin")))

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        for image in images:
            ex = net.create_extractor()
            ex.input("image", ncnn.Mat(np.ascontiguousarray(image)))
            out.append(np.array(ex.extract("save_infer_model/scale_0.tmp_1")[1]))
        return np.stack(out)

    return run


def onnx_fn(path: Path, one_at_a_time: bool) -> HeatmapFn:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        if one_at_a_time:
            return np.concatenate([session.run(None, {name: x[None]})[0] for x in images])
        return session.run(None, {name: images})[0]

    return run


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    peaks_a = a.reshape(*a.shape[:2], -1).argmax(-1)
    peaks_b = b.reshape(*b.shape[:2], -1).argmax(-1)
    return float(np.abs(a - b).max()), float((peaks_a == peaks_b).mean())


def main() -> None:
    torch.set_num_threads(2)
    gt = load_coco(MINI / "annotations/person_keypoints_val2017.json", MINI / "val2017")
    cases = {
        "pp-tinypose 128x96 (ncnn)": (SHARED / "models/pp_tinypose/tinypose_128x96.param", None),
        "pp-tinypose 256x192 (ncnn)": (SHARED / "models/pp_tinypose/tinypose_256x192.param", None),
        "ultralight (onnx)": (SHARED / "models/ultralight_simplepose/deploy.onnx", True),
    }
    print("| model | crops | imported: max diff | peaks | exported ONNX: max diff | peaks |")
    print("|---|---|---|---|---|---|")
    for title, (path, is_onnx) in cases.items():
        model, report = import_weights(path)
        assert report.complete, report.summary()
        model.eval()
        codec = HeatmapCodec.for_model(model.config)
        dataset = TopDownDataset(instances_from_coco(gt), codec)
        crops = np.stack([dataset[i].image.numpy() for i in range(len(dataset))])
        original = onnx_fn(path, True)(crops) if is_onnx else ncnn_fn(path)(crops)
        with torch.no_grad():
            imported = model(torch.from_numpy(crops)).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            exported = onnx_fn(export_onnx(model, Path(tmp) / "m.onnx"), False)(crops)
        d1, p1 = compare(imported, original)
        d2, p2 = compare(exported, original)
        print(f"| {title} | {len(crops)} | {d1:.2e} | {p1:.2%} | {d2:.2e} | {p2:.2%} |", flush=True)


if __name__ == "__main__":
    main()
