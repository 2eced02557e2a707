"""Every backbone goes through every phase: gradients, fine-tuning, Reptile, exact resume, ONNX
export with parity, and a checkpoint round trip, on a tiny configuration of each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.config import (
    AdaptConfig,
    LiteHRNetConfig,
    MobileNetV2Config,
    ModelConfig,
    OptimizerConfig,
    ReptileConfig,
    TrainConfig,
)
from metapose.data.batches import EpochBatches
from metapose.device import DeviceOptions
from metapose.inference.export import PARITY_TOLERANCE, check_parity, export_onnx
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint, save_checkpoint
from metapose.training.adapt import fine_tune
from metapose.training.meta import meta_train
from metapose.training.run_folder import StepLog
from metapose.training.train import train
from tests.conftest import TINY_MODEL
from tests.helpers import TINY_CODEC, tiny_dataset

CPU = torch.device("cpu")
TINY = {
    "resnet": TINY_MODEL,
    "lite_hrnet": ModelConfig(
        backbone=LiteHRNetConfig(
            stem_channels=8,
            branch_channels=(8, 16, 32, 64),
            modules_per_stage=(1, 1, 1),
            blocks_per_module=1,
        ),
        deconv_channels=(),
        input_size=TINY_MODEL.input_size,
    ),
    "mobilenet_v2": ModelConfig(
        backbone=MobileNetV2Config(width_mult=0.25, last_channels=32),
        deconv_channels=(16, 16, 16),
        deconv_separable=True,
        input_size=TINY_MODEL.input_size,
    ),
}
pytestmark = pytest.mark.parametrize("name", sorted(TINY))


def build(name: str, seed: int = 0) -> TopDownModel:
    torch.manual_seed(seed)
    model = TopDownModel(TINY[name])
    assert model.config.heatmap_size == TINY_CODEC.heatmap_size  # tiny_dataset's targets fit
    return model


def test_every_parameter_receives_a_gradient(name: str) -> None:
    model = build(name).train()
    batch = next(EpochBatches(tiny_dataset(4), 4, seed=0).batches())
    model(batch.image).pow(2).mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent


def test_fine_tune_and_reptile_move_the_weights(name: str) -> None:
    options = DeviceOptions(CPU, amp=False, channels_last=False)
    model = build(name)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    adapt = AdaptConfig(optimizer=OptimizerConfig(lr=1e-2), epochs=2, batch_size=4)
    losses = fine_tune(model, tiny_dataset(8), adapt, options).losses
    assert all(np.isfinite(losses))
    meta = ReptileConfig(meta_steps=1, inner_steps=2, batch_size=4)
    meta_train(model, EpochBatches(tiny_dataset(8), 4, seed=0), meta, CPU)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, start[k])]
    assert len(moved) > len(start) // 2


def test_interrupted_training_resumes_to_identical_weights(name: str, tmp_path: Path) -> None:
    data = tiny_dataset(8)
    cfg = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, lr_milestones=(0.75,))
    straight = build(name)
    train(straight, EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path / "a")

    def crash(entry: StepLog) -> None:
        if entry.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            build(name),
            EpochBatches(data, 4, seed=1),
            cfg,
            CPU,
            out_dir=tmp_path / "b",
            on_step=crash,
        )
    resumed = build(name)
    train(resumed, EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path / "b")
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_onnx_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    model = build(name).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    w, h = model.config.input_size
    inputs = np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
    assert check_parity(model, path, inputs) <= PARITY_TOLERANCE


def test_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    model = build(name)
    loaded = load_checkpoint(save_checkpoint(tmp_path / name, model)).model
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
