"""Every configuration shipped in configs/ loads, and keeps its promises (equal budgets)."""

from pathlib import Path

import pytest

from metapose.config import ConfigError, ExperimentConfig, ResNetConfig, load_config, replace
from metapose.models.zoo import ZOO
from tests.conftest import REPO, require

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads_with_equal_budgets(path: Path) -> None:
    cfg = load_config(path, ExperimentConfig)
    if "supervised" in cfg.arms and "meta" in cfg.arms:
        meta_images = cfg.meta.meta_steps * cfg.meta.images_per_meta_step
        assert abs(cfg.supervised.images - meta_images) < cfg.supervised.batch_size
    assert cfg.init in ZOO  # every shipped experiment starts from a bundled COCO-trained model


def test_the_shipped_configs_are_the_documented_ones() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"demo", "paper", "lspet_cpu", "lspet_gpu"} <= names
    paper = load_config(REPO / "configs" / "paper.yaml", ExperimentConfig)
    assert paper.init == "pp-tinypose-256x192" and paper.arms == ("as-is", "supervised", "meta")
    assert paper.meta.meta_step == 0.05 and paper.meta.batch_size == 32
    assert paper.meta.meta_steps == 15000 and paper.shots == (16, 32) and paper.adapt.epochs == 20


def test_demo_semi_is_the_demo_with_semi_supervised_twins() -> None:
    demo = load_config(REPO / "configs" / "demo.yaml", ExperimentConfig)
    semi = load_config(REPO / "configs" / "demo_semi.yaml", ExperimentConfig)
    assert demo.semi is None and semi.semi is not None
    assert replace(semi, name=demo.name, semi=None) == demo
    assert semi.semi_twins == ("as-is+distill", "meta+distill")


def test_unequal_budgets_are_refused() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(ConfigError, match="unequal budgets"):
        replace(cfg, supervised=replace(cfg.supervised, steps=cfg.supervised.steps // 2))


def test_configs_of_earlier_versions_still_load(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("model: {depth: 18, input_size: [96, 128]}\nbaseline: {steps: 60000}\n")
    cfg = load_config(old, ExperimentConfig)
    assert cfg.model.backbone == ResNetConfig(depth=18) and cfg.supervised.steps == 60000


def test_init_and_a_model_config_are_not_both_given() -> None:
    with pytest.raises(ConfigError, match="either init"):
        ExperimentConfig(
            init="pp-tinypose-128x96", model=replace(ExperimentConfig().model, num_keypoints=14)
        )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_paths_point_beside_the_repository(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Paths are relative to configs/, so they name the same files from any directory."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, ExperimentConfig)
    shared = REPO.parent / "shared"
    for target in cfg.targets:
        for name in (target.annotations, target.image_dir):
            if name is not None:
                assert Path(name).is_absolute() and Path(name).is_relative_to(shared), name
                require(Path(name))
