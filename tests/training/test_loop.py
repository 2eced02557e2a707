"""The one training loop (``training/loop``) with step functions that record what they are given."""

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from metapose.data.batches import IndexedBatches, collate
from metapose.data.dataset import Sample
from metapose.models import TopDownModel
from metapose.models.checkpoint import read_metadata
from metapose.training.loop import Loop, StepResult, run_loop
from metapose.training.run_folder import FINAL_FILE, StepLog
from metapose.training.step import train_mode
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = torch.device("cpu")
BATCH = collate([tiny_dataset(2)[i] for i in range(2)])
# Batch b of the stream carries b as its image ids.
STREAM = IndexedBatches(lambda b: BATCH._replace(image_id=torch.full((2,), b)))


def fresh_model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def test_a_resumed_loop_reads_the_batches_it_would_have_read(tmp_path: Path) -> None:
    seen: list[list[int]] = []

    def step(index: int, batches: Sequence[Sample]) -> StepResult:
        seen.append([int(b.image_id[0]) for b in batches])
        return StepResult(loss=float(index), images=2 * len(batches), lr=0.5)

    loop = Loop(
        "toy", 4, step, batches_per_step=2, checkpoint_every=1, log_every=1, count_key="rounds"
    )

    def stop_at_3(entry: StepLog) -> None:
        if entry.step == 3:  # after step 3, before its checkpoint: resumes at step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_loop(fresh_model(), STREAM, loop, CPU, out_dir=tmp_path, on_step=stop_at_3)
    assert seen == [[0, 1], [2, 3], [4, 5]]
    seen.clear()
    history = run_loop(fresh_model(), STREAM, loop, CPU, out_dir=tmp_path)
    assert seen == [[4, 5], [6, 7]]
    assert [(s.step, s.images, s.loss, s.lr) for s in history.steps] == [
        (n + 1, 4 * (n + 1), float(n), 0.5) for n in range(4)
    ]
    metadata = read_metadata(tmp_path / FINAL_FILE)
    assert metadata["rounds"] == 4 and metadata["images_seen"] == 16
    rows = (tmp_path / "toy.csv").read_text().split()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3", "4"]


def test_validation_is_logged_and_leaves_every_module_in_its_mode(tmp_path: Path) -> None:
    model = fresh_model()
    train_mode(model, frozen_batchnorm=True)
    modes = [m.training for m in model.modules()]
    modes_at_steps: list[list[bool]] = []

    def step(index: int, batches: Sequence[Sample]) -> StepResult:
        modes_at_steps.append([m.training for m in model.modules()])
        return StepResult(loss=1.0, images=2, lr=0.1)

    def validate(m: TopDownModel) -> dict[str, float]:
        m.eval()
        return {"ap": 0.25}

    history = run_loop(
        model,
        STREAM,
        Loop("toy", 5, step),
        CPU,
        out_dir=tmp_path,
        validate=validate,
        validate_every=2,
    )
    assert False in modes and True in modes  # BatchNorm in eval, the rest in train
    assert modes_at_steps == [modes] * 5
    assert history.evals == [{"step": 2, "ap": 0.25}, {"step": 4, "ap": 0.25}]
    rows = (tmp_path / "val.csv").read_text().split()[1:]
    assert [row.split(",")[0] for row in rows] == ["2", "4"]


def test_without_a_folder_nothing_is_written_and_the_history_is_returned(tmp_path: Path) -> None:
    def step(index: int, batches: Sequence[Sample]) -> StepResult:
        return StepResult(loss=2.0, images=2, lr=0.1)

    history = run_loop(fresh_model(), STREAM, Loop("toy", 3, step, checkpoint_every=1), CPU)
    assert history.losses() == [2.0] * 3 and history.images_seen == 6
