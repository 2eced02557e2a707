"""Distillation from a larger teacher: its confident joints become labels, the student learns on
them and the shots in every batch, and the teacher may differ from the student in input size."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from metapose.config import AdaptConfig, ConfigError, ModelConfig, OptimizerConfig
from metapose.config.training import FEW_SHOTS_FOR_TEACHER, SemiConfig
from metapose.data.dataset import Instance, TopDownDataset
from metapose.device import DeviceOptions
from metapose.inference.distill import (
    LABELLED,
    adapt_teacher,
    distill_from_teacher,
    merge_scales,
    pseudo_label,
    scaled_box,
)
from metapose.models import TopDownModel
from metapose.training.semi import fine_tune_on_pseudo_labels, fine_tune_with_unlabelled
from tests.conftest import TINY_MODEL
from tests.helpers import TINY_CODEC, RecordingProgress, state_copy, tiny_dataset, unlabelled_people

CPU = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
QUICK = AdaptConfig(optimizer=OptimizerConfig(lr=1e-2), epochs=1, batch_size=4)
DISTIL = SemiConfig(method="distill", steps=3, unlabelled_batch=3, labelled_batch=2, threshold=0.0)
# A teacher of twice the student's input size (the 256x192 zoo model teaches the 128x96 one).
BIG: ModelConfig = replace(TINY_MODEL, input_size=(64, 128))


def seeded(config: ModelConfig, seed: int = 0) -> TopDownModel:
    torch.manual_seed(seed)
    return TopDownModel(config)


def moved(before: dict[str, torch.Tensor], m: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_confident_joints_become_labels_and_the_rest_unknown() -> None:
    teacher, people = seeded(BIG), unlabelled_people(6)
    every = pseudo_label(teacher, people, CPU, threshold=0.0, min_joints=1)
    assert len(every.people) == 6 and every.labelled == 6 and every.confident == 1.0
    assert all((p.keypoints[:, 2] == LABELLED).all() for p in every.people)
    # the labels are the teacher's poses in image pixels, inside the person's crop region
    x0, y0, w, h = people[0].box
    xy = every.people[0].keypoints[:, :2]
    assert (xy[:, 0] > x0 - w).all() and (xy[:, 0] < x0 + 2 * w).all()
    assert (xy[:, 1] > y0 - h).all() and (xy[:, 1] < y0 + 2 * h).all()
    # a threshold between the teacher's scores splits the joints; unsure ones are zeroed
    scores = np.concatenate([p.keypoints[:, 2] for p in pseudo_label_scores(teacher, people)])
    middle = float(np.median(scores))
    some = pseudo_label(teacher, people, CPU, threshold=middle, min_joints=0)
    flags = np.concatenate([p.keypoints[:, 2] for p in some.people])
    assert 0 < (flags == LABELLED).sum() < flags.size
    unsure = np.concatenate([p.keypoints[p.keypoints[:, 2] == 0, :2] for p in some.people])
    assert not unsure.any()
    # people with fewer confident joints than min_joints are left out
    none = pseudo_label(teacher, people, CPU, threshold=1.0 + scores.max(), min_joints=1)
    assert none.people == () and none.confident == 0.0


def pseudo_label_scores(teacher: TopDownModel, people: list[Instance]) -> list[Instance]:
    """The teacher's raw scores (flags) per person: every joint kept at threshold -inf."""
    from metapose.data.codec import HeatmapCodec
    from metapose.data.dataset import TopDownDataset
    from metapose.inference.crop_runner import predict, torch_heatmap_fn

    crops = TopDownDataset(people, HeatmapCodec.for_model(teacher.config), targets=False)
    predictions = predict(torch_heatmap_fn(teacher, CPU), crops)
    return [replace(p, keypoints=q.keypoints) for p, q in zip(people, predictions, strict=True)]


def test_every_step_mixes_pseudo_labels_and_shots() -> None:
    seen: list[int] = []
    student = seeded(TINY_MODEL)
    labels = pseudo_label(seeded(BIG), unlabelled_people(6), CPU, threshold=0.0, min_joints=1)

    import metapose.training.semi as semi

    original = semi.adapt_by

    def spy(model, batches, steps, *args, **kwargs):  # type: ignore[no-untyped-def]
        def counted():  # type: ignore[no-untyped-def]
            for batch in batches:
                seen.append(int(batch.image.shape[0]))
                yield batch

        return original(model, counted(), steps, *args, **kwargs)

    semi.adapt_by = spy  # type: ignore[assignment]
    try:
        with_shots = fine_tune_on_pseudo_labels(
            student, tiny_dataset(4), labels.people, QUICK, DISTIL, CPU, codec=TINY_CODEC
        )
        alone = fine_tune_on_pseudo_labels(
            seeded(TINY_MODEL), None, labels.people, QUICK, DISTIL, CPU, codec=TINY_CODEC
        )
    finally:
        semi.adapt_by = original  # type: ignore[assignment]
    assert seen == [5, 5, 5, 3, 3, 3]  # 3 pseudo-labelled + 2 shots; K = 0: pseudo only
    assert len(with_shots.losses) == 3 and len(alone.losses) == 3
    with pytest.raises(ConfigError, match="confidently"):
        fine_tune_on_pseudo_labels(student, None, [], QUICK, DISTIL, CPU, codec=TINY_CODEC)


def test_unknown_joints_are_not_learnt() -> None:
    """People whose every joint is unknown give a zero loss: nothing is learnt from them."""
    blank = [replace(p, keypoints=np.zeros_like(p.keypoints)) for p in unlabelled_people(6)]
    student = seeded(TINY_MODEL)
    result = fine_tune_on_pseudo_labels(student, None, blank, QUICK, DISTIL, CPU, codec=TINY_CODEC)
    assert result.losses == (0.0, 0.0, 0.0)


def test_distillation_adapts_the_teacher_then_the_student_deterministically() -> None:
    runs = []
    for _ in range(2):
        student, teacher = seeded(TINY_MODEL), seeded(BIG, 1)
        s0, t0 = state_copy(student), state_copy(teacher)
        result = distill_from_teacher(
            student, teacher, tiny_dataset(4), unlabelled_people(6), QUICK, DISTIL, CPU, seed=2
        )
        assert moved(s0, student) and moved(t0, teacher)
        runs.append((state_copy(student), result))
    (a, ra), (b, rb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a) and ra.losses == rb.losses
    assert ra.method == "distill" and ra.unlabelled_crops == 6 and ra.shots is not None
    # teacher_adapt off, or no shots: the teacher is used as it is
    for support, config in (
        (tiny_dataset(4), replace(DISTIL, teacher_adapt=False)),
        (None, DISTIL),
    ):
        teacher = seeded(BIG, 1)
        t0 = state_copy(teacher)
        distill_from_teacher(
            seeded(TINY_MODEL), teacher, support, unlabelled_people(6), QUICK, config, CPU
        )
        assert not moved(t0, teacher)


def test_the_teacher_adapted_alone_is_the_teacher_distillation_labels_with() -> None:
    """adapt_teacher (the study's teacher_adapted diagnostic) gives exactly the teacher that
    distill_from_teacher fine-tunes before it labels."""
    inside, alone = seeded(BIG, 1), seeded(BIG, 1)
    distill_from_teacher(
        seeded(TINY_MODEL),
        inside,
        tiny_dataset(4),
        unlabelled_people(6),
        QUICK,
        DISTIL,
        CPU,
        seed=2,
    )
    CPU.prepare(alone)
    adapt_teacher(alone, tiny_dataset(4), QUICK, CPU, seed=2)
    a, b = state_copy(inside), state_copy(alone)
    assert moved(state_copy(seeded(BIG, 1)), alone)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_fine_tuned_on_few_shots_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fewer than FEW_SHOTS_FOR_TEACHER labelled images: one warning naming their count (images,
    not people) and the way out; none with the teacher used as it is."""
    people = list(tiny_dataset(4).instances)
    people[1] = replace(people[1], image_id=people[0].image_id)  # two people in one image
    support = TopDownDataset(people, TINY_CODEC)
    for config, warned in ((DISTIL, 1), (replace(DISTIL, teacher_adapt=False), 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="metapose.inference.distill"):
            distill_from_teacher(
                seeded(TINY_MODEL),
                seeded(BIG, 1),
                support,
                unlabelled_people(6),
                QUICK,
                config,
                CPU,
            )
        said = [r.getMessage() for r in caplog.records if "--teacher-as-is" in r.getMessage()]
        assert len(said) == warned
        assert all("only 3 labelled images" in m for m in said)
    # the bound; none at K = 0 or for the other methods
    assert DISTIL.teacher_on_few_shots(FEW_SHOTS_FOR_TEACHER - 1)
    assert not DISTIL.teacher_on_few_shots(FEW_SHOTS_FOR_TEACHER)
    assert not DISTIL.teacher_on_few_shots(0)
    assert not replace(DISTIL, method="mean_teacher").teacher_on_few_shots(4)


def test_the_teacher_adapts_at_the_adapt_rate_and_the_student_at_the_semi_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metapose.training import adapt as adapt_module

    seen: list[tuple[float, str, int]] = []
    real = adapt_module.adapt_by

    def spy(model, batches, steps, config, options, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((config.optimizer.lr, config.lr_schedule, steps))
        return real(model, batches, steps, config, options, **kwargs)

    monkeypatch.setattr(adapt_module, "adapt_by", spy)
    monkeypatch.setattr("metapose.training.semi.adapt_by", spy)
    config = replace(DISTIL, lr=1e-3, lr_schedule="cosine")
    distill_from_teacher(
        seeded(TINY_MODEL),
        seeded(BIG, 1),
        tiny_dataset(4),
        unlabelled_people(6),
        QUICK,
        config,
        CPU,
    )
    assert seen == [(1e-2, "constant", 1), (1e-3, "cosine", 3)]  # teacher on 4 shots, student


def test_the_semi_entry_point_names_the_distillation_function() -> None:
    with pytest.raises(ConfigError, match="distill_from_teacher"):
        fine_tune_with_unlabelled(
            seeded(TINY_MODEL), None, unlabelled_people(6), QUICK, DISTIL, CPU, codec=TINY_CODEC
        )


def test_a_large_set_is_labelled_only_as_far_as_the_student_will_see_it() -> None:
    """steps x unlabelled_batch = 6 crops: 6 of 10 people are labelled, the same 6 each time."""
    drawn = []
    for _ in range(2):
        progress = RecordingProgress()
        distill_from_teacher(
            seeded(TINY_MODEL),
            seeded(BIG),
            None,
            unlabelled_people(10),
            QUICK,
            replace(DISTIL, steps=2),
            CPU,
            seed=1,
            progress=progress,
        )
        drawn.append(progress.stages)
    assert ["teacher: label 6 people", 6, 6] in drawn[0] and drawn[0] == drawn[1]


def test_a_teacher_of_another_skeleton_is_refused() -> None:
    other = seeded(replace(BIG, num_keypoints=14))
    with pytest.raises(ConfigError, match="14 keypoints"):
        distill_from_teacher(
            seeded(TINY_MODEL), other, None, unlabelled_people(2), QUICK, DISTIL, CPU
        )


def test_the_multi_scale_teacher_averages_its_views_in_image_pixels() -> None:
    teacher, people = seeded(BIG), unlabelled_people(4)
    one = pseudo_label(teacher, people, CPU, threshold=0.0, min_joints=0)
    # the same scale twice is the single-scale label; a scale changes the crop, so the labels
    same = pseudo_label(teacher, people, CPU, threshold=0.0, min_joints=0, scales=(1.0, 1.0))
    for a, b in zip(one.people, same.people, strict=True):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
    two = pseudo_label(teacher, people, CPU, threshold=0.0, min_joints=0, scales=(1.0, 1.25))
    # the teacher's raw poses (with scores) on the plain and on the wider boxes, merged
    views = [
        np.stack(
            [
                q.keypoints
                for q in pseudo_label_scores(
                    teacher, [replace(p, box=scaled_box(p.box, f)) for p in people]
                )
            ]
        )
        for f in (1.0, 1.25)
    ]
    got = np.stack([p.keypoints for p in two.people])
    np.testing.assert_allclose(got[..., :2], merge_scales(views)[..., :2], atol=1e-4)
    assert not np.allclose(got[..., :2], views[0][..., :2], atol=1e-2)


def test_scales_are_merged_by_score_and_boxes_scaled_about_their_centre() -> None:
    a = np.array([[[10.0, 20.0, 0.9], [0.0, 0.0, 0.0]]], np.float32)
    b = np.array([[[20.0, 40.0, 0.3], [4.0, 8.0, 0.0]]], np.float32)
    merged = merge_scales([a, b])
    np.testing.assert_allclose(merged[0, 0], [12.5, 25.0, 0.6], rtol=1e-6)
    np.testing.assert_allclose(merged[0, 1], [2.0, 4.0, 0.0])  # no score: the plain mean
    assert scaled_box((10.0, 20.0, 40.0, 80.0), 1.5) == (0.0, 0.0, 60.0, 120.0)
    with pytest.raises(ConfigError, match="teacher_scales"):
        SemiConfig(teacher_scales=(1.0, 3.0))
