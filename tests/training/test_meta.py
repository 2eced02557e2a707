import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from metapose.config.training import OptimizerConfig, ReptileConfig
from metapose.data.batches import IndexedBatches, collate
from metapose.data.dataset import Sample
from metapose.device import DeviceOptions
from metapose.models import TopDownModel
from metapose.training.adapt import adapt
from metapose.training.meta import clone_state, interpolate_states, meta_train, reptile_step
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = DeviceOptions(torch.device("cpu"))
CFG = ReptileConfig(inner_steps=2, inner=OptimizerConfig(name="sgd", lr=0.05), batch_size=4)


def task(seed: int) -> Sample:
    ds = tiny_dataset(4, seed=seed)
    return collate([ds[i] for i in range(4)])


def model_with_stats() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_meta_step_zero_changes_nothing() -> None:
    model = model_with_stats()
    before = clone_state(model)
    reptile_step(model, [task(0), task(1)], replace(CFG, meta_step=0.0), CPU)
    after = model.state_dict()
    for k, v in before.items():
        if v.is_floating_point():
            assert torch.equal(v, after[k]), k


def test_meta_step_one_with_one_task_equals_the_adapted_model() -> None:
    t = task(0)
    reference = model_with_stats()
    adapt(reference, itertools.repeat(t), CFG.inner_steps, CFG.inner, CPU)
    model = model_with_stats()
    reptile_step(model, [t], replace(CFG, meta_step=1.0), CPU)
    assert_states_equal(reference.state_dict(), model.state_dict())  # BN statistics included


def test_batchnorm_running_statistics_are_interpolated_too() -> None:
    model = model_with_stats()
    before = clone_state(model)
    reptile_step(model, [task(0)], replace(CFG, meta_step=0.5), CPU)
    key = "backbone.bn1.running_mean"
    adapted = model_with_stats()
    adapt(adapted, itertools.repeat(task(0)), CFG.inner_steps, CFG.inner, CPU)
    expected = before[key] + 0.5 * (adapted.state_dict()[key] - before[key])
    assert torch.allclose(model.state_dict()[key], expected)
    assert (
        model.state_dict()["backbone.bn1.num_batches_tracked"]
        == adapted.state_dict()["backbone.bn1.num_batches_tracked"]
    )


class TwoParameters(nn.Module):
    """'Heatmaps' that are just two learnable numbers: JointsMSE becomes a quadratic."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([a, b]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.theta.view(1, 1, 1, 2).expand(images.shape[0], 1, 1, 2)


def two_param_task(t1: float, t2: float) -> Sample:
    return Sample(
        image=torch.zeros(1, 3, 1, 1),
        heatmaps=torch.tensor([[[[t1, t2]]]]),
        target_weight=torch.ones(1, 1),
        keypoints=torch.zeros(1, 1, 3),
        center=torch.zeros(1, 2),
        scale=torch.ones(1, 2),
        rotation=torch.zeros(1),
        flip=torch.zeros(1, dtype=torch.bool),
        image_id=torch.zeros(1),
        annotation_id=torch.zeros(1),
        area=torch.zeros(1),
        box_score=torch.ones(1),
    )  # type: ignore[arg-type]


def test_two_parameter_example_matches_a_hand_computation() -> None:
    # L = 0.5 * mean((theta - t)^2) over 2 entries  =>  dL/dtheta = (theta - t) / 2.
    # Inner SGD (lr a) for two steps: theta' = t + (theta - t) * (1 - a/2)^2.
    # Two tasks, beta: theta_new = theta + beta * mean_i(theta'_i - theta).
    a, beta = 0.4, 0.3
    theta = torch.tensor([1.0, -2.0])
    targets = [torch.tensor([3.0, 0.0]), torch.tensor([-1.0, 4.0])]
    adapted = [t + (theta - t) * (1 - a / 2) ** 2 for t in targets]
    expected = theta + beta * torch.stack([x - theta for x in adapted]).mean(0)

    model = TwoParameters(1.0, -2.0)
    cfg = ReptileConfig(
        inner_steps=2, inner=OptimizerConfig(name="sgd", lr=a), meta_step=beta, batch_size=1
    )
    reptile_step(model, [two_param_task(3.0, 0.0), two_param_task(-1.0, 4.0)], cfg, CPU)
    assert torch.allclose(model.theta.detach(), expected, atol=1e-6)


def test_interpolation_copies_integer_buffers() -> None:
    old = {"w": torch.zeros(2), "n": torch.tensor(3)}
    new = interpolate_states(old, [{"w": torch.ones(2), "n": torch.tensor(7)}], 0.25)
    assert torch.equal(new["w"], torch.full((2,), 0.25)) and int(new["n"]) == 7


def test_meta_step_annealing_is_linear() -> None:
    cfg = ReptileConfig(meta_steps=11, meta_step=0.1, meta_step_final=0.0)
    assert (
        cfg.beta(0) == pytest.approx(0.1)
        and cfg.beta(5) == pytest.approx(0.05)
        and cfg.beta(10) == 0.0
    )


def test_meta_training_resumes_exactly_and_counts_images(tmp_path: Path) -> None:
    stream = IndexedBatches(lambda b: task(b))
    cfg = replace(CFG, meta_steps=4, checkpoint_every=2, tasks_per_step=2)
    straight = model_with_stats()
    hist = meta_train(straight, stream, cfg, torch.device("cpu"))
    assert hist.images_seen == 4 * cfg.images_per_meta_step == 4 * 2 * 2 * 4

    def crash(entry: object) -> None:
        if getattr(entry, "step", 0) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        meta_train(
            model_with_stats(), stream, cfg, torch.device("cpu"), out_dir=tmp_path, on_step=crash
        )
    resumed = model_with_stats()
    meta_train(resumed, stream, cfg, torch.device("cpu"), out_dir=tmp_path)
    assert_states_equal(straight.state_dict(), resumed.state_dict())


def test_frozen_batchnorm_inner_loop_keeps_the_statistics() -> None:
    from metapose.config import ReptileConfig, replace
    from metapose.data.batches import EpochBatches
    from metapose.device import DeviceOptions
    from metapose.models import TopDownModel
    from metapose.training.meta import reptile_step
    from tests.conftest import TINY_MODEL
    from tests.helpers import tiny_dataset

    torch.manual_seed(0)
    model = TopDownModel(TINY_MODEL)
    task = next(EpochBatches(tiny_dataset(4), 4, seed=0).batches())
    options = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    cfg = ReptileConfig(meta_steps=1, inner_steps=2, batch_size=4, meta_step=1.0)
    reptile_step(model, [task], replace(cfg, batchnorm="frozen"), options)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    reptile_step(model, [task], cfg, options)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
