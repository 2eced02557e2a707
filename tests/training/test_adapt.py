"""The few-shot recipe's options: BatchNorm handling, backbone learning rate, L2-SP, and the
epoch count chosen on held-out shots."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from metapose.config import AdaptConfig, ConfigError, OptimizerConfig
from metapose.data.batches import EpochBatches, collate
from metapose.device import DeviceOptions
from metapose.models import TopDownModel
from metapose.training import adapt as adapt_module
from metapose.training.adapt import (
    choose_epochs,
    fine_tune,
    held_out_loss,
    reestimate_batchnorm,
    split_support,
)
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
QUICK = AdaptConfig(optimizer=OptimizerConfig(lr=1e-2), epochs=2, batch_size=4)


def model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def norms(m: nn.Module) -> list[nn.BatchNorm2d]:
    return [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]


def stats(m: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for b in norms(m) for t in (b.running_mean, b.running_var)]


def test_frozen_batchnorm_keeps_the_starting_statistics_and_trains_the_weights() -> None:
    m = model()
    before, weights = stats(m), m.final_layer.weight.clone()
    fine_tune(m, tiny_dataset(8), AdaptConfig(**{**QUICK.__dict__, "batchnorm": "frozen"}), CPU)
    assert all(torch.equal(a, b) for a, b in zip(before, stats(m), strict=True))
    assert not torch.equal(weights, m.final_layer.weight)


def test_reestimated_statistics_are_the_support_batch_average_then_stay() -> None:
    support = tiny_dataset(4)
    m = model()
    cfg = AdaptConfig(**{**QUICK.__dict__, "batchnorm": "reestimate"})
    first = next(EpochBatches(support, cfg.batch_size, seed=0).batches())
    expected = model()
    reestimate_batchnorm(expected, [first], CPU)
    fine_tune(m, support, cfg, CPU)
    bn = norms(m)[0]
    assert torch.allclose(bn.running_mean, norms(expected)[0].running_mean)
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    # the statistics really are those of the batch: BN's input channel means
    with torch.no_grad():
        conv1 = expected.backbone.conv1(first.image)
    assert torch.allclose(norms(expected)[0].running_mean, conv1.mean(dim=(0, 2, 3)), atol=1e-5)


def test_backbone_lr_scale_zero_moves_only_the_head() -> None:
    m = model()
    backbone = [p.clone() for p in m.backbone.parameters()]
    head = [p.clone() for p in m.head_parameters()]
    cfg = AdaptConfig(**{**QUICK.__dict__, "backbone_lr_scale": 0.0, "batchnorm": "frozen"})
    fine_tune(m, tiny_dataset(8), cfg, CPU)
    assert all(torch.equal(a, b) for a, b in zip(backbone, m.backbone.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(head, m.head_parameters(), strict=True))


def test_l2sp_keeps_the_weights_nearer_the_start() -> None:
    # Plain SGD: the pull is proportional to the distance (Adam would rescale it to the lr).
    sgd = OptimizerConfig(name="sgd", lr=1e-2)

    def drift(l2sp: float) -> float:
        m = model()
        start = [p.detach().clone() for p in m.parameters()]
        cfg = AdaptConfig(**{**QUICK.__dict__, "optimizer": sgd, "l2sp": l2sp, "epochs": 4})
        fine_tune(m, tiny_dataset(8), cfg, CPU)
        return sum(
            float((p.detach() - s).pow(2).sum()) for p, s in zip(m.parameters(), start, strict=True)
        )

    assert drift(50.0) < 0.5 * drift(0.0)


# ---------------------------------------------------------------- epochs chosen on held-out shots

SELECT = AdaptConfig(**{**QUICK.__dict__, "epochs": 4, "select_epochs": True})


def test_held_out_images_are_a_quarter_disjoint_and_fixed_by_the_seed() -> None:
    support = tiny_dataset(16)
    split = split_support(support, seed=3)
    assert len(split.held_out) == 4 and len(split.train) == 12
    assert set(split.train).isdisjoint(split.held_out)
    assert sorted(split.train + split.held_out) == list(range(16))
    assert split == split_support(support, seed=3)
    assert split != split_support(support, seed=4)
    assert len(split_support(tiny_dataset(2), seed=0).held_out) == 1  # at least one image
    assert split_support(tiny_dataset(1), seed=0).held_out == ()


def test_people_of_one_image_stay_on_the_same_side() -> None:
    support = tiny_dataset(8)
    support.instances = [replace(inst, image_id=i // 2) for i, inst in enumerate(support.instances)]
    split = split_support(support, seed=0)
    held_images = {support.instances[i].image_id for i in split.held_out}
    assert held_images.isdisjoint(support.instances[i].image_id for i in split.train)
    assert len(held_images) == 1  # round(4 images / 4)


def test_the_epoch_count_with_the_lowest_held_out_loss_is_run_on_all_the_shots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripted = iter([0.9, 0.5, 0.2, 0.3, 0.2])  # before training, then after epochs 1..4
    monkeypatch.setattr(adapt_module, "held_out_loss", lambda *args: next(scripted))
    support = tiny_dataset(4)  # one image held out, three trained on: one step per epoch
    chosen = model()
    result = fine_tune(chosen, support, SELECT, CPU, seed=5)
    assert result.chosen is not None
    assert result.chosen.epochs == 2  # the first of the two lowest
    assert result.chosen.held_out_losses == (0.9, 0.5, 0.2, 0.3, 0.2)
    assert len(result.epoch_losses) == 2
    direct = model()
    fine_tune(direct, support, replace(SELECT, epochs=2, select_epochs=False), CPU, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(states(chosen), states(direct), strict=True))


def test_a_held_out_loss_lowest_before_training_leaves_the_model_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripted = iter([0.1, 0.5, 0.2, 0.3, 0.2])
    monkeypatch.setattr(adapt_module, "held_out_loss", lambda *args: next(scripted))
    m = model()
    before = states(m)
    result = fine_tune(m, tiny_dataset(4), SELECT, CPU)
    assert result.chosen is not None and result.chosen.epochs == 0 and result.losses == ()
    assert all(torch.equal(a, b) for a, b in zip(before, states(m), strict=True))


def test_held_out_losses_are_measured_on_the_held_out_crops_and_choose_deterministically() -> None:
    support, config = tiny_dataset(8), replace(SELECT, epochs=2)
    first = choose_epochs(model(), support, config, CPU, seed=1)
    assert len(first.held_out_losses) == config.epochs + 1
    assert first.epochs == int(np.argmin(first.held_out_losses))
    held = split_support(support, seed=1).held_out
    assert first.held_out_image_ids == tuple(sorted(support.instances[i].image_id for i in held))
    assert first == choose_epochs(model(), support, config, CPU, seed=1)
    # the starting model's loss on the plain held-out crops, in eval mode
    crops = [tiny_dataset(8)[i] for i in held]
    m = model()
    assert first.held_out_losses[0] == pytest.approx(
        held_out_loss(m, [collate(crops)], CPU), rel=1e-6
    )


def test_held_out_loss_restores_every_module_mode() -> None:
    m = model()
    m.train()
    m.backbone.eval()
    modes = [x.training for x in m.modules()]
    held_out_loss(m, [collate([tiny_dataset(2)[0]])], CPU)
    assert modes == [x.training for x in m.modules()]


def test_fewer_epochs_are_the_first_epochs_of_a_longer_fine_tune() -> None:
    # benchmarks/recipes.py scores several epoch counts from snapshots of one longer run
    support = tiny_dataset(4)
    short = model()
    fine_tune(short, support, QUICK, CPU, seed=2)
    long, snapshot = model(), []
    steps = QUICK.epochs * EpochBatches(support, QUICK.batch_size).batches_per_epoch

    def keep(step: int, loss: float) -> None:
        if step + 1 == steps:
            snapshot.extend(t.detach().clone() for t in long.state_dict().values())

    fine_tune(long, support, replace(QUICK, epochs=2 * QUICK.epochs), CPU, seed=2, on_step=keep)
    assert all(torch.equal(a, b) for a, b in zip(states(short), snapshot, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(snapshot, states(long), strict=True))


def states(m: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in m.state_dict().values()]


def test_adapt_and_score_scores_before_and_after_and_leaves_torch_rng_alone(
    tiny_model: TopDownModel,
) -> None:
    """The few-shot job: K = 0 scores the model as it is; K > 0 fine-tunes on K drawn shots and
    scores the start and the result on the same test split, without drawing from torch's RNG."""
    from metapose.data.coco import load_coco
    from metapose.data.codec import HeatmapCodec
    from metapose.evaluation.evaluate import make_eval_set
    from metapose.evaluation.few_shot import UNADAPTED, adapt_and_score, image_ids_in
    from tests.conftest import COCO_TINY, require

    data = load_coco(require(COCO_TINY) / "annotations/person_keypoints_val2017.json")
    ids = sorted(i.id for i in data.images)
    half = len(ids) // 2
    pool = image_ids_in(data, (ids[0], ids[half - 1]))
    test = make_eval_set(
        data.subset(image_ids_in(data, (ids[half], ids[-1]))), HeatmapCodec.for_model(TINY_MODEL)
    )
    start = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    as_is = adapt_and_score(tiny_model, data, UNADAPTED, QUICK, CPU, test)
    assert as_is.adapt is None and as_is.shot_image_ids == () and as_is.after is not None
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in start.items())
    untested = copy.deepcopy(tiny_model)
    job = adapt_and_score(
        tiny_model, data, 2, QUICK, CPU, test, seed=1, pool=pool, score_before=True
    )
    alone = adapt_and_score(untested, data, 2, QUICK, CPU, seed=1, pool=pool)
    assert alone.after is None and alone.shot_image_ids == job.shot_image_ids
    # Scoring (before and after) changes nothing of the fine-tune: the same weights.
    assert all(torch.equal(v, untested.state_dict()[k]) for k, v in tiny_model.state_dict().items())
    assert len(job.shot_image_ids) == 2 and set(job.shot_image_ids) <= set(pool)
    assert job.adapt is not None and len(job.epoch_losses) == QUICK.epochs
    assert job.before is not None and job.after is not None
    assert job.before.as_dict() == as_is.after.as_dict()
    assert not all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in start.items())


def test_the_fine_tune_progress_stage_counts_the_steps_select_epochs_takes(
    tiny_model: TopDownModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``select_epochs`` fewer epochs than ``config.epochs`` may run: the stage's total is
    the steps actually taken, so a progress bar ends full."""
    from metapose.data.coco import load_coco
    from metapose.training.adapt import EpochChoice
    from metapose.training.few_shot import fine_tune_on_shots
    from tests.conftest import COCO_TINY, require
    from tests.helpers import RecordingProgress

    data = load_coco(require(COCO_TINY) / "annotations/person_keypoints_val2017.json")
    monkeypatch.setattr(
        adapt_module, "choose_epochs", lambda *a, **k: EpochChoice(1, (1.0, 0.5), (1,))
    )
    progress = RecordingProgress()
    config = replace(QUICK, epochs=3, select_epochs=True)
    tuned = fine_tune_on_shots(tiny_model, data, 2, config, CPU, progress=progress)
    stages = dict(progress.finished())  # every stage reached its total
    assert stages["adapt on 2 images"] == len(tuned.adapt.losses) == tuned.adapt.steps_per_epoch


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_follows_the_schedule_in_every_group(
    schedule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[tuple[float, ...]] = []
    real = adapt_module.step_on_batch

    def spy(model: nn.Module, opt: torch.optim.Optimizer, *args: object, **kw: object) -> float:
        taken.append(tuple(g["lr"] for g in opt.param_groups))
        return real(model, opt, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(adapt_module, "step_on_batch", spy)
    cfg = replace(QUICK, epochs=3, backbone_lr_scale=0.5, lr_schedule=schedule)  # type: ignore[arg-type]
    fine_tune(model(), tiny_dataset(8), cfg, CPU)
    steps = 3 * 2  # 8 crops in batches of 4
    factors = [
        0.5 * (1 + np.cos(np.pi * s / steps)) if schedule == "cosine" else 1.0 for s in range(steps)
    ]
    expected = [(1e-2 * 0.5 * f, 1e-2 * f) for f in factors]
    assert np.allclose(taken, expected)
    if schedule == "cosine":
        assert taken[0] == (5e-3, 1e-2) and taken[-1][1] < 1e-3


def test_an_unknown_schedule_is_refused_and_epochs_are_chosen_only_at_a_constant_rate() -> None:
    opt = torch.optim.SGD(model().parameters(), lr=1.0)
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        adapt_module.lr_scheduler(opt, "linear", 4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="select_epochs needs lr_schedule: constant"):
        replace(SELECT, lr_schedule="cosine")
