"""Two CPU processes with the Gloo backend stand in for ``torchrun`` on two GPUs."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metapose.config import ReptileConfig, TrainConfig
from metapose.config.training import OptimizerConfig
from metapose.data.batches import EpochBatches
from metapose.device import DeviceOptions
from metapose.models import TopDownModel
from metapose.training.meta import reptile_step
from metapose.training.run_folder import FINAL_FILE
from metapose.training.train import train
from tests.conftest import TINY_MODEL
from tests.training.test_meta import task

# float32: the comparison across processes (1 thread each vs the test's threads) must be exact
# to rounding, which bfloat16 autocast is not.
FP32 = DeviceOptions(torch.device("cpu"), amp=False)
CFG = ReptileConfig(
    inner_steps=2, inner=OptimizerConfig(name="sgd", lr=0.05), batch_size=4, meta_step=0.5
)


def fresh() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def _reptile_rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = fresh()
    reptile_step(model, [task(rank)], CFG, FP32)
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # about 10 s: two processes
def test_two_ranks_of_reptile_equal_one_process_with_both_tasks(tmp_path: Path) -> None:
    mp.spawn(_reptile_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    single = fresh()
    reptile_step(single, [task(0), task(1)], CFG, FP32)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in single.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(ranks[0][key], value, atol=1e-6), key
            assert torch.equal(ranks[0][key], ranks[1][key]), key


def _train_rank(rank: int, store: str, out: str) -> None:
    from tests.helpers import tiny_dataset

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = fresh()
    cfg = TrainConfig(steps=3, batch_size=2, lr_milestones=(0.5,))
    history = train(
        model, EpochBatches(tiny_dataset(8), 2, seed=1), cfg, torch.device("cpu"), out_dir=out
    )
    torch.save({"state": model.state_dict(), "images": history.images_seen}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # about 10 s: two processes
def test_data_parallel_training_keeps_ranks_in_step_and_writes_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_train_rank, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert a["images"] == 3 * 2 * 2  # steps x batch x ranks
    assert (out / FINAL_FILE).exists()
    assert not torch.equal(
        a["state"]["final_layer.weight"], fresh().state_dict()["final_layer.weight"]
    )


def test_sharded_epochs_are_disjoint_and_cover_the_epoch() -> None:
    from tests.helpers import tiny_dataset

    stream = EpochBatches(tiny_dataset(8), 2, seed=3)
    shards = [replace(stream, rank=r, world_size=2).epoch_order(0) for r in range(2)]
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert seen == list(range(8)) and len(shards[0]) == len(shards[1]) == 2
