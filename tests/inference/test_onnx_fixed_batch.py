"""OnnxHeatmapModel on graphs whose batch axis is fixed (Ultralight-SimplePose fixes it to 1):
any batch runs in chunks, transparently; a graph that disagrees with its metadata or with the
images it is given is one clear DataError instead of an onnxruntime traceback."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from metapose.config import MobileNetV2Config, ModelConfig, Normalization
from metapose.errors import DataError
from metapose.inference.onnx_runtime import METADATA_KEY, ModelMetadata, OnnxHeatmapModel
from metapose.models import TopDownModel
from tests.conftest import REPO

SHARED = REPO.parent / "shared"
ULTRALIGHT = SHARED / "models" / "ultralight_simplepose" / "deploy.onnx"

CONFIG = ModelConfig(
    backbone=MobileNetV2Config(width_mult=0.25, last_channels=32),
    input_size=(32, 64),
    deconv_channels=(16, 16, 16),
    deconv_separable=True,
)
HEATMAP = (8, 16)  # (width, height)


def tiny_model() -> TopDownModel:
    """Heatmaps of order one, so that a tolerance means something."""
    torch.manual_seed(0)
    model = TopDownModel(CONFIG)
    with torch.no_grad():
        for m in [*model.deconv_layers, model.final_layer]:
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight)
    return model.eval()


def export_fixed(
    model: TopDownModel, path: Path, batch: int, metadata_size: tuple[int, int] | None = None
) -> Path:
    """Export with a static batch axis of ``batch`` (no dynamic axes)."""
    width, height = model.config.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(batch, 3, height, width),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["data"],
            output_names=["heatmaps"],
        )
    if metadata_size is not None:
        proto = onnx.load(str(path))
        metadata = ModelMetadata(
            input_size=metadata_size,
            heatmap_size=HEATMAP,
            keypoints=tuple(f"k{i}" for i in range(17)),
            flip_index=tuple(range(17)),
            normalization=Normalization(),
        )
        onnx.helper.set_model_props(proto, {METADATA_KEY: metadata.to_json()})
        onnx.save(proto, str(path))
    return path


def crops(n: int, seed: int = 0) -> np.ndarray:
    width, height = CONFIG.input_size
    return np.random.default_rng(seed).standard_normal((n, 3, height, width)).astype(np.float32)


def reference(model: TopDownModel, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        heatmaps: np.ndarray = model(torch.from_numpy(images)).numpy()
    return heatmaps


@pytest.fixture(scope="module")
def model() -> TopDownModel:
    return tiny_model()


@pytest.mark.parametrize("batch", [1, 2])
def test_a_fixed_batch_runs_in_chunks(
    model: TopDownModel, tmp_path: Path, batch: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = export_fixed(model, tmp_path / "fixed.onnx", batch)
    with caplog.at_level(logging.INFO, logger="metapose.inference.onnx_runtime"):
        runtime = OnnxHeatmapModel(path)
    assert runtime.batch_size == batch
    assert "batch axis is fixed" in caplog.text
    assert runtime.input_size == CONFIG.input_size
    assert (runtime.num_keypoints, runtime.heatmap_size) == (17, HEATMAP)
    for n in (1, 2, 5):  # a partial last chunk is padded and its padding dropped
        images = crops(n, seed=n)
        heatmaps = runtime(images)
        assert heatmaps.shape == (n, 17, HEATMAP[1], HEATMAP[0])
        assert float(np.abs(heatmaps - reference(model, images)).max()) <= 1e-4
    assert runtime(crops(0)).shape == (0, 17, HEATMAP[1], HEATMAP[0])


def test_a_dynamic_batch_is_left_alone(model: TopDownModel, tmp_path: Path) -> None:
    from metapose.inference.export import export_onnx

    runtime = OnnxHeatmapModel(export_onnx(model, tmp_path / "dynamic.onnx"))
    assert runtime.batch_size is None
    assert runtime(crops(3)).shape == (3, 17, HEATMAP[1], HEATMAP[0])


def test_metadata_that_disagrees_with_the_graph(model: TopDownModel, tmp_path: Path) -> None:
    path = export_fixed(model, tmp_path / "fixed.onnx", 1, metadata_size=(64, 128))
    with pytest.raises(DataError, match=r"input is 32x64 \(WxH\) but its metadata says 64x128"):
        OnnxHeatmapModel(path)
    agreeing = export_fixed(model, tmp_path / "agreeing.onnx", 1, metadata_size=(32, 64))
    assert OnnxHeatmapModel(agreeing).metadata is not None


def test_a_given_size_that_disagrees_with_the_graph(model: TopDownModel, tmp_path: Path) -> None:
    path = export_fixed(model, tmp_path / "fixed.onnx", 1)
    with pytest.raises(DataError, match=r"input is 32x64 \(WxH\), not 64x128"):
        OnnxHeatmapModel(path, input_size=(64, 128))


def test_images_of_the_wrong_size(model: TopDownModel, tmp_path: Path) -> None:
    runtime = OnnxHeatmapModel(export_fixed(model, tmp_path / "fixed.onnx", 1))
    with pytest.raises(DataError, match=r"images of shape \(2, 3, 32, 32\); the model takes"):
        runtime(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match="images of shape"):
        runtime(np.zeros((3, 64, 32), np.float32))


def test_ultralight_runs_any_batch() -> None:
    if not ULTRALIGHT.exists():
        pytest.skip(f"{ULTRALIGHT} not found (../shared beside the repository holds it)")
    runtime = OnnxHeatmapModel(ULTRALIGHT)
    assert runtime.batch_size == 1
    assert runtime.input_size == (192, 256) and runtime.heatmap_size == (48, 64)
    images = np.random.default_rng(0).standard_normal((3, 3, 256, 192)).astype(np.float32)
    batched = runtime(images)
    one_by_one = np.concatenate([runtime(images[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 17, 64, 48)
    np.testing.assert_array_equal(batched, one_by_one)
