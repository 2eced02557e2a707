"""Semi-supervised adaptation with unlabelled crops: the EMA teacher, the shared warp of crops and
heatmaps, the confidence mask, K = 0, and the unlabelled readers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.config import AdaptConfig, ConfigError, OptimizerConfig
from metapose.config.training import SemiConfig
from metapose.data.dataset import Instance
from metapose.data.images import write_rgb
from metapose.data.unlabelled import main_people, unlabelled_instances
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.training.semi import (
    confident_joints,
    ema_update,
    fine_tune_with_unlabelled,
    random_affines,
    unlabelled_loss,
    warp,
)
from tests.conftest import TINY_MODEL
from tests.helpers import TINY_CODEC, state_copy, tiny_dataset, unlabelled_people

CPU = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
QUICK = AdaptConfig(optimizer=OptimizerConfig(lr=1e-2), epochs=1, batch_size=4)
SEMI = SemiConfig(method="mean_teacher", steps=2, unlabelled_batch=4, adabn_batches=1)


def model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def test_ema_decay_one_keeps_the_teacher_and_zero_copies_the_student() -> None:
    teacher, student = model(), model()
    torch.nn.init.normal_(student.final_layer.weight)
    before = state_copy(teacher)
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    ema_update(teacher, student, 0.0)
    assert torch.equal(teacher.final_layer.weight, student.final_layer.weight)
    half = model()
    ema_update(half, student, 0.5)
    expected = 0.5 * (before["final_layer.weight"] + student.final_layer.weight)
    assert torch.allclose(half.final_layer.weight, expected)


def test_the_identity_affine_changes_neither_crops_nor_heatmaps() -> None:
    crops_theta, heatmaps_theta = random_affines(3, TINY_CODEC, 0.0, 0.0, np.random.default_rng(0))
    identity = torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3)
    assert torch.allclose(crops_theta, identity, atol=1e-6)
    assert torch.allclose(heatmaps_theta, identity, atol=1e-6)
    images = torch.randn(3, 3, 64, 32)
    assert torch.allclose(warp(images, crops_theta), images, atol=1e-5)


def test_crops_and_heatmaps_warp_to_the_same_joint_position() -> None:
    """A joint encoded, then its crop point moved by the crop's warp, lands where the heatmap's
    warped peak is: one affine at both resolutions."""
    rng = np.random.default_rng(3)
    crop_theta, heatmap_theta = random_affines(1, TINY_CODEC, 30.0, 0.25, rng)
    w, h = TINY_CODEC.input_size
    point = np.array([[20.0, 30.0, 2.0]], np.float32)
    heatmap = torch.from_numpy(TINY_CODEC.encode(point).heatmaps)[None]  # (1, 1, h, w)
    warped = warp(heatmap, heatmap_theta)[0, 0].numpy()
    # where does the crop warp send the point? theta maps output -> input, so invert it
    norm = np.array([(2 * point[0, 0] + 1) / w - 1, (2 * point[0, 1] + 1) / h - 1, 1.0])
    full = np.vstack([crop_theta[0].numpy(), [0, 0, 1]])
    out = np.linalg.solve(full, norm)
    expected_crop = ((out[0] + 1) * w - 1) / 2, ((out[1] + 1) * h - 1) / 2
    expected_hm = np.array(expected_crop) * np.array(TINY_CODEC.heatmap_per_input)
    peak = np.unravel_index(np.argmax(warped), warped.shape)
    assert abs(peak[1] - expected_hm[0]) <= 1 and abs(peak[0] - expected_hm[1]) <= 1


def test_the_mask_keeps_only_confident_joints() -> None:
    heatmaps = torch.zeros(1, 3, 4, 4)
    heatmaps[0, 0, 1, 1] = 0.9
    heatmaps[0, 1, 2, 2] = 0.2
    mask = confident_joints(heatmaps, 0.5)
    assert mask.tolist() == [[1.0, 0.0, 0.0]]
    student = torch.ones(1, 3, 4, 4)
    loss, _ = unlabelled_loss(student, heatmaps, 0.5)
    only_first = 0.5 * ((student[0, 0] - heatmaps[0, 0]) ** 2).sum() / heatmaps.numel()
    assert torch.allclose(loss, only_first)


def test_the_unlabelled_loss_pulls_a_student_toward_a_fixed_teacher() -> None:
    teacher, student = model(), model()
    torch.manual_seed(1)
    torch.nn.init.normal_(student.final_layer.weight, std=0.1)
    teacher.eval()
    images = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        targets = teacher(images) + 0.5  # every joint confident
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    student.eval()  # BatchNorm statistics stay put: only the weights move

    def loss() -> torch.Tensor:
        return unlabelled_loss(student(images), targets, 0.3)[0]

    first = float(loss().detach())
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.9 * first


@pytest.mark.parametrize("method", ["adabn", "mean_teacher"])
def test_k0_runs_and_changes_the_model(method: str) -> None:
    m = model()
    before = state_copy(m)
    # a random model is confident of nothing: threshold 0 keeps every joint
    config = SemiConfig(**{**SEMI.__dict__, "method": method, "ema_decay": 0.5, "threshold": 0.0})
    result = fine_tune_with_unlabelled(
        m, None, unlabelled_people(), QUICK, config, CPU, codec=TINY_CODEC, seed=0
    )
    assert result.shots is None and result.unlabelled_crops == 8
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())
    if method == "mean_teacher":
        assert len(result.losses) == 2 and all(0 <= c <= 1 for c in result.confident)


def test_mean_teacher_with_shots_is_deterministic_and_fine_tunes_first() -> None:
    runs = []
    for _ in range(2):
        m = model()
        result = fine_tune_with_unlabelled(
            m, tiny_dataset(8), unlabelled_people(), QUICK, SEMI, CPU, codec=TINY_CODEC, seed=3
        )
        runs.append((state_copy(m), result))
    (a, ra), (b, rb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ra.losses == rb.losses and ra.shots is not None and len(ra.shots.losses) == 2


def test_decay_one_returns_the_shot_fine_tuned_teacher() -> None:
    """With decay 1 the teacher never moves: the result is the fine-tune on the shots alone."""
    from metapose.training.adapt import fine_tune

    plain = model()
    fine_tune(plain, tiny_dataset(8), QUICK, CPU, seed=3)
    semi = model()
    config = SemiConfig(**{**SEMI.__dict__, "ema_decay": 1.0})
    fine_tune_with_unlabelled(
        semi, tiny_dataset(8), unlabelled_people(), QUICK, config, CPU, codec=TINY_CODEC, seed=3
    )
    assert all(torch.equal(v, semi.state_dict()[k]) for k, v in plain.state_dict().items())


def test_the_student_steps_take_the_semi_learning_rate_and_schedule_the_shots_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metapose.training import adapt as adapt_module
    from metapose.training import semi as semi_module

    shots_lrs: list[float] = []
    student_lrs: list[float] = []

    def recording(store: list[float], build):  # type: ignore[no-untyped-def]
        def wrapped(params, config):  # type: ignore[no-untyped-def]
            opt = build(params, config)
            opt.register_step_pre_hook(lambda o, a, k: store.append(o.param_groups[0]["lr"]))
            return opt

        return wrapped

    monkeypatch.setattr(
        adapt_module, "build_optimizer", recording(shots_lrs, adapt_module.build_optimizer)
    )
    monkeypatch.setattr(
        semi_module, "build_optimizer", recording(student_lrs, semi_module.build_optimizer)
    )
    config = replace(SEMI, steps=4, lr=1e-3, lr_schedule="cosine")
    fine_tune_with_unlabelled(
        model(), tiny_dataset(8), unlabelled_people(), QUICK, config, CPU, codec=TINY_CODEC, seed=3
    )
    assert shots_lrs == [1e-2, 1e-2]  # the shots' fine-tune: the adapt config's constant rate
    assert np.allclose(student_lrs, [1e-3 * 0.5 * (1 + np.cos(np.pi * s / 4)) for s in range(4)])


def test_student_adapt_replaces_only_what_is_set() -> None:
    assert SemiConfig().student_adapt(QUICK) == QUICK
    cosine = replace(QUICK, lr_schedule="cosine")
    assert SemiConfig().student_adapt(cosine) == cosine  # unset: the adapt config's schedule
    assert SemiConfig(lr_schedule="constant").student_adapt(cosine) == QUICK
    changed = SemiConfig(lr=3e-5, lr_schedule="cosine").student_adapt(QUICK)
    assert changed.optimizer.lr == 3e-5 and changed.lr_schedule == "cosine"
    assert changed.optimizer.name == QUICK.optimizer.name and changed.epochs == QUICK.epochs
    with pytest.raises(ConfigError, match="semi.lr"):
        SemiConfig(lr=0.0)


def test_unlabelled_from_folder_list_and_coco(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(30, 20), (40, 50)]):
        write_rgb(folder / f"im{i}.png", np.zeros((size[1], size[0], 3), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    found = unlabelled_instances(folder)
    assert [i.box for i in found] == [(0, 0, 30, 20), (0, 0, 40, 50)]
    assert all(not i.keypoints.any() for i in found)
    listing = tmp_path / "list.txt"
    listing.write_text("photos/im1.png\n")
    assert [i.box for i in unlabelled_instances(listing)] == [(0, 0, 40, 50)]
    coco = tmp_path / "people.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "im0.png"}, {"id": 8, "file_name": "im1.png"}],
                "annotations": [{"id": 1, "image_id": 7, "bbox": [1, 2, 10, 12]}],
            }
        )
    )
    people = unlabelled_instances(coco, image_dir=folder)
    assert [(p.image_id, p.box) for p in people] == [(7, (1, 2, 10, 12)), (8, (0, 0, 40, 50))]


def test_bad_unlabelled_input_is_one_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        unlabelled_instances(tmp_path / "missing")
    listing = tmp_path / "list.txt"
    listing.write_text("gone.jpg\n")
    with pytest.raises(DataError, match="line 1: image file not found"):
        unlabelled_instances(listing)
    coco = tmp_path / "bad.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}]}))
    with pytest.raises(DataError, match="image file not found"):
        unlabelled_instances(coco)


def test_given_boxes_are_the_people_and_an_image_without_any_has_none(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        write_rgb(folder / f"im{i}.png", np.zeros((20, 30, 3), np.uint8))
    boxes = {folder / "im0.png": [(1.0, 2.0, 5.0, 6.0), (3.0, 3.0, 4.0, 4.0)]}
    people = unlabelled_instances(folder, boxes=boxes)
    assert [(p.image_id, p.box) for p in people] == [(1, (1, 2, 5, 6)), (1, (3, 3, 4, 4))]
    assert unlabelled_instances(folder, boxes={}) == []


def test_main_people_leaves_out_the_small_people_of_each_image() -> None:
    unknown = np.zeros((17, 3), np.float32)

    def person(image: str, height: float) -> Instance:
        return Instance(Path(image), (0.0, 0.0, height / 2, height), unknown, 1, -1)

    people = [person("a.jpg", 200), person("a.jpg", 90), person("b.jpg", 40), person("a.jpg", 120)]
    # shares are of the tallest in the same image: b's only person always stays
    kept = main_people(people, 0.5)
    assert [p.box[3] for p in kept] == [200, 40, 120]
    assert main_people(people, 0.0) == people
    assert [p.box[3] for p in main_people(people, 1.0)] == [200, 40]
    with pytest.raises(ConfigError, match="min_relative_height"):
        SemiConfig(min_relative_height=1.5)
