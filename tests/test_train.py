from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.adapt import AdaptConfig, choose_shots, fine_tune
from metapose.config import TopDownAugmentConfig
from metapose.data.batches import EpochBatches, IndexedBatches, collate
from metapose.models import TopDownModel
from metapose.optim import DeviceOptions, OptimizerConfig
from metapose.run_folder import FINAL_FILE, STATE_FILE
from metapose.train import StepLog, TrainConfig, train
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = torch.device("cpu")


def fresh_model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def test_interrupted_training_resumes_to_identical_weights(tmp_path: Path) -> None:
    data = tiny_dataset(12, augment=TopDownAugmentConfig())
    cfg = TrainConfig(steps=6, batch_size=4, checkpoint_every=3, lr_milestones=(0.5,))
    straight = fresh_model()
    train(straight, EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path / "a")

    # Crash during step 5 (after the checkpoint of step 3), then start again in the same folder.
    def crash(entry: StepLog) -> None:
        if entry.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            fresh_model(),
            EpochBatches(data, 4, seed=1),
            cfg,
            CPU,
            out_dir=tmp_path / "b",
            on_step=crash,
        )
    assert (tmp_path / "b" / STATE_FILE).exists()
    resumed = fresh_model()
    history = train(resumed, EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path / "b")
    assert [s.step for s in history.steps] == [1, 2, 3, 4, 5, 6]
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert (tmp_path / "b" / FINAL_FILE).exists() and (tmp_path / "b" / "train.csv").exists()


def test_training_reduces_the_loss_on_a_fixed_batch() -> None:
    model = fresh_model()
    batch = collate([tiny_dataset(4)[i] for i in range(4)])
    stream = IndexedBatches(lambda b: batch)
    cfg = TrainConfig(
        steps=40, batch_size=4, optimizer=OptimizerConfig(lr=3e-3), lr_milestones=(0.9,)
    )
    history = train(model, stream, cfg, CPU)
    losses = history.losses()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert history.images_seen == 160


def test_head_only_fine_tune_leaves_the_backbone_untouched() -> None:
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = AdaptConfig(epochs=2, batch_size=4, head_only=True)
    result = fine_tune(model, tiny_dataset(8), cfg, DeviceOptions(CPU))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["final_layer.weight"], after["final_layer.weight"])
    assert len(result.losses) == 4 and len(result.epoch_losses) == 2 and result.images == 16
    assert all(p.requires_grad for p in model.parameters())


def test_few_shot_with_fewer_images_than_a_batch_takes_one_step_per_epoch() -> None:
    model = fresh_model()
    result = fine_tune(
        model, tiny_dataset(3), AdaptConfig(epochs=5, batch_size=32), DeviceOptions(CPU)
    )
    assert len(result.losses) == 5 and result.images == 15


def test_indexed_batches_do_not_depend_on_worker_count() -> None:
    def make(b: int) -> object:
        return collate([tiny_dataset(2, seed=b)[0]] * 2)

    serial = [b.image for _, b in zip(range(5), IndexedBatches(make).batches(3), strict=False)]
    parallel = [
        b.image
        for _, b in zip(range(5), IndexedBatches(make, num_workers=2).batches(3), strict=False)
    ]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    assert not torch.equal(serial[0], serial[1])


def test_choose_shots_is_seeded_and_respects_the_pool() -> None:
    from metapose.data.coco import load_coco
    from tests.conftest import COCO_MINI, require

    ds = load_coco(require(COCO_MINI) / "annotations/person_keypoints_val2017.json")
    pool = sorted({a.image_id for a in ds.trainable()})[:20]
    a = choose_shots(ds, 8, seed=3, pool=pool)
    assert a == choose_shots(ds, 8, seed=3, pool=pool) and set(a) <= set(pool) and len(set(a)) == 8
    assert a != choose_shots(ds, 8, seed=4, pool=pool)
    with pytest.raises(ValueError, match="only 20"):
        choose_shots(ds, 21, seed=0, pool=pool)
