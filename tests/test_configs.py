"""Every configuration shipped in configs/ loads, and keeps its promises (equal budgets)."""

from pathlib import Path

import pytest

from metapose.config import ConfigError, ExperimentConfig, ResNetConfig, load_config, replace
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads_with_equal_budgets(path: Path) -> None:
    cfg = load_config(path, ExperimentConfig)
    meta_images = cfg.meta.meta_steps * cfg.meta.images_per_meta_step
    assert abs(cfg.baseline.images - meta_images) < cfg.baseline.batch_size


def test_the_shipped_configs_are_the_documented_ones() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"demo", "paper", "lspet_cpu", "lspet_gpu"} <= names
    paper = load_config(REPO / "configs" / "paper.yaml", ExperimentConfig)
    assert paper.model.backbone == ResNetConfig(depth=50) and paper.model.input_size == (192, 256)
    assert paper.meta.meta_step == 0.05 and paper.meta.batch_size == 32
    assert paper.meta.meta_steps == 15000 and paper.shots == (16, 32) and paper.adapt.epochs == 20


def test_unequal_budgets_are_refused() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(ConfigError, match="unequal budgets"):
        replace(cfg, baseline=replace(cfg.baseline, steps=cfg.baseline.steps // 2))
