"""ONNX export: checker, dynamic batch, parity with onnxruntime, and the torch-free app pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from metapose.config import Normalization
from metapose.data.coco import load_coco
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, TopDownDataset
from metapose.errors import DataError
from metapose.inference.crop_runner import predict
from metapose.inference.export import (
    PARITY_TOLERANCE,
    ParityError,
    check_parity,
    coco_crops,
    export_checked,
    export_onnx,
)
from metapose.inference.onnx_runtime import OnnxHeatmapModel, estimate_poses
from metapose.models import TopDownModel
from metapose.skeleton import COCO17
from tests.conftest import COCO_TINY, TINY_MODEL, require

IMAGENET = Normalization()

TINY_CODEC = HeatmapCodec.for_model(TINY_MODEL)


def lively_model(seed: int = 0) -> TopDownModel:
    """A tiny model whose heatmaps are of order one (the default head init gives ~1e-3 maps,
    next to which any tolerance is vacuous) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TopDownModel(TINY_MODEL)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for m in [*model.deconv_layers, model.final_layer]:
            if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
    return model.eval()


def random_crops(n: int, seed: int = 0) -> np.ndarray:
    width, height = TINY_MODEL.input_size
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, height, width)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TopDownModel, Path]:
    model = lively_model()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_export_passes_the_checker_and_matches_pytorch(exported: tuple[TopDownModel, Path]) -> None:
    model, path = exported
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    crops = random_crops(4)
    with torch.no_grad():
        assert model(torch.from_numpy(crops)).std() > 0.1  # so the tolerance means something
    assert check_parity(model, path, crops) <= PARITY_TOLERANCE


def test_the_batch_axis_is_dynamic(exported: tuple[TopDownModel, Path]) -> None:
    model, path = exported
    runtime = OnnxHeatmapModel(path)
    w, h = TINY_MODEL.heatmap_size
    for n in (1, 5):
        assert runtime(random_crops(n, seed=n)).shape == (n, 17, h, w)
    assert check_parity(model, path, random_crops(1, seed=9)) <= PARITY_TOLERANCE


def test_parity_on_real_coco_crops(exported: tuple[TopDownModel, Path]) -> None:
    model, path = exported
    gt = load_coco(require(COCO_TINY) / "annotations" / "person_keypoints_val2017.json")
    crops = coco_crops(gt, TINY_CODEC, limit=6)
    assert crops.shape == (6, 3, 64, 32)
    assert check_parity(model, path, crops) <= PARITY_TOLERANCE


def test_parity_catches_a_model_that_differs(tmp_path: Path) -> None:
    model = lively_model()
    path = export_onnx(model, tmp_path / "m.onnx")
    with torch.no_grad():
        model.final_layer.bias += 1e-2
    assert check_parity(model, path, random_crops(2)) == pytest.approx(1e-2, rel=1e-3)


def test_export_checked_reports_both_checks_and_refuses_bad_parity(tmp_path: Path) -> None:
    model = lively_model()
    rng = np.random.default_rng(0)
    report = export_checked(model, tmp_path / "ok.onnx", rng, real_crops=random_crops(2, 7))
    assert report.path.is_file() and report.opset == 17
    assert report.max_abs_diff_random <= PARITY_TOLERANCE
    assert report.max_abs_diff_real is not None and report.max_abs_diff_real <= PARITY_TOLERANCE
    with pytest.raises(ParityError, match="differs"):
        export_checked(model, tmp_path / "bad.onnx", rng, tolerance=-1.0)
    assert not (tmp_path / "bad.onnx").exists()


def test_export_reports_its_stages_with_their_totals(tmp_path: Path) -> None:
    from tests.helpers import RecordingProgress

    model = lively_model()
    gt = load_coco(require(COCO_TINY) / "annotations" / "person_keypoints_val2017.json")
    progress = RecordingProgress()
    real = coco_crops(gt, TINY_CODEC, limit=6, progress=progress)
    report = export_checked(
        model, tmp_path / "m.onnx", np.random.default_rng(0), real_crops=real, progress=progress
    )
    assert progress.finished() == [
        ("crop check images", 6),
        ("export ONNX", 1),
        ("parity checks", 10),
    ]
    # Checked in chunks, the real crops' difference is still the whole set's.
    assert report.max_abs_diff_real == check_parity(model, report.path, real)


def test_export_leaves_the_callers_model_alone(tmp_path: Path) -> None:
    model = lively_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", opset=20)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=21)


def test_the_file_describes_itself(exported: tuple[TopDownModel, Path]) -> None:
    _, path = exported
    runtime = OnnxHeatmapModel(path)
    assert runtime.input_size == TINY_MODEL.input_size
    assert runtime.heatmap_size == TINY_MODEL.heatmap_size
    assert runtime.normalization == IMAGENET
    assert runtime.metadata is not None
    assert runtime.metadata.keypoints == COCO17.keypoints
    assert runtime.metadata.flip_index == tuple(COCO17.flip_index)
    assert runtime.codec().stride == TINY_CODEC.stride


# The bare TorchScript export below warns that it is deprecated (see metapose.inference.export).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_foreign_model_needs_its_normalization_and_a_dynamic_size_needs_input_size(
    tmp_path: Path,
) -> None:
    model = lively_model()
    path = tmp_path / "foreign.onnx"
    # A bare torch export: no metapose metadata, height and width dynamic.
    torch.onnx.export(
        model, (torch.zeros(1, 3, 64, 32),), str(path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
    )  # fmt: skip
    with pytest.raises(DataError, match="dynamic; pass the input size"):
        OnnxHeatmapModel(path)
    runtime = OnnxHeatmapModel(path, input_size=(32, 64))
    assert runtime.normalization is None and runtime.heatmap_size == (8, 16)
    with pytest.raises(ValueError, match="normalization"):
        estimate_poses(runtime, np.zeros((64, 32, 3), np.uint8), np.array([[0, 0, 32, 64]]))


def test_normalization_conversion_equals_normalising_directly() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    mmpose_style = Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    converted = IMAGENET.convert(IMAGENET.apply(image)[None], mmpose_style)[0]
    np.testing.assert_allclose(converted, mmpose_style.apply(image), atol=1e-5)
    with pytest.raises(ValueError, match="> 0"):
        Normalization(mean=(0, 0, 0), std=(1, 0, 1))


def test_the_app_pipeline_equals_metapose_inference(exported: tuple[TopDownModel, Path]) -> None:
    """estimate_poses (numpy, OpenCV, onnxruntime) gives what metapose's own predict gives."""
    _, path = exported
    runtime = OnnxHeatmapModel(path)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 5.0, 30.0, 70.0], [30.5, 20.0, 35.0, 40.0]])
    app = estimate_poses(runtime, image, boxes, flip_index=COCO17.flip_index)
    no_labels = np.zeros((17, 3), np.float32)
    instances = [Instance(image=image, box=tuple(b), keypoints=no_labels) for b in boxes]
    library = predict(runtime, TopDownDataset(instances, runtime.codec()), flip=True)
    expected = np.stack([p.keypoints for p in library])
    assert app.shape == (2, 17, 3)
    np.testing.assert_allclose(app, expected, atol=1e-4)
    unflipped = estimate_poses(runtime, image, boxes)
    assert not np.allclose(unflipped[..., 2], app[..., 2])  # the flip test did something


def test_the_runtime_module_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import metapose.inference.onnx_runtime\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
