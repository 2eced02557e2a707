"""Shared fixtures: tiny models and the location of the real data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metapose.config import ModelConfig, ResNetConfig
from metapose.models import TopDownModel

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
COCO_TINY = SHARED_DATA / "coco" / "tiny"
COCO_MINI = SHARED_DATA / "coco" / "mini"
LSPET = SHARED_DATA / "lspet"

TINY_MODEL = ModelConfig(
    backbone=ResNetConfig(depth=18), input_size=(32, 64), deconv_channels=(16, 16, 16)
)


def require(path: Path) -> Path:
    """Skip (with the reason shown) when the real data beside the repository is absent."""
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data beside the repository)")
    return path


@pytest.fixture
def tiny_model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)
