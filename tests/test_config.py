from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metapose.config import (
    CocoFolderConfig,
    ConfigError,
    ExperimentConfig,
    MetaRunConfig,
    ModelConfig,
    ResNetConfig,
    SourceConfig,
    TopDownAugmentConfig,
    TrainRunConfig,
    load_config,
    save_config,
    to_dict,
)


@dataclass(frozen=True)
class Root:
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: TopDownAugmentConfig = field(default_factory=TopDownAugmentConfig)
    name: str = "x"
    seeds: tuple[int, ...] = (0, 1)


def test_yaml_overrides_only_what_it_names(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  depth: 18\n  input_size: [96, 128]\nseeds: [3]\n")
    cfg = load_config(p, Root)
    assert (
        cfg.model.backbone == ResNetConfig(depth=18)
        and cfg.model.input_size == (96, 128)
        and cfg.seeds == (3,)
    )
    assert cfg.augment == TopDownAugmentConfig()


def test_save_then_load_is_identity(tmp_path: Path) -> None:
    cfg = Root(model=ModelConfig(backbone=ResNetConfig(depth=34)), name="y")
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml", Root) == cfg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("modle:\n  depth: 18\n", "unknown key modle"),
        ("model:\n  dept: 18\n", "unknown key model.dept"),
        ("model:\n  backbone: {kind: resnet, depth: x}\n", "model.backbone.depth: must be an"),
        ("model:\n  backbone: {kind: resnet, depth: 20}\n", "backbone.depth must be one of"),
        ("model:\n  backbone: {kind: vgg}\n", "model.backbone.kind: must be one of"),
        ("model:\n  codec: {sigma_at_48: .nan}\n", "codec.sigma_at_48: must be a finite number"),
        ("model:\n  input_size: [96]\n", "model.input_size: must have 2 items"),
        ("model: [1, 2\n", "malformed YAML"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_config(p, Root)
    assert str(p) in str(err.value)


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metapose.config import ExperimentConfig, MetaRunConfig, TrainRunConfig
    from metapose.models.zoo import ZOO

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = folder / "exp.yaml"
    config.write_text(
        "init: ../models/start.safetensors\n"
        "source:\n"
        "  coco: [{annotations: data/src.json, image_dir: data/src}]\n"
        "targets:\n"
        "  - {name: real, annotations: ../../shared/t.json, image_dir: /abs/images,"
        " pool_ids: [1, 2], test_ids: [3, 4]}\n"
    )
    cfg = load_config(config, ExperimentConfig)
    assert cfg.init == str(tmp_path / "project" / "models" / "start.safetensors")
    assert cfg.source.coco[0].annotations == str(folder / "data" / "src.json")
    assert cfg.source.coco[0].image_dir == str(folder / "data" / "src")
    assert cfg.targets[0].annotations == str(tmp_path / "shared" / "t.json")
    assert cfg.targets[0].image_dir == "/abs/images"
    # Saved (as the experiment does in its run folder) and loaded again: the same paths.
    (elsewhere / "run").mkdir()
    save_config(cfg, elsewhere / "run" / "config.yaml")
    assert load_config(elsewhere / "run" / "config.yaml", ExperimentConfig) == cfg

    zoo_name = next(iter(ZOO))
    config.write_text(f"init: {zoo_name}\n")
    assert load_config(config, ExperimentConfig).init == zoo_name
    # The semi-supervised twins' teacher: a file beside the config, or a zoo name kept as is.
    config.write_text("semi: {teacher: ../models/teacher.safetensors}\n")
    semi = load_config(config, ExperimentConfig).semi
    assert semi is not None
    assert semi.teacher == str(tmp_path / "project" / "models" / "teacher.safetensors")
    config.write_text(f"semi: {{teacher: {zoo_name}}}\n")
    semi = load_config(config, ExperimentConfig).semi
    assert semi is not None and semi.teacher == zoo_name

    config.write_text(
        "data: {domains: [], coco: [{annotations: train.json}]}\nval: {annotations: v/val.json}\n"
    )
    train = load_config(config, TrainRunConfig)
    assert train.data.coco[0].annotations == str(folder / "train.json")
    assert train.val is not None and train.val.annotations == str(folder / "v" / "val.json")
    config.write_text("data: {coco: [{annotations: train.json, image_dir: images}]}\n")
    meta = load_config(config, MetaRunConfig)
    assert meta.data.domains == ("rgb",)  # folders mix with the default synthetic domain
    assert (meta.data.coco[0].annotations, meta.data.coco[0].image_dir) == (
        str(folder / "train.json"),
        str(folder / "images"),
    )


@pytest.mark.parametrize("cls", [TrainRunConfig, MetaRunConfig])
def test_a_data_folder_of_earlier_versions_is_read_as_a_source_of_one_folder(
    cls: type[TrainRunConfig] | type[MetaRunConfig], tmp_path: Path
) -> None:
    config = tmp_path / "old.yaml"
    config.write_text("data: {annotations: a.json, image_dir: im, domains: [rgb]}\n")
    cfg = load_config(config, cls)
    assert cfg.data == SourceConfig(
        domains=(), coco=(CocoFolderConfig(str(tmp_path / "a.json"), str(tmp_path / "im")),)
    )


@pytest.mark.parametrize("cls", [ExperimentConfig, MetaRunConfig])
def test_a_root_task_sampler_is_read_as_the_task_augment_sampler(
    cls: type[ExperimentConfig] | type[MetaRunConfig], tmp_path: Path
) -> None:
    """Files (and resume identities) written before the sampler moved into ``task_augment``."""
    path = tmp_path / "old.yaml"
    path.write_text("task_sampler: style\ntask_augment: {styles: [affine]}\n")
    loaded = load_config(path, cls)
    assert loaded.task_augment.sampler == "style" and loaded.task_augment.styles == ("affine",)
    old = to_dict(cls())
    old["task_sampler"] = old["task_augment"].pop("sampler")
    assert cls.upgrade_dict(old) == to_dict(cls())


def test_the_experiments_semi_block_round_trips_and_bad_values_are_one_line(
    tmp_path: Path,
) -> None:
    from metapose.config.training import SemiConfig

    assert ExperimentConfig().semi is None and ExperimentConfig().semi_twins == ()
    path = tmp_path / "e.yaml"
    path.write_text("arms: [as-is, meta]\nsemi: {method: mean_teacher, steps: 7}\n")
    cfg = load_config(path, ExperimentConfig)
    assert cfg.semi == SemiConfig(method="mean_teacher", steps=7)
    assert cfg.semi_twins == ("as-is+mean_teacher", "meta+mean_teacher")
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml", ExperimentConfig) == cfg
    assert ExperimentConfig.upgrade_dict(to_dict(cfg)) == to_dict(cfg)
    for text, needle in (
        ("semi: {method: pseudo}\n", "semi.method: must be one of"),
        ("semi: {steps: 0}\n", "semi.steps must be in"),
        ("semi: {stepz: 3}\n", "unknown key semi.stepz"),
        ("semi: 3\n", "semi: must be a mapping"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=needle) as err:
            load_config(path, ExperimentConfig)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("pool", "test"),
    [((1, 10), (5, 20)), ((5, 20), (1, 10)), ((10, 1), (20, 30)), ((1, 9), (12, 11))],
)
def test_pool_and_test_ids_must_be_ranges_that_do_not_overlap(
    tmp_path: Path, pool: tuple[int, int], test: tuple[int, int]
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"targets:\n  - {{name: real, annotations: t.json, pool_ids: {list(pool)}, "
        f"test_ids: {list(test)}}}\n"
    )
    with pytest.raises(ConfigError, match="must be ranges .low, high. that do not overlap"):
        load_config(path, ExperimentConfig)
    path.write_text(
        "targets:\n  - {name: real, annotations: t.json, pool_ids: [1, 9], test_ids: [10, 10]}\n"
    )
    assert load_config(path, ExperimentConfig).targets[0].pool_ids == (1, 9)
