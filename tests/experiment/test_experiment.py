"""The experiment end to end through the CLI, on a temporary folder, at toy size."""

import json
from pathlib import Path

import pytest
import torch

from metapose.cli import main
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import COCO_TINY, require

TOY = """
name: toy
model: {depth: 18, input_size: [32, 64], deconv_channels: [16, 16, 16]}
pretrain: {steps: 2, batch_size: 4, lr_milestones: [0.5]}
supervised: {steps: 2, batch_size: 4, lr_milestones: [0.5]}
meta: {meta_steps: 1, inner_steps: 2, batch_size: 4}
adapt: {epochs: 2, batch_size: 4}
targets:
  - {name: thermal, domain: thermal, pool_size: 4, test_size: 2, scene_size: [160, 120]}
shots: [2]
seeds: [0, 1]
from_scratch: true
"""


@pytest.fixture
def toy_config(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    return path


def test_experiment_runs_end_to_end_and_resumes(
    tmp_path: Path, toy_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(toy_config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| Dataset | Model | AP |" in printed and "thermal K=2" in printed
    report = out / "report"
    for name in (
        "table.md",
        "table.json",
        "index.html",
        "fig2_augmentations.png",
        "fig3_predictions.png",
        "fig4_meta_test_loss.png",
        "k_curve.png",
    ):
        assert (report / name).is_file(), name
    rows = json.loads((report / "table.json").read_text())["rows"]
    models = {(r["shots"], r["model"]) for r in rows}
    assert {
        (0, "as-is"),
        (0, "supervised"),
        (0, "meta"),
        (2, "scratch"),
        (2, "as-is"),
        (2, "supervised"),
        (2, "meta"),
        (2, "meta - as-is"),
        (2, "meta - supervised"),
    } <= models
    results = sorted((out / "results").glob("*.json"))
    assert len(results) == 3 + 2 * 4  # unadapted x3, then (K=2) x 2 seeds x 4 models
    stamps = {p: p.stat().st_mtime_ns for p in results}

    # Run again: everything is reused, nothing recomputed, the same table.
    table = (report / "table.md").read_text()
    assert main(["experiment", "--config", str(toy_config), "--out", str(out), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert (report / "table.md").read_text() == table


def test_a_folder_of_another_configuration_is_refused(
    tmp_path: Path, toy_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: other\n")
    assert main(["experiment", "--config", str(toy_config), "--out", str(out), "--quiet"]) == 2
    assert "holds a run of a different configuration" in capsys.readouterr().err


def test_experiment_starts_from_a_checkpoint_with_real_coco_source_tasks(
    tmp_path: Path, tiny_model: TopDownModel
) -> None:
    """``init`` gives the start (and its model config); real COCO people are the source."""
    coco = require(COCO_TINY)
    init = save_checkpoint(tmp_path / "start", tiny_model)
    ann = coco / "annotations" / "person_keypoints_train2017.json"
    config = tmp_path / "init.yaml"
    config.write_text(
        f"""
name: from-checkpoint
init: {init}
pretrain: null
arms: [as-is, meta]
source:
  domains: []
  coco:
    - {{annotations: {ann}, image_dir: {coco}/train2017}}
meta: {{meta_steps: 1, inner_steps: 1, batch_size: 4}}
adapt: {{epochs: 1, batch_size: 4}}
targets:
  - {{name: thermal, domain: thermal, pool_size: 3, test_size: 2, scene_size: [160, 120]}}
shots: [2]
seeds: [0]
"""
    )
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "report" / "table.json").read_text())["rows"]
    assert {(r["shots"], r["model"]) for r in rows} == {
        (0, "as-is"),
        (0, "meta"),
        (0, "meta - as-is"),
        (2, "as-is"),
        (2, "meta"),
        (2, "meta - as-is"),
    }
    unadapted = load_checkpoint(out / "models" / "meta" / "model.safetensors").model
    assert unadapted.config == tiny_model.config
    changed = [
        k
        for k, v in unadapted.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, tiny_model.state_dict()[k])
    ]
    assert changed  # Reptile moved the start
