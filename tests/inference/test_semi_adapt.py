"""The one dispatcher of the semi-supervised methods: each method as its own function runs it,
the distillation teacher loaded afresh from its file on every call, the stages reported."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from metapose.config import AdaptConfig, ModelConfig, OptimizerConfig
from metapose.config.training import SemiConfig
from metapose.data.codec import HeatmapCodec
from metapose.device import DeviceOptions
from metapose.inference.distill import distill_from_teacher
from metapose.inference.semi_adapt import adapt_with_unlabelled
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint, save_checkpoint
from metapose.training.semi import fine_tune_with_unlabelled
from tests.conftest import TINY_MODEL
from tests.helpers import RecordingProgress, state_copy, tiny_dataset, unlabelled_people

CPU = DeviceOptions(torch.device("cpu"), amp=False, channels_last=False)
QUICK = AdaptConfig(optimizer=OptimizerConfig(lr=1e-2), epochs=1, batch_size=4)
BIG: ModelConfig = replace(TINY_MODEL, input_size=(64, 128))


def seeded(config: ModelConfig, seed: int = 0) -> TopDownModel:
    torch.manual_seed(seed)
    return TopDownModel(config)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize(("method", "steps"), [("adabn", 0), ("mean_teacher", 2)])
def test_adabn_and_mean_teacher_are_fine_tune_with_unlabelled(method: str, steps: int) -> None:
    config = SemiConfig(method=method, steps=2, unlabelled_batch=2, threshold=0.0)  # type: ignore[arg-type]
    people = unlabelled_people(4)
    start = seeded(TINY_MODEL)
    before = state_copy(start)
    mine, direct = copy.deepcopy(start), copy.deepcopy(start)
    progress = RecordingProgress()
    result = adapt_with_unlabelled(
        mine, tiny_dataset(4), people, QUICK, config, CPU, seed=3, progress=progress
    )
    fine_tune_with_unlabelled(
        direct,
        tiny_dataset(4),
        people,
        QUICK,
        config,
        CPU,
        codec=HeatmapCodec.for_model(TINY_MODEL),
        seed=3,
        flip=TINY_MODEL.codec.flip_test,
    )
    assert result.method == method and result.shots is not None
    assert same_weights(mine, direct)
    assert any(not torch.equal(before[k], v) for k, v in mine.state_dict().items())
    assert progress.finished() == [(f"{method} on 4 unlabelled people", steps)]


def test_distill_loads_its_teacher_from_the_file_on_every_call(tmp_path) -> None:  # noqa: ANN001
    """The teacher is fine-tuned on the shots in place: a second job must not see the first's."""
    path = save_checkpoint(tmp_path / "teacher.safetensors", seeded(BIG, 1))
    config = SemiConfig(
        method="distill",
        steps=2,
        unlabelled_batch=2,
        labelled_batch=2,
        threshold=0.0,
        min_joints=0,
        teacher=str(path),
    )
    people = unlabelled_people(4)
    start = seeded(TINY_MODEL)
    first, second, direct = (copy.deepcopy(start) for _ in range(3))
    progress = RecordingProgress()
    for model in (first, second):
        result = adapt_with_unlabelled(
            model, tiny_dataset(4), people, QUICK, config, CPU, seed=0, progress=progress
        )
        assert result.method == "distill" and len(result.losses) == 2
    teacher = load_checkpoint(path).model
    distill_from_teacher(
        direct,
        teacher,
        tiny_dataset(4),
        people,
        QUICK,
        config,
        CPU,
        seed=0,
        flip=BIG.codec.flip_test,
    )
    assert same_weights(first, second) and same_weights(first, direct)
    assert same_weights(load_checkpoint(path).model, seeded(BIG, 1))  # the file is not changed
    names = [name for name, _ in progress.finished()]
    assert names[:3] == ["teacher: adapt on 4 shots", "teacher: label 4 people", names[2]]
    assert names[2].startswith("distil into the model")
