"""The arms' semi-supervised twins (``ExperimentConfig.semi``): the same shots as their arm plus
the pool's other people unlabelled, reported beside the arms with their paired differences."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.cli import main
from metapose.config import ExperimentConfig, load_config
from metapose.config.training import SemiConfig
from metapose.data.codec import HeatmapCodec
from metapose.device import DeviceOptions
from metapose.experiment.results import load_result, load_results
from metapose.experiment.run import Job, run_job
from metapose.experiment.targets import Target, prepare_target
from metapose.experiment.twins import unlabelled_people
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint, save_checkpoint
from metapose.progress import SilentProgress
from tests.conftest import TINY_MODEL

TOY = """
name: toy-semi
model: {depth: 18, input_size: [32, 64], deconv_channels: [16, 16, 16]}
pretrain: null
arms: [as-is, meta]
meta: {meta_steps: 1, inner_steps: 2, batch_size: 4}
adapt: {epochs: 2, batch_size: 4}
targets:
  - {name: thermal, domain: thermal, pool_size: 4, test_size: 2, scene_size: [160, 120]}
shots: [2]
seeds: [0, 1]
semi: {method: distill, teacher: TEACHER, steps: 2, unlabelled_batch: 2, labelled_batch: 2,
       threshold: 0.0, min_joints: 0}
"""
TWINS = ("as-is+distill", "meta+distill")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy experiment whose twins distil from a tiny teacher of a larger input size."""
    root = tmp_path_factory.mktemp("twins")
    torch.manual_seed(1)
    teacher = TopDownModel(replace(TINY_MODEL, input_size=(64, 128)))
    path = save_checkpoint(root / "teacher.safetensors", teacher)
    config = root / "toy.yaml"
    config.write_text(TOY.replace("TEACHER", str(path)))
    out = root / "run"
    assert main(["experiment", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    return out


def _target(out: Path) -> tuple[ExperimentConfig, Target]:
    cfg = load_config(out / "config.yaml", ExperimentConfig)
    codec = HeatmapCodec.for_model(cfg.model)
    return cfg, prepare_target(cfg, cfg.targets[0], out / "data", codec, SilentProgress())


def test_every_arm_has_a_twin_on_the_same_shots_that_the_unlabelled_images_change(
    run: Path,
) -> None:
    results = {(r.model, r.shots, r.seed): r for r in load_results(run / "results")}
    assert {m for m, _, _ in results} == {"as-is", "meta", *TWINS}
    for twin, arm in zip(TWINS, ("as-is", "meta"), strict=True):
        for seed in (0, 1):
            assert (twin, 0, seed) in results  # K = 0: the unlabelled people alone
            mine, its_arm = results[(twin, 2, seed)], results[(arm, 2, seed)]
            assert mine.shot_image_ids == its_arm.shot_image_ids and len(mine.shot_image_ids) == 2
            poses = [
                json.loads((run / "predictions" / f"{r.key}.json").read_text())
                for r in (mine, its_arm)
            ]
            assert poses[0] != poses[1]  # the unlabelled people changed the adapted model
    assert len(results) == 2 + 2 * 2 + 2 * 4  # unadapted arms, twins at K=0, then K=2


def test_the_report_lists_the_twins_and_their_paired_differences(run: Path) -> None:
    report = run / "report"
    rows = json.loads((report / "table.json").read_text())["rows"]
    models = {(r["shots"], r["model"]) for r in rows}
    assert {
        (2, "as-is+distill"),
        (2, "meta+distill"),
        (2, "meta+distill - meta"),
        (0, "meta+distill"),
        (0, "meta+distill - meta"),
    } <= models
    table = (report / "table.md").read_text()
    assert "| thermal K=2 | Meta-learned + distillation |" in table
    assert "| thermal K=0 | Meta-learned + distillation |" in table
    assert "| thermal (not adapted) | Meta-learned |" in table
    assert "thermal K=2: AP meta+distill - meta" in table
    assert "Meta-learned + distillation" in (report / "index.html").read_text()
    for figure in ("fig3_predictions.png", "fig4_meta_test_loss.png", "k_curve.png"):
        assert (report / figure).is_file()


def test_a_rerun_recomputes_nothing(run: Path) -> None:
    config = run.parent / "toy.yaml"
    results = sorted((run / "results").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main(["experiment", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in sorted((run / "results").glob("*.json"))} == stamps


def test_the_unlabelled_people_are_the_pools_other_boxes_without_labels(run: Path) -> None:
    cfg, target = _target(run)
    shots = load_result(run / "results", "thermal__meta+distill__k2__s0")
    assert shots is not None and shots.shot_image_ids
    people = unlabelled_people(target, shots.shot_image_ids)
    images = {p.image_id for p in people}
    assert images == set(target.pool_ids) - set(shots.shot_image_ids)
    boxes = sum(1 for a in target.dataset.annotations if a.image_id in images and not a.iscrowd)
    assert len(people) == boxes and all(not p.keypoints.any() for p in people)
    assert len(unlabelled_people(target, [])) > len(people)


def test_a_mean_teacher_twin_first_fine_tunes_exactly_as_its_arm(run: Path) -> None:
    """Same shots, same support set, same recipe: the fine-tune on the shots before the
    mean-teacher steps repeats the arm's loss for loss."""
    cfg, target = _target(run)
    cfg = replace(cfg, semi=SemiConfig(method="mean_teacher", steps=1, unlabelled_batch=2))
    meta = load_checkpoint(run / "models" / "meta" / "model.safetensors").model
    codec = HeatmapCodec.for_model(meta.config)
    options = DeviceOptions(torch.device("cpu"))
    arm, twin = (
        run_job(Job(target, name, 2, 1), cfg, {"meta": meta}, codec, options)
        for name in ("meta", "meta+mean_teacher")
    )
    assert twin.shot_image_ids == arm.shot_image_ids
    assert twin.epoch_losses == arm.epoch_losses and len(arm.epoch_losses) == 2


def test_a_missing_teacher_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text(TOY.replace("TEACHER", str(tmp_path / "nowhere.safetensors")))
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "semi.teacher" in err and "nowhere" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("semi", "shots"), [(True, 2), (False, 3)])
def test_a_rendered_pool_too_small_is_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], semi: bool, shots: int
) -> None:
    toy = TOY.replace("TEACHER", "pp-tinypose-256x192").replace("pool_size: 4", "pool_size: 2")
    toy = toy.replace("shots: [2]", f"shots: [{shots}]")
    if not semi:
        toy = toy[: toy.index("semi:")]
    config = tmp_path / "toy.yaml"
    config.write_text(toy)
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"pool_size 2 is too small for K = {shots}" in err and str(config) in err
    assert ("semi twins" in err) == semi and "Traceback" not in err and not out.exists()


def test_a_real_pool_too_small_is_one_error_naming_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A COCO pool: K needs as many labelled images, the twins one more image with a person box
    (crowd regions are not people)."""
    from metapose.config import TargetConfig
    from metapose.data.coco import load_coco
    from metapose.data.images import write_rgb
    from metapose.errors import DataError
    from metapose.experiment.targets import check_pool
    from metapose.experiment.twins import check_twin_pool
    from metapose.skeleton import COCO17

    person = {"category_id": 1, "num_keypoints": 1, "keypoints": [5, 5, 2] + [0, 0, 0] * 16}
    annotations = [
        {**person, "id": 1, "image_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {**person, "id": 2, "image_id": 2, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {**person, "id": 4, "image_id": 4, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {
            "id": 3,
            "image_id": 3,
            "category_id": 1,
            "bbox": [0, 0, 10, 10],
            "area": 100,
            "iscrowd": 1,
            "num_keypoints": 0,
            "keypoints": [0] * 51,
            "segmentation": {},
        },
    ]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 20, "height": 20} for i in (1, 2, 3, 4)]
    path = tmp_path / "pool.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [
                    {"id": 1, "name": "person", "keypoints": list(COCO17.keypoints), "skeleton": []}
                ],
            }
        )
    )
    for i in (1, 2, 3, 4):
        write_rgb(tmp_path / f"{i}.jpg", np.zeros((20, 20, 3), np.uint8))
    data = load_coco(path, tmp_path)
    config = TargetConfig(name="real", annotations=str(path), pool_ids=(1, 3), test_ids=(4, 4))
    target = Target(config, data, (1, 2, 3), test=None)  # type: ignore[arg-type]
    check_pool(target, 2)
    check_twin_pool(target, 1)
    with pytest.raises(DataError, match="only 2 labelled images") as err:
        check_pool(target, 3)
    assert "pool.json" in str(err.value)
    with pytest.raises(DataError, match="only 2 pool images have a person box"):
        check_twin_pool(target, 2)
    # The experiment stops with that line, and leaves no config behind to block a corrected rerun.
    toy = TOY[: TOY.index("targets:")] + (
        f"targets:\n  - {{name: real, annotations: {path}, image_dir: {tmp_path},"
        " pool_ids: [1, 3], test_ids: [4, 4]}\nshots: [3]\nseeds: [0]\n"
    )
    yaml = tmp_path / "toy.yaml"
    yaml.write_text(toy)
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(yaml), "--out", str(out), "--quiet"]) == 2
    assert "only 2 labelled images" in capsys.readouterr().err
    assert not (out / "config.yaml").exists() and not (out / "provenance.json").exists()
